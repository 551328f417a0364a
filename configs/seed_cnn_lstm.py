"""The seed project's CNN -> LSTM, as written: Conv1D(tanh) -> pooling -> LSTM(30) -> Dense(41).

Dropout 0.2, sigmoid outputs; RMSprop with learning rate 0.1 and momentum 0.2, 5 epochs, batches
of 32, no early stopping. Where the seed is silent, Keras-like defaults were chosen:
  embed_dim 100, conv 128 filters of width 5 (as seed_cnn.py);
  conv_pool_size 4     the pool size of Keras' `imdb_cnn_lstm` example, averaging like the seed CNN;
  LSTM summary         its final state (Keras' `LSTM(30)`);
  dense_activation relu, max_length 128, vocab 20000, length bucketing (see seed_lstm.py).

Run:
  python -m genre_jax.train --config configs/seed_cnn_lstm.py --workdir runs/seed_cnn_lstm
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
  config.data.bucket_by_length = True  # See seed_lstm.py.

  m = config.model
  m.name = 'cnn_lstm'
  m.embed_dim = 100
  m.embed_dropout = 0.0
  m.conv_filters = 128
  m.conv_kernel_sizes = (5,)
  m.conv_activation = 'tanh'
  m.conv_pool_size = 4
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
