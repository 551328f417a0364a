"""A tiny configuration for tests: a few dozen examples, minute widths, one epoch.

Run:
  python -m genre_jax.train --config configs/tiny.py --workdir /tmp/genre_jax_tiny
"""

import pathlib
import runpy

get_default_config = runpy.run_path(str(pathlib.Path(__file__).with_name('default.py')))['get_config']


def get_config():
  config = get_default_config()
  config.seed = 0
  config.data.name = 'tmdb_10k'
  config.data.max_examples = 64
  config.data.vocab_size = 200
  config.data.max_length = 16
  config.data.bucket_by_length = False

  m = config.model
  m.name = 'cnn'
  m.embed_dim = 8
  m.conv_filters = 4
  m.conv_kernel_sizes = (2, 3)
  m.conv_pool_size = 2
  m.lstm_hidden = 6
  m.bidirectional = True
  m.pooling = 'max'
  m.dense_size = 5
  m.dropout = 0.1

  config.optimizer = 'adamw'
  config.learning_rate = 1e-2
  config.num_epochs = 1
  config.batch_size = 4
  config.eval_batch_size = 8
  config.early_stopping_patience = 0
  config.num_examples_to_show = 2
  config.progress_bar = False
  return config
