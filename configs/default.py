"""Defaults shared by every genre_jax configuration.

Every other config imports this file (`from configs import default`) and sets only the fields
that make it that variant. The `model` section holds the union of all architectures' fields, so
that `--config.model.name=lstm` works from any config file. Three training recipes shared by
several variants are functions here: `seed_report`, `searched` and `distilled`.

Run:
  python -m genre_jax.train --config configs/default.py --workdir runs/default
"""

import ml_collections
from ml_collections import config_dict


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0  # Parameter init, dropout and shuffling.

  # ---- Data -------------------------------------------------------------------------------
  config.data = data = ml_collections.ConfigDict()
  data.name = 'tmdb_10k'  # A registered data set; ignored when `path` is set.
  data.path = config_dict.placeholder(str)  # Or a user file ...
  data.format = config_dict.placeholder(str)  # ... in format tmdb_csv | allmovie_json | csv | jsonl.
  data.text_column = 'text'  # Generic csv / jsonl only.
  data.genre_column = 'genres'
  data.genre_separator = ','  # Genre strings such as 'Drama,Crime'.
  data.id_column = config_dict.placeholder(str)
  data.title_column = config_dict.placeholder(str)
  data.mirror = config_dict.placeholder(str)  # Overrides $GENRE_JAX_MIRROR.
  data.max_examples = config_dict.placeholder(int)  # Use only the first N records.
  data.split_seed = 0  # The split is fixed across training seeds.
  data.split_sizes = (0.8, 0.1, 0.1)  # Train / validation / test.
  data.vocab_size = 20_000  # Including the padding and out-of-vocabulary ids.
  data.min_count = 1  # Minimum training-split frequency of a kept token.
  data.max_length = 128  # Tokens per synopsis after truncation.
  data.bucket_by_length = True  # Batches of similar lengths, padded to a few fixed widths.
  data.num_buckets = 4
  data.token_cache = config_dict.placeholder(str)  # A directory: reuse tokenised splits (memmap).
  # word: a vocabulary of the training split's words; wordpiece: the pretrained encoder's
  # WordPiece tokenizer (model.pretrained_path). The `pretrained` model always uses its own.
  data.tokenizer = 'word'

  # ---- Model (union of all architectures' fields) ------------------------------------------
  config.model = model = ml_collections.ConfigDict()
  model.name = 'cnn'  # lstm | cnn | cnn_lstm | pretrained
  model.embed_dim = 128
  # random, or pretrained: the encoder's input word embeddings (needs data.tokenizer='wordpiece';
  # a learned projection to embed_dim when it differs from the encoder's width).
  model.embed_init = 'random'
  model.embed_trainable = True  # False: a pretrained table stays fixed (its projection trains).
  model.embed_dropout = 0.0
  model.word_dropout = 0.0  # Drops whole tokens (all embed_dim features at once).
  model.conv_filters = 128  # Per kernel width.
  model.conv_kernel_sizes = (3,)  # Several widths run in parallel and are concatenated.
  model.conv_activation = 'relu'
  model.pooling = 'max'  # max | average | last: pooling over time (cnn; lstm outputs).
  model.conv_pool_size = 0  # cnn_lstm: width of an optional average pooling before the LSTM.
  model.conv_skip = False  # cnn_lstm: also pool the conv features into the head (skip the LSTM).
  model.lstm_hidden = 128
  model.lstm_layers = 1
  model.bidirectional = False
  model.dense_size = 128  # Hidden dense layer before the logits; 0 = none.
  model.dense_activation = 'relu'
  model.dropout = 0.2
  model.pretrained_path = config_dict.placeholder(str)  # pretrained: HF checkpoint directory.
  model.freeze_encoder = False  # pretrained: train only the head.
  model.encoder_pooling = 'mean'  # pretrained: mean | cls.

  # ---- Loss ---------------------------------------------------------------------------------
  config.pos_weight = 'none'  # none | balanced (neg/pos per genre, clipped) | sqrt.
  config.pos_weight_max = 10.0

  # ---- Distillation (genre_jax/distill.py; off while teacher is None) -----------------------
  # loss = alpha * BCE(labels) + (1 - alpha) * BCE(sigmoid(teacher logits / temperature)).
  config.distill = distill = ml_collections.ConfigDict()
  distill.teacher = config_dict.placeholder(str)  # A trained run's or ensemble's workdir.
  distill.alpha = 0.5  # Weight of the hard labels.
  distill.temperature = 1.0
  distill.augment_copies = 0  # Teacher-labelled perturbed copies of each training synopsis.
  distill.copy_hard_labels = True  # Copies keep the original's labels (else alpha 0 for them).
  distill.word_dropout = 0.1  # Each word of a copy dropped with this probability.
  distill.window_prob = 0.25  # Probability that a copy is a random window of the words ...
  distill.window_min = 0.6  # ... of at least this fraction of them.
  distill.swap_rate = 0.1  # Swaps of two random words, per word.
  distill.mask_rate = 0.0  # Words replaced by the teacher's mask token, [MASK].
  distill.cache_dir = config_dict.placeholder(str)  # A directory: share teacher scores across runs.

  # ---- Optimisation -----------------------------------------------------------------------
  config.optimizer = 'adamw'  # adam | adamw | sgd | rmsprop
  config.learning_rate = 1e-3
  config.momentum = 0.9  # sgd and rmsprop.
  config.weight_decay = 1e-4  # adamw only.
  config.lr_schedule = 'constant'  # constant | cosine
  config.warmup_epochs = 0.0
  config.grad_clip_norm = 0.0  # 0 = no clipping.
  config.ema_decay = 0.0  # > 0: validate, keep and test a moving average of the parameters.
  config.layer_decay = 1.0  # < 1: layer-wise learning-rate decay (pretrained encoder only).
  config.num_epochs = 10
  config.batch_size = 32
  config.eval_batch_size = 256

  # ---- Model selection, thresholds, logging ----------------------------------------------
  config.early_stopping_metric = 'micro_f1'  # On the validation split, at the tuned threshold.
  config.early_stopping_patience = 3  # Epochs without improvement; 0 = never stop early.
  # A frozen pretrained encoder: its features are computed once per split, then the epochs train
  # the head on them (the same batches, dropout and updates as running the encoder every step).
  config.cache_frozen_features = True
  config.train_eval_examples = 1000  # Training examples re-scored each epoch (curves); 0 = none.
  config.threshold = threshold = ml_collections.ConfigDict()
  threshold.per_genre = False  # Also tune one threshold per genre (on validation).
  threshold.at_least_one = False  # Always predict the most probable genre.
  # Temperature scaling fitted on validation before the thresholds are tuned ('none': off).
  config.calibration = calibration = ml_collections.ConfigDict()
  calibration.method = 'temperature'
  calibration.per_genre = False  # One temperature per genre instead of one for the run.
  config.num_examples_to_show = 5
  config.progress_bar = True
  config.log_every_steps = 50  # Training loss to WORKDIR/tensorboard every N steps.
  return config


