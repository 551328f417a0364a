"""Data parallelism over all devices through `jax.sharding`.

Parameters and optimizer state are replicated; every batch is split along its first axis over a
one-axis mesh named 'data'. The same code runs on one CPU, one GPU, several GPUs or a TPU slice;
on several hosts, call `initialize_distributed()` first and every process feeds its own slice of the
global batch. Test on CPU with `XLA_FLAGS=--xla_force_host_platform_device_count=4`.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genre_jax.errors import GenreJaxError


def initialize_distributed() -> None:
  """Joins a multi-host run (coordinator address etc. from the usual JAX environment variables)."""
  jax.distributed.initialize()


def make_mesh() -> Mesh:
  """A one-axis mesh ('data',) over every device of every process.

  The axis is `Auto`: XLA propagates the batch sharding through the model, so model code needs no
  sharding annotations.
  """
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise GenreJaxError(
        f'{what}={batch_size} is not divisible by the number of devices ({n}); data parallelism '
        f'splits every batch evenly over the devices. Choose a multiple of {n}, e.g. '
        f'--config.{what}={max(n, batch_size // n * n)}.')


def replicate(module: nnx.Module, mesh: Mesh) -> None:
  """Places every array of an NNX object (model or optimizer) on all devices, replicated."""
  state = nnx.state(module)
  state = jax.device_put(state, NamedSharding(mesh, P()))
  nnx.update(module, state)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Splits a global numpy batch over the mesh's 'data' axis.

  Every process holds the whole global batch (the input pipeline is deterministic), takes its own
  rows, and `make_array_from_process_local_data` assembles the global array.
  """
  sharding = NamedSharding(mesh, P('data'))
  nproc, pid = jax.process_count(), jax.process_index()

  def put(x):
    local = x if nproc == 1 else np.array_split(x, nproc)[pid]
    return jax.make_array_from_process_local_data(sharding, local, x.shape)

  return {k: put(v) for k, v in batch.items()}
