"""A strong CNN baseline (Kim, 2014): kernel widths 2-5 x 128 filters, max pooling, AdamW.

Starting values; the final ones come from the hyperparameter search.

Run:
  python -m genre_jax.train --config configs/cnn.py --workdir runs/cnn
"""

import pathlib
import runpy

get_default_config = runpy.run_path(str(pathlib.Path(__file__).with_name('default.py')))['get_config']


def get_config():
  config = get_default_config()
  config.seed = 0
  config.data.name = 'tmdb_10k'
  config.data.max_examples = None
  config.data.max_length = 128
  config.data.bucket_by_length = True

  m = config.model
  m.name = 'cnn'
  m.embed_dim = 128
  m.embed_dropout = 0.2
  m.conv_filters = 128
  m.conv_kernel_sizes = (2, 3, 4, 5)
  m.conv_activation = 'relu'
  m.pooling = 'max'
  m.dense_size = 0  # Pooled features straight to the logits, as in Kim (2014).
  m.dropout = 0.5

  config.pos_weight = 'none'
  config.optimizer = 'adamw'
  config.learning_rate = 2e-3
  config.weight_decay = 1e-4
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 0.5
  config.grad_clip_norm = 1.0
  config.num_epochs = 20
  config.batch_size = 32
  config.early_stopping_patience = 4
  return config
