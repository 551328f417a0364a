"""The seed project's CNN, as written: Conv1D(tanh) -> average pooling -> Dense(41) -> Dropout(0.2).

Sigmoid outputs; RMSprop with learning rate 0.1 and momentum 0.2, 5 epochs, batches of 32, no
early stopping (`default.seed_report`). Where the seed is silent, Keras-like choices:
  conv 128 filters, kernel 5    Keras' text-CNN examples (`Conv1D(128, 5)`);
  pooling 'average'             global average over time (`GlobalAveragePooling1D`), length-masked;
  dense_activation relu, max_length 128, vocab 20000, length bucketing (see seed_lstm.py).

Run:
  python -m genre_jax.train --config configs/seed_cnn.py --workdir runs/seed_cnn
"""

from configs import default


def get_config():
  config = default.seed_report(default.get_config())
  config.model.conv_kernel_sizes = (5,)
  config.model.conv_activation = 'tanh'
  config.model.pooling = 'average'
  return config
