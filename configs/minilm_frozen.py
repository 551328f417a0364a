"""all-MiniLM-L6-v2 as a frozen feature extractor: only the multi-label head is trained.

The encoder runs without dropout and outside the gradient, so its features are computed once per
split and the epochs train the head on them; the head (384 -> genres) wants a larger learning
rate and more epochs than fine-tuning (`configs/minilm.py`).

Run:
  python -m genre_jax.train --config configs/minilm_frozen.py --workdir runs/minilm_frozen
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.update(name='pretrained', freeze_encoder=True, dropout=0.1)
  config.update(learning_rate=3e-3, lr_schedule='cosine', num_epochs=8, eval_batch_size=128)
  return config
