"""What a run's configuration may be: the checks made before any work, and what may change when a
run resumes.

`check_config(config)` fails fast, with the field and its allowed values, on anything that would
only break (or silently mislead) later. `check_resumable(saved, config, workdir)` refuses to resume
a workdir with a configuration that changes the result: every field except `RESUMABLE` must be the
one the run was started with. `RESUMABLE` may change on resume:
  num_epochs            extends (or shortens) a run; not with lr_schedule='cosine', whose decay
                        is laid out over num_epochs
  progress_bar, num_examples_to_show, log_every_steps, data.mirror, data.token_cache,
  distill.cache_dir     change nothing the run computes
Fields missing from an older run's saved config are not compared.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from genre_jax import calibration
from genre_jax import models
from genre_jax import optim
from genre_jax.errors import GenreJaxError

RESUMABLE = ('num_epochs', 'progress_bar', 'num_examples_to_show', 'log_every_steps',
             'data.mirror', 'data.token_cache', 'distill.cache_dir')
EARLY_STOPPING_METRICS = ('loss', 'micro_f1', 'macro_f1', 'samples_f1', 'map')
_AT_LEAST_ONE = ('num_epochs', 'batch_size', 'eval_batch_size', 'data.max_length',
                 'data.num_buckets', 'data.min_count', 'model.embed_dim', 'model.conv_filters',
                 'model.lstm_hidden', 'model.lstm_layers')
_AT_LEAST_ZERO = ('warmup_epochs', 'grad_clip_norm', 'weight_decay', 'model.dense_size',
                  'model.conv_pool_size', 'train_eval_examples', 'num_examples_to_show',
                  'log_every_steps')
_RATES = ('model.dropout', 'model.embed_dropout', 'model.word_dropout', 'ema_decay',
          'distill.word_dropout', 'distill.window_prob', 'distill.swap_rate', 'distill.mask_rate')


def flatten(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """{'data.max_length': 128, ...}: every leaf under its dotted name; tuples as lists."""
  d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update({f'{key}.{k}': v for k, v in flatten(value).items()})
    else:
      out[key] = list(value) if isinstance(value, tuple) else value
  return out


def _choices(flat: dict[str, Any]) -> dict[str, tuple[Any, list[Any]]]:
  return {
      'model.name': (flat['model.name'], models.known_models()),
      'optimizer': (flat['optimizer'], sorted(optim.OPTIMIZERS)),
      'lr_schedule': (flat['lr_schedule'], list(optim.LR_SCHEDULES)),
      'pos_weight': (flat['pos_weight'], ['none', 'balanced', 'sqrt']),
      'early_stopping_metric': (flat['early_stopping_metric'], list(EARLY_STOPPING_METRICS)),
      'calibration.method': (flat['calibration.method'], list(calibration.METHODS)),
      'data.tokenizer': (flat.get('data.tokenizer', 'word'), ['word', 'wordpiece']),
      'model.embed_init': (flat.get('model.embed_init', 'random'), ['random', 'pretrained']),
  }


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any data is read or anything is written, on values that would only break
  or mislead later; the message names the field (`--config.FIELD`) and what it accepts."""
  flat = flatten(config)
  for field, (value, allowed) in _choices(flat).items():
    if value not in allowed:
      raise GenreJaxError(f'config.{field}={value!r} is not one of {allowed}.')
  for field in _AT_LEAST_ONE:
    if field in flat and flat[field] < 1:
      raise GenreJaxError(f'config.{field} must be at least 1, got {flat[field]}.')
  for field in _AT_LEAST_ZERO:
    if field in flat and flat[field] < 0:
      raise GenreJaxError(f'config.{field} must not be negative, got {flat[field]}.')
  for field in _RATES:
    if field in flat and not 0.0 <= flat[field] < 1.0:
      raise GenreJaxError(f'config.{field} must be in [0, 1), got {flat[field]}.')
  if any(k < 1 for k in flat['model.conv_kernel_sizes']) or not flat['model.conv_kernel_sizes']:
    raise GenreJaxError('config.model.conv_kernel_sizes must be one or more widths of at least 1, '
                        f'got {flat["model.conv_kernel_sizes"]}.')
  if not flat['learning_rate'] > 0:
    raise GenreJaxError(f'config.learning_rate must be positive, got {flat["learning_rate"]}.')
  if not 0.0 < flat.get('layer_decay', 1.0) <= 1.0:
    raise GenreJaxError(f'config.layer_decay must be in (0, 1] (1 = off), got '
                        f'{flat["layer_decay"]}.')
  if flat['data.vocab_size'] < 2:
    raise GenreJaxError(f'config.data.vocab_size must be at least 2 (padding and unknown words), '
                        f'got {flat["data.vocab_size"]}.')
  _check_distill(flat)
  sizes = tuple(flat['data.split_sizes'])
  if len(sizes) != 3 or min(sizes) <= 0 or abs(sum(sizes) - 1) > 1e-6:
    raise GenreJaxError(f'config.data.split_sizes must be three positive fractions summing to 1 '
                        f'(train, validation, test), got {sizes}.')


def _check_distill(flat: dict[str, Any]) -> None:
  """The distillation and sub-word input fields (absent from older configs: not checked)."""
  if flat.get('model.embed_init') == 'pretrained' and flat.get('data.tokenizer') != 'wordpiece':
    raise GenreJaxError("config.model.embed_init='pretrained' needs config.data.tokenizer="
                        "'wordpiece' (the encoder's embeddings are indexed by its WordPiece ids).")
  if 'distill.alpha' not in flat:
    return
  if not 0.0 <= flat['distill.alpha'] <= 1.0:
    raise GenreJaxError(f'config.distill.alpha must be in [0, 1], got {flat["distill.alpha"]}.')
  if not flat['distill.temperature'] > 0:
    raise GenreJaxError(f'config.distill.temperature must be positive, got '
                        f'{flat["distill.temperature"]}.')
  if flat['distill.augment_copies'] < 0:
    raise GenreJaxError(f'config.distill.augment_copies must not be negative, got '
                        f'{flat["distill.augment_copies"]}.')
  if not 0.0 < flat['distill.window_min'] <= 1.0:
    raise GenreJaxError(f'config.distill.window_min must be in (0, 1], got '
                        f'{flat["distill.window_min"]}.')
  if flat['distill.augment_copies'] and not flat['distill.teacher']:
    raise GenreJaxError('config.distill.augment_copies needs a teacher to label the copies: set '
                        'config.distill.teacher=WORKDIR.')


def check_resumable(saved: dict[str, Any], config: ml_collections.ConfigDict, workdir) -> None:
  """Refuses to resume the run of `saved` (its config as a dict) with a `config` that would
  change the result; the message lists each differing field with both values."""
  old, new = flatten(saved), flatten(config)
  allowed = set(RESUMABLE)
  if new.get('lr_schedule') == 'cosine':
    allowed.discard('num_epochs')  # The cosine decay spans num_epochs.
  diff = sorted(k for k in old.keys() & new.keys() if k not in allowed and old[k] != new[k])
  if diff:
    listed = '; '.join(f'{k}: {old[k]!r} in the run, {new[k]!r} now' for k in diff)
    raise GenreJaxError(
        f'workdir {workdir} holds a run with another configuration ({listed}). Resume with the '
        f'same configuration (only {", ".join(sorted(allowed))} may change), or use a new '
        '--workdir.')
