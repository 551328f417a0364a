"""Distilled LSTM: configs/lstm.py on WordPiece input, trained on a teacher's soft targets and a
transfer set.

As configs/distill_cnn.py: the fine-tuned MiniLM as teacher (trained on the same split), alpha
0.5 and temperature 1 on the training synopses and 4 teacher-labelled perturbed copies of each
(without hard labels), WordPiece input over the encoder's frozen input embeddings with a trained
projection to 128 features, word dropout 0.1; the tuned 5 epochs (each 5 times longer than
configs/lstm.py's). The settings come from `python -m experiments.search --arch distill_lstm
--teacher DIR` (VALIDATION micro-F1, seed 0; every trial in experiments/RESULTS.md).

Run:
  python -m genre_jax.train --config configs/distill_lstm.py --workdir runs/distill_lstm \
      --config.distill.teacher=runs/minilm
"""

from configs import default
from configs import lstm


def get_config():
  return default.distilled(lstm.get_config())