def seed_report(config):
  """The student report's training, as written: RMSprop (learning rate 0.1, momentum 0.2) for 5
  epochs without early stopping, a Dense(41) layer and dropout 0.2 before the sigmoid outputs; its
  embedding size is not given and is 100 here (the usual Keras tutorial size)."""
  config.model.update(embed_dim=100, dense_size=41, dropout=0.2)
  config.update(optimizer='rmsprop', learning_rate=0.1, momentum=0.2, num_epochs=5,
                early_stopping_patience=0)
  return config


def searched(config):
  """What the searched CNN, LSTM and CNN->LSTM share (`python -m experiments.search`, on the
  validation split): words seen twice, word dropout (whole tokens, 30%) in place of element-wise
  embedding dropout, dropout 0.5 straight into the logits, gradient clipping, and a short cosine
  schedule with half an epoch of warm-up; early stopping after 2 epochs without improvement."""
  config.data.min_count = 2
  config.model.update(word_dropout=0.3, dropout=0.5, dense_size=0)
  config.update(lr_schedule='cosine', warmup_epochs=0.5, grad_clip_norm=1.0,
                early_stopping_patience=2)
  return config


def distilled(config):
  """What the distilled CNN, LSTM and CNN->LSTM share (`python -m experiments.search --arch
  distill_*`, on the validation split): 4 teacher-labelled perturbed copies of each training
  synopsis without hard labels, the encoder's WordPiece ids embedded by its frozen input
  embeddings (projected to `embed_dim`), and word dropout 0.1 (the copies already drop words).
  The teacher comes from `--config.distill.teacher`."""
  config.distill.update(augment_copies=4, copy_hard_labels=False)
  config.data.tokenizer = 'wordpiece'
  config.model.update(embed_init='pretrained', embed_trainable=False, word_dropout=0.1)
  return config
