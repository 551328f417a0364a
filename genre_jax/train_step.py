"""The jitted train step: one optimizer step (and moving average) on the split state of a model.

`TrainStep(model, optimizer, wrt, ema=..., ema_decay=...)` is what the epoch loop calls once per
batch; `moving_average_copy(model)` makes the `ema` model it averages into.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from genre_jax import inference
from genre_jax import losses


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The averaging weight of the EMA after optimizer step `step` (1, 2, ...): `decay`, but at most
  `(1 + step) / (10 + step)`, so early averages are not dominated by the initial parameters (as
  TensorFlow's `ExponentialMovingAverage(num_updates=step)`)."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def _train_step(graphdef: nnx.GraphDef, wrt, ema_decay: float, state: nnx.State,
                batch: dict[str, jax.Array],
                pos_weight: jax.Array | None) -> tuple[jax.Array, nnx.State]:
  """One optimizer step on the split state of `(model, optimizer[, ema])`; returns (loss, new
  state). With an `ema` model, its parameters move towards the updated ones (`ema_decay_at`)."""
  objects = nnx.merge(graphdef, state)
  model, optimizer = objects[:2]

  def loss_fn(model):  # A batch of tokens, or of precomputed features (frozen encoder).
    logits = inference.logits(model, batch)
    if 'soft_targets' in batch:  # Distillation (genre_jax/distill.py).
      return losses.distillation_bce(logits, batch['labels'], batch['soft_targets'],
                                     batch['hard_weight'], batch['mask'], pos_weight)
    return losses.sigmoid_bce(logits, batch['labels'], batch['mask'], pos_weight)

  loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
  optimizer.update(model, grads)
  if len(objects) == 3:
    ema = objects[2]
    decay = ema_decay_at(ema_decay, optimizer.step[...])
    nnx.update(ema, optax.incremental_update(nnx.state(model, wrt), nnx.state(ema, wrt),
                                             1.0 - decay))
  return loss, nnx.state(objects)


@functools.lru_cache(maxsize=None)
def _compiled_step(graphdef: nnx.GraphDef, wrt, ema_decay: float):
  # The state is donated: XLA updates the parameters and moments in place instead of allocating
  # fresh buffers every step (the embedding table and its Adam moments are the largest arrays).
  return jax.jit(functools.partial(_train_step, graphdef, wrt, ema_decay), donate_argnums=0)


def moving_average_copy(model: nnx.Module) -> nnx.Module:
  """A copy of `model` with arrays of its own, to hold the moving average of its parameters
  (`nnx.clone` alone shares the arrays, and the train step donates both)."""
  copy = nnx.clone(model)
  nnx.update(copy, jax.tree.map(jnp.copy, nnx.state(copy)))
  return copy


class TrainStep:
  """The jitted train step, run on the split state of a model and its optimizer.

    step = TrainStep(model, optimizer, wrt=nnx.Param)  # nnx.split once
    loss = step(batch, pos_weight)                     # one jax.jit call per step
    step.sync()                                        # state -> model and optimizer

  Each call is a plain `jax.jit` call on the state pytree: no NNX graph traversal per step, which
  `nnx.jit` would do on the way in and out. On two CPU cores that Python work competes with XLA
  for the cores (about 1-3 ms of a 15 ms CNN step); on a GPU it is most of a small model's step.
  The model and optimizer hold stale (donated) arrays until `sync()`: call it before using them.
  The step always runs the model in the mode it had when the `TrainStep` was made (train).
  With `ema` (a copy of the model, `moving_average_copy`), each step also updates its parameters
  to an exponential moving average of the model's (weight `ema_decay_at(ema_decay, step)`).

  Args (of a call):
    batch: `tokens [B, L]`, `lengths [B]`, `labels [B, G]`, `mask [B]` (or `features [B, H]`
      instead of tokens, for a frozen encoder), and when distilling `soft_targets [B, G]` and
      `hard_weight [B]` (`losses.distillation_bce`), sharded over the mesh.
    pos_weight: `[G]` positive weights, or None.
  """

  def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer, wrt=nnx.Param, *,
               ema: nnx.Module | None = None, ema_decay: float = 0.0):
    self._objects = (model, optimizer) if ema is None else (model, optimizer, ema)
    graphdef, self.state = nnx.split(self._objects)
    self._step = _compiled_step(graphdef, wrt, float(ema_decay))

  def __call__(self, batch: dict[str, jax.Array], pos_weight: jax.Array | None) -> jax.Array:
    loss, self.state = self._step(self.state, batch, pos_weight)
    return loss

  def sync(self) -> None:
    """Writes the current state into the model and optimizer."""
    nnx.update(self._objects, self.state)
