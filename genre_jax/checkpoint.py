"""Orbax checkpoints of a run: parameters, optimizer state and the run's metadata.

A workdir holds two orbax `CheckpointManager` directories:
  checkpoints/  the latest epoch (parameters + optimizer state [+ the parameters' moving average,
                with config.ema_decay]), used to resume;
  best/         the epoch with the best validation metric (parameters only), used by evaluate / predict.
Each checkpoint also stores a JSON item `meta` with everything needed to rebuild and use the run
without the original data files: config, tokenizer (vocabulary), label set, data split (record ids),
epoch, step, metric history and early-stopping state, and (in best/) the tuned thresholds.
Orbax writes each step to a temporary directory and renames it when complete, so a run killed at any
moment leaves either the previous or the new checkpoint, never a broken one.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from genre_jax.errors import GenreJaxError

LATEST, BEST = 'checkpoints', 'best'


def _manager(directory: pathlib.Path) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=1, create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory.absolute(), options=options)


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class RunCheckpoints:
  """The `checkpoints/` and `best/` managers of one workdir."""

  def __init__(self, workdir: str | pathlib.Path):
    self.workdir = pathlib.Path(workdir)
    self._managers: dict[str, ocp.CheckpointManager] = {}

  def manager(self, kind: str) -> ocp.CheckpointManager:
    if kind not in self._managers:
      self._managers[kind] = _manager(self.workdir / kind)
    return self._managers[kind]

  def exists(self, kind: str = LATEST) -> bool:
    d = self.workdir / kind
    return d.is_dir() and self.manager(kind).latest_step() is not None

  def save(self, kind: str, step: int, model: nnx.Module, meta: dict[str, Any],
           optimizer: nnx.Optimizer | None = None, *, ema: nnx.Module | None = None) -> None:
    state = {'params': nnx.state(model, nnx.Param)}
    if optimizer is not None:
      state['optimizer'] = nnx.state(optimizer)
    if ema is not None:
      state['ema'] = nnx.state(ema, nnx.Param)
    self.manager(kind).save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self.manager(kind).wait_until_finished()

  def read_meta(self, kind: str = LATEST) -> dict[str, Any]:
    """The JSON metadata of the newest checkpoint of `kind` (no arrays are read)."""
    if not self.exists(kind):
      raise GenreJaxError(self._missing(kind))
    manager = self.manager(kind)
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))
    return restored['meta']

  def restore(self, kind: str, model: nnx.Module, optimizer: nnx.Optimizer | None = None, *,
              ema: nnx.Module | None = None) -> dict[str, Any]:
    """Restores arrays in place into `model` (and `optimizer`, `ema`); returns the metadata."""
    if not self.exists(kind):
      raise GenreJaxError(self._missing(kind))
    manager = self.manager(kind)
    target = {'params': nnx.state(model, nnx.Param)}
    if optimizer is not None:
      target['optimizer'] = nnx.state(optimizer)
    if ema is not None:
      target['ema'] = nnx.state(ema, nnx.Param)
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore()))
    nnx.update(model, restored['state']['params'])
    if optimizer is not None:
      nnx.update(optimizer, restored['state']['optimizer'])
    if ema is not None:
      nnx.update(ema, restored['state']['ema'])
    return restored['meta']

  def _missing(self, kind: str) -> str:
    if not self.workdir.exists():
      return f'workdir {self.workdir} does not exist.'
    what = 'best' if kind == BEST else 'latest'
    return (f'workdir {self.workdir} holds no {what} checkpoint ({self.workdir / kind} is missing '
            'or empty). Train first: python -m genre_jax.train --config CONFIG --workdir '
            f'{self.workdir}')
