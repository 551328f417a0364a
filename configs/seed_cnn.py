"""The seed project's CNN, as written: Conv1D(tanh) -> average pooling -> Dense(41) -> Dropout(0.2).

Sigmoid outputs; RMSprop with learning rate 0.1 and momentum 0.2, 5 epochs, batches of 32, no
early stopping. Where the seed is silent, Keras-like defaults were chosen:
  embed_dim 100                 the usual Keras tutorial size;
  conv 128 filters, kernel 5    Keras' text-CNN examples (`Conv1D(128, 5)`);
  pooling 'average'             global average over time (`GlobalAveragePooling1D`), length-masked;
  dense_activation relu         the seed only gives the width 41;
  max_length 128, vocab 20000, length bucketing (see seed_lstm.py).

Run:
  python -m genre_jax.train --config configs/seed_cnn.py --workdir runs/seed_cnn
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
  m.name = 'cnn'
  m.embed_dim = 100
  m.embed_dropout = 0.0
  m.conv_filters = 128
  m.conv_kernel_sizes = (5,)
  m.conv_activation = 'tanh'
  m.pooling = 'average'
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
