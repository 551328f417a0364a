"""Per-text work spread over the machine's cores: worker processes, a chunk of texts each.

  with workers.pool(len(texts)) as pool:      # None: in this process (see `pool`)
    for result in workers.map_chunks(pool, fn, texts, args): ...   # fn(chunk, *args), in order

Counting the vocabulary and encoding texts are per-text Python (a regular expression and a dict
lookup per word), so a large data set is tokenised by several processes at once: a `loky`
process pool, whose workers are fresh interpreters (not forks of a parent that may run JAX's
threads) that do not run the caller's main script again (a script needs no
`if __name__ == '__main__':`). A worker leaves Ctrl-C to its parent (one interruption, not one per
worker) and ends within a second of its parent's end, even a killed one. A task function must be
importable at module level; its arguments and result are pickled. At most one chunk per worker and
one more are in flight, so the memory of pending chunks and results stays bounded.

The number of workers is the number of cores this process may use, or the environment variable
GENRE_JAX_DATA_WORKERS (1: everything in this process). Results do not depend on it (tested).
"""

from collections.abc import Callable, Iterator, Sequence
import collections
import contextlib
import os
import signal
import threading
import time

from genre_jax import errors

ENV = 'GENRE_JAX_DATA_WORKERS'
CHUNK_SIZE = 20_000  # Texts a task.
MIN_TEXTS = 100_000  # Fewer texts are tokenised in this process (workers would not pay off).


def count() -> int:
  """The number of worker processes: GENRE_JAX_DATA_WORKERS, else the cores this process may
  use (`loky.cpu_count`: its CPU affinity and any container quota)."""
  value = os.environ.get(ENV)
  if value is None:
    import loky
    return loky.cpu_count()
  if not value.strip().isdigit() or int(value) < 1:
    raise errors.GenreJaxError(f'the environment variable {ENV}={value!r} must be a whole number '
                               'of processes, at least 1 (1: tokenise in this process).')
  return int(value)


def size(n_texts: int) -> int:
  """How many workers `pool(n_texts)` starts: 0 (none) below `MIN_TEXTS` texts or one core."""
  workers = count()
  return workers if workers > 1 and n_texts >= MIN_TEXTS else 0


@contextlib.contextmanager
def pool(n_texts: int) -> Iterator[object | None]:
  """Worker processes (a `loky.ProcessPoolExecutor`) for work on `n_texts` texts; None (work in
  this process) when there are fewer than `MIN_TEXTS` or only one worker. The workers end with
  the block; pending work is cancelled when it fails."""
  workers = size(n_texts)
  if not workers:
    yield None
    return
  import loky
  executor = loky.ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(os.getpid(),))
  try:
    yield executor
  finally:
    executor.shutdown(wait=True, kill_workers=True)


def _start_worker(parent: int) -> None:
  """In a worker: Ctrl-C is left to the parent, and the worker ends within a second of its
  parent's end (a killed parent leaves no workers behind waiting for work for ever)."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)

  def watch():
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(1)

  threading.Thread(target=watch, daemon=True).start()


def map_chunks(pool, fn: Callable, texts: Sequence[str], args: tuple = (),
               chunk_size: int | None = None) -> Iterator:
  """`fn(chunk, *args)` for consecutive chunks of `texts`, results in order; in the workers of
  `pool`, else here; `chunk_size` texts a chunk (default `CHUNK_SIZE`)."""
  chunk_size = chunk_size or CHUNK_SIZE
  chunks = (texts[i:i + chunk_size] for i in range(0, len(texts), chunk_size))
  if pool is None:
    yield from (fn(chunk, *args) for chunk in chunks)
    return
  import loky
  pending = collections.deque()
  try:
    for chunk in chunks:
      pending.append(pool.submit(fn, chunk, *args))
      if len(pending) > count():
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
  except loky.process_executor.BrokenProcessPool as e:
    raise errors.GenreJaxError(
        f'a tokenising worker process died ({str(e).splitlines()[0]}); if memory is short, set '
        f'{ENV}=1 to tokenise in this process.') from None
  finally:
    for future in pending:
      future.cancel()
