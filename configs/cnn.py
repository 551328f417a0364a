"""Tuned CNN: a wide, shallow unigram/bigram CNN with average pooling (close to fastText), AdamW.

The settings come from `python -m experiments.search --arch cnn` (Optuna TPE on VALIDATION
micro-F1, seed 0; budget and every trial in experiments/RESULTS.md, "Hyperparameter search").
It fits fast and overfits fast: a short cosine schedule (4 epochs) lets the learning rate decay
before it overfits.

Run:
  python -m genre_jax.train --config configs/cnn.py --workdir runs/cnn
"""

from configs import default


def get_config():
  config = default.searched(default.get_config())
  config.model.conv_kernel_sizes = (1, 2)
  config.model.pooling = 'average'
  config.learning_rate = 5e-3
  config.num_epochs = 4
  return config
