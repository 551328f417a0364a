"""Host-process settings for long CPU runs: keep freed memory instead of page-faulting it back.

XLA:CPU allocates each step's large buffers afresh, through the C library's `malloc`: the tuned
CNN's `[vocab, E]` embedding gradient alone is 7.5 MB a step. By default glibc hands large freed
blocks back to the kernel (`mmap`/`munmap`, heap trimming, deleting a thread's heap), so the next
step touches new pages: about 2,700 minor page faults and 3-4 ms of a 14 ms tuned-CNN step on two
cores, in some processes and not others (which arena a thread gets decides it). To measure it,
compare `python -m benchmarks.run --configs cnn --default-malloc` (glibc's defaults in the
workers) with `python -m benchmarks.run --configs cnn` (this setting): each reports the step time
and the minor page faults per train step. Raising glibc's three thresholds keeps freed memory in the
process for the next step:

  M_MMAP_THRESHOLD  large blocks come from the heap, not a fresh `mmap` each time;
  M_TRIM_THRESHOLD  the heap's free top is not given back (`sbrk`/`madvise`);
  M_TOP_PAD         a thread's heap is not deleted when it empties.

A block larger than a thread's heap (64 MB) is still mapped afresh each time: the tuned LSTM's step
keeps about 20,000 faults (`python -m benchmarks.run` reports faults per step). Sending every thread
to one arena (M_ARENA_MAX=1) removed those too, but its step was no faster (157-180 ms against
135-183 ms, too noisy to tell), so it is not set. The process keeps its peak memory instead of
shrinking between steps. Elsewhere (macOS, musl) the call does nothing.

Every command line entry point calls `keep_freed_memory()` first; so does the benchmark, for
genre_jax and the PyTorch reference alike. Where a phase frees much memory that later phases do not
reuse, `release_freed_memory()` hands its pages back once: `genre_jax.data.pipeline.load` does so
after reading a data file (about 200 bytes a record of parser buffers, freed between the texts).

`cyclic_gc_paused()` pauses Python's cyclic garbage collector while the data layer builds millions
of small objects (records, genre tuples, word lists): each of its full collections walks every live
container, so they cost more the larger the data set (`python -m benchmarks.scale` shows the
stages at 1M and 10M records). Reference counting still frees everything the data layer drops.
"""

import contextlib
import ctypes
import ctypes.util
import gc
import platform

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters.


def keep_freed_memory(threshold: int = 1 << 30, top_pad: int = 256 << 20) -> bool:
  """Sets glibc malloc to keep up to `threshold` bytes of freed memory (see the module docstring).

  Returns:
    True when glibc accepted all three settings; False where there is no glibc (nothing changed).
  """
  libc = _glibc()
  if libc is None:
    return False
  return all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_MMAP_THRESHOLD, threshold), (_M_TRIM_THRESHOLD, threshold), (_M_TOP_PAD, top_pad)))


def release_freed_memory() -> bool:
  """Hands the whole free pages of glibc's heaps back to the kernel, once (`malloc_trim(0)`).

  For the end of a phase that leaves freed memory behind which later phases do not reuse, and
  which `keep_freed_memory` would keep resident: reading a data file leaves the CSV parser's
  buffers freed between the synopses it made (see `genre_jax.data.pipeline.load`).

  Returns:
    True where glibc did it; False where there is no glibc (nothing done).
  """
  libc = _glibc()
  if libc is None:
    return False
  libc.malloc_trim(0)
  return True


@contextlib.contextmanager
def cyclic_gc_paused():
  """Pauses Python's cyclic garbage collector for a block (or a decorated function) that makes
  no reference cycles; restores it as it was."""
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def _glibc() -> ctypes.CDLL | None:
  """The C library where it is glibc (Linux), else None."""
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return None
  return ctypes.CDLL(ctypes.util.find_library('c'))
