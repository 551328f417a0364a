"""The optimizer factory: `config.optimizer`, its schedule, clipping and layer-wise decay."""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import optax

from genre_jax.errors import GenreJaxError

OPTIMIZERS = {
    'adam': lambda c, lr: optax.adam(lr),
    'adamw': lambda c, lr: optax.adamw(lr, weight_decay=c.weight_decay),
    'sgd': lambda c, lr: optax.sgd(lr, momentum=c.momentum or None),
    'rmsprop': lambda c, lr: optax.rmsprop(lr, momentum=c.momentum or None),
}
LR_SCHEDULES = ('constant', 'cosine')


def scale_by_path(multiplier: Callable[[tuple[str, ...]], float]) -> optax.GradientTransformation:
  """Multiplies each update by `multiplier(path)`, the path of its parameter as strings (e.g.
  `('encoder', 'layers', '3', 'output', 'kernel')`); stateless. After an optimizer that ends in
  `-lr * update` (adamw: its weight decay included), this scales that parameter's learning rate."""

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * multiplier(path_names(path)), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def path_names(path: jax.tree_util.KeyPath) -> tuple[str, ...]:
  """A pytree key path as strings: `('encoder', 'layers', '3', 'output', 'kernel', ...)`."""
  return tuple(jax.tree_util.keystr(path, simple=True, separator='/').split('/'))


def _learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int):
  total = max(1, config.num_epochs * steps_per_epoch)
  warmup = int(config.warmup_epochs * steps_per_epoch)
  if config.lr_schedule == 'constant':  # A linear schedule holds its end value after warm-up.
    return (optax.linear_schedule(0.0, config.learning_rate, warmup) if warmup
            else config.learning_rate)
  if config.lr_schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, total)
  raise GenreJaxError(f'unknown lr_schedule {config.lr_schedule!r}; use constant or cosine.')


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                   layer_depth: Callable[[tuple[str, ...]], tuple[int, int]] | None = None
                   ) -> optax.GradientTransformation:
  """The optax optimizer named by `config.optimizer`, with schedule and optional clipping.

  With `config.layer_decay` < 1 (layer-wise learning-rate decay, as in BEiT / ELECTRA
  fine-tuning), the parameter at depth `d` of `D` (`layer_depth(path) -> (d, D)`, from the
  model; the head is at `D`) learns at `learning_rate * layer_decay ** (D - d)`.
  """
  if config.optimizer not in OPTIMIZERS:
    raise GenreJaxError(f'unknown optimizer {config.optimizer!r}; choose one of '
                        f'{sorted(OPTIMIZERS)}.')
  tx = OPTIMIZERS[config.optimizer](config, _learning_rate(config, steps_per_epoch))
  decay = config.get('layer_decay', 1.0)
  if decay != 1.0:
    if layer_depth is None:
      raise GenreJaxError(f'config.layer_decay={decay} needs a model with layers to decay over '
                          f'(the pretrained architecture); {config.model.name!r} has none.')

    def multiplier(path):
      depth, top = layer_depth(path)
      return decay ** (top - depth)

    tx = optax.chain(tx, scale_by_path(multiplier))
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx
