"""Data parallelism over all devices of all processes through `jax.sharding`.

Parameters and optimizer state are replicated; every batch is split along its first axis over a
one-axis mesh named 'data' whose devices are ordered by process, so process p holds the p-th
contiguous block of rows of every global batch (`batching.batches(..., part=process_part())`
materialises only that block). The same code runs on one CPU, one GPU, several GPUs, a TPU slice
or several hosts: call `initialize_distributed()` first there. Test on CPU with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`, or with several processes on 127.0.0.1.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genre_jax.errors import GenreJaxError


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins a multi-process run: from a detected cluster (Slurm, Open MPI, Kubernetes, TPU VMs), as
  `jax.distributed.initialize()` reads it, or from the arguments on plain hosts. CPU collectives
  go through gloo."""
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  except (ValueError, RuntimeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise GenreJaxError(
        f'cannot join the distributed run ({first}). Outside a detected cluster give every '
        'process --coordinator_address=HOST:PORT --num_processes=N --process_id=I.') from None


def is_lead() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def process_part() -> tuple[int, int]:
  """(this process's index, the number of processes): its block of every global batch."""
  return jax.process_index(), jax.process_count()


def barrier(name: str) -> None:
  """Waits for every process (nothing to wait for in a single process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def make_mesh() -> Mesh:
  """A one-axis mesh ('data',) over every device of every process, grouped by process.

  The axis is `Auto`: XLA propagates the batch sharding through the model, so model code needs no
  sharding annotations.
  """
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.array(devices), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise GenreJaxError(
        f'{what}={batch_size} is not divisible by the number of devices ({n}); data parallelism '
        f'splits every batch evenly over the devices. Choose a multiple of {n}, e.g. '
        f'--config.{what}={max(n, batch_size // n * n)}.')


def put_replicated(x, mesh: Mesh) -> jax.Array:
  """`x` (a process-local value, or an array already on `mesh`) replicated on every device."""
  sharding = NamedSharding(mesh, P())
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    data = put_replicated(jax.random.key_data(x), mesh)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  host = to_host(x) if isinstance(x, jax.Array) else np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(module: nnx.Module, mesh: Mesh) -> None:
  """Places every array of an NNX object (model or optimizer) on all devices, replicated."""
  nnx.update(module, jax.tree.map(lambda x: put_replicated(x, mesh), nnx.state(module)))


def to_host(x: jax.Array) -> np.ndarray:
  """The whole value of a (possibly multi-process) array as numpy, on every process."""
  if x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's block of rows of a global batch (`batching.batches(..., part=...)`), as the
  global arrays split over the mesh's 'data' axis."""
  sharding = NamedSharding(mesh, P('data'))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
