"""A tiny configuration for tests: a few dozen examples, minute widths, one epoch.

Run:
  python -m genre_jax.train --config configs/tiny.py --workdir /tmp/genre_jax_tiny
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.update(max_examples=64, vocab_size=200, max_length=16, bucket_by_length=False)
  config.model.update(embed_dim=8, conv_filters=4, conv_kernel_sizes=(2, 3), conv_pool_size=2,
                      lstm_hidden=6, bidirectional=True, dense_size=5, dropout=0.1)
  config.update(learning_rate=1e-2, num_epochs=1, batch_size=4, eval_batch_size=8,
                early_stopping_patience=0, num_examples_to_show=2, progress_bar=False)
  return config
