"""Distilled CNN -> LSTM: configs/cnn_lstm.py on WordPiece input, trained on a teacher's soft
targets and a transfer set.

As configs/distill_cnn.py: the fine-tuned MiniLM as teacher (trained on the same split), alpha
0.5 and temperature 1 on the training synopses and 4 teacher-labelled perturbed copies of each
(without hard labels), WordPiece input over the encoder's frozen input embeddings with a trained
projection to 128 features, word dropout 0.1; the tuned 8 epochs (each 5 times longer than
configs/cnn_lstm.py's). The settings come from `python -m experiments.search --arch
distill_cnn_lstm --teacher DIR` (VALIDATION micro-F1, seed 0; every trial in
experiments/RESULTS.md).

Run:
  python -m genre_jax.train --config configs/distill_cnn_lstm.py \
      --workdir runs/distill_cnn_lstm --config.distill.teacher=runs/minilm
"""

from configs import cnn_lstm
from configs import default


def get_config():
  return default.distilled(cnn_lstm.get_config())
