"""Tuned CNN -> LSTM: unigram/bigram convolutions, average pooling of width 2, BiLSTM(64), max
pooling over time, with a skip connection around the LSTM, AdamW.

The settings come from `python -m experiments.search --arch cnn_lstm --confirm 3` (Optuna TPE and
hand-picked trials on VALIDATION micro-F1 with seed 0, the best three retrained with seeds 1 and
2; the winner has the best 3-seed mean; budget and every trial in experiments/RESULTS.md,
"Hyperparameter search"). The width-2 pooling halves the LSTM's sequential steps. The head reads
the max-pooled LSTM outputs and, through the skip connection (`conv_skip`), the max-pooled
convolution features. Word dropout (whole tokens, 30%) in place of element-wise embedding dropout,
over an 8-epoch cosine schedule; early stopping (patience 2). Validation, the best checkpoint and
the test split use a moving average of the parameters over about the last 1,000 steps (4 epochs;
search round 7: 3-seed mean validation 0.5873 against 0.5872 without it, a tie won by 0.0001).
Learning rate 3e-3 (round 8, trial 22: 3-seed mean validation 0.5934 against 0.5873 at 5e-3).

Run:
  python -m genre_jax.train --config configs/cnn_lstm.py --workdir runs/cnn_lstm
"""

import pathlib
import runpy

get_default_config = runpy.run_path(str(pathlib.Path(__file__).with_name('default.py')))['get_config']


def get_config():
  config = get_default_config()
  config.seed = 0
  config.data.name = 'tmdb_10k'
  config.data.max_examples = None
  config.data.vocab_size = 20_000
  config.data.min_count = 2
  config.data.max_length = 128
  config.data.bucket_by_length = True

  m = config.model
  m.name = 'cnn_lstm'
  m.embed_dim = 128
  m.embed_dropout = 0.0
  m.word_dropout = 0.3  # Whole tokens.
  m.conv_filters = 128
  m.conv_kernel_sizes = (1, 2)
  m.conv_activation = 'relu'
  m.conv_pool_size = 2  # Halves the LSTM's sequential steps.
  m.conv_skip = True  # The pooled conv features also reach the head.
  m.lstm_hidden = 64
  m.lstm_layers = 1
  m.bidirectional = True
  m.pooling = 'max'
  m.dense_size = 0
  m.dense_activation = 'relu'
  m.dropout = 0.5

  config.pos_weight = 'none'
  config.optimizer = 'adamw'
  config.learning_rate = 3e-3
  config.weight_decay = 1e-4
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 0.5
  config.grad_clip_norm = 1.0
  config.ema_decay = 0.999  # Moving average of the parameters (validated and kept).
  config.num_epochs = 8
  config.batch_size = 32
  config.early_stopping_patience = 2
  return config
