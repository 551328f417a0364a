"""Distilled CNN: a wider configs/cnn.py with max pooling, on WordPiece input, trained on a
teacher's soft targets and a transfer set.

The teacher is the fine-tuned MiniLM (configs/minilm.py, trained on the same split); the student
trains on alpha * BCE(labels) + (1 - alpha) * BCE(teacher's probabilities) with alpha 0.5 and
temperature 1 over the training synopses and 8 perturbed copies of each (the rates of
configs/default.py: word dropout 0.1, a window of 60-100% of the words a quarter of the time,
word swaps 0.1), the copies labelled by the teacher alone (`copy_hard_labels` off). Its input is
the encoder's WordPiece ids, embedded by the encoder's input embeddings, frozen, and a trained
projection to 128 features; word dropout in the model falls from 0.3 to 0.1 (the copies already
drop words); 256 filters of widths 1, 2 and 3 (128 of widths 1 and 2 in configs/cnn.py), max
pooling over time. The settings are distilled CNN trial 16 of
`python -m experiments.search --arch distill_cnn --teacher DIR` (VALIDATION micro-F1, seed 0;
every trial in experiments/RESULTS.md).

Run (the teacher's scores of the 9 x 7,973 synopses are computed once and cached in the workdir):
  python -m genre_jax.train --config configs/distill_cnn.py --workdir runs/distill_cnn \
      --config.distill.teacher=runs/minilm
"""

from configs import cnn
from configs import default


def get_config():
  config = default.distilled(cnn.get_config())
  config.distill.augment_copies = 8
  config.model.update(conv_filters=256, conv_kernel_sizes=(1, 2, 3), pooling='max')
  return config
