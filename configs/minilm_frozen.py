"""all-MiniLM-L6-v2 as a frozen feature extractor: only the multi-label head is trained.

The encoder runs without dropout and outside the gradient, so a step costs about one forward
pass; the head (384 -> genres) wants a larger learning rate and more epochs than fine-tuning.

Run:
  python -m genre_jax.train --config configs/minilm_frozen.py --workdir runs/minilm_frozen
"""

import pathlib
import runpy

get_minilm_config = runpy.run_path(str(pathlib.Path(__file__).with_name('minilm.py')))['get_config']


def get_config():
  config = get_minilm_config()
  config.model.freeze_encoder = True
  config.learning_rate = 3e-3
  config.weight_decay = 1e-4
  config.warmup_epochs = 0.0
  config.grad_clip_norm = 0.0
  config.num_epochs = 8
  config.early_stopping_patience = 3
  return config
