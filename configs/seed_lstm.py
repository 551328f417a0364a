"""The seed project's LSTM, as written: LSTM(30) -> Dense(41) -> Dropout(0.2) -> sigmoid outputs.

RMSprop with learning rate 0.1 and momentum 0.2, 5 epochs, batches of 32, no early stopping.
Where the seed is silent, Keras-like defaults were chosen:
  embed_dim 100       the usual Keras tutorial size (GloVe-100 sized);
  dense_activation    relu (the seed only gives the width 41);
  max_length 128      covers ~99% of TMDB synopses (p95 = 92 words, p99 = 127);
  vocab_size 20000    the usual Keras `Tokenizer(num_words=20000)`;
  length bucketing    Keras padded every batch to max_length; every layer here is length-masked,
                      so padding only costs time. Batches of similar lengths cut it (what
                      changes is which examples share a batch, not what a model computes).
The summary is the LSTM's final state (Keras' `LSTM(30)` without `return_sequences`).

Run:
  python -m genre_jax.train --config configs/seed_lstm.py --workdir runs/seed_lstm
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
  config.data.max_length = 128
  config.data.bucket_by_length = True  # See above.

  m = config.model
  m.name = 'lstm'
  m.embed_dim = 100
  m.embed_dropout = 0.0
  m.lstm_hidden = 30
  m.lstm_layers = 1
  m.bidirectional = False
  m.pooling = 'last'  # Final LSTM state.
  m.dense_size = 41
  m.dense_activation = 'relu'
  m.dropout = 0.2

  config.pos_weight = 'none'
  config.optimizer = 'rmsprop'
  config.learning_rate = 0.1
  config.momentum = 0.2
  config.lr_schedule = 'constant'
  config.warmup_epochs = 0.0
  config.grad_clip_norm = 0.0
  config.num_epochs = 5
  config.batch_size = 32
  config.early_stopping_patience = 0  # Train all 5 epochs.
  return config
