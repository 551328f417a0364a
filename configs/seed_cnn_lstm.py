"""The seed project's CNN -> LSTM, as written: Conv1D(tanh) -> pooling -> LSTM(30) -> Dense(41).

Dropout 0.2, sigmoid outputs; RMSprop with learning rate 0.1 and momentum 0.2, 5 epochs, batches
of 32, no early stopping (`default.seed_report`). Where the seed is silent, Keras-like choices:
  conv 128 filters of width 5 (as seed_cnn.py);
  conv_pool_size 4     the pool size of Keras' `imdb_cnn_lstm` example, averaging like the seed CNN;
  LSTM summary         its final state (Keras' `LSTM(30)`);
  dense_activation relu, max_length 128, vocab 20000, length bucketing (see seed_lstm.py).

Run:
  python -m genre_jax.train --config configs/seed_cnn_lstm.py --workdir runs/seed_cnn_lstm
"""

from configs import default


def get_config():
  config = default.seed_report(default.get_config())
  config.model.update(name='cnn_lstm', conv_kernel_sizes=(5,), conv_activation='tanh',
                      conv_pool_size=4, lstm_hidden=30)
  config.model.pooling = 'last'  # Final LSTM state.
  return config
