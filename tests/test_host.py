"""host.keep_freed_memory: freed blocks stay in the process (no page faults when reused);
host.release_freed_memory hands them back; host.cyclic_gc_paused."""

import platform
import subprocess
import sys

import pytest

from genre_jax import host

# Allocates and frees a 32 MB array ten times and prints the minor page faults per allocation.
_PROBE = '''
import resource, sys
import numpy as np
from genre_jax import host
if sys.argv[1] == 'keep':
  assert host.keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = np.ones(8 << 20, np.float32); del x
start = faults()
for _ in range(10):
  x = np.ones(8 << 20, np.float32); del x
print((faults() - start) / 10)
'''


def _faults_per_allocation(mode: str) -> float:
  out = subprocess.run([sys.executable, '-c', _PROBE, mode], capture_output=True, text=True,
                       check=True)
  return float(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc malloc only')
def test_keep_freed_memory_stops_page_faults_on_reuse():
  # A fresh process with glibc's defaults maps a 32 MB block anew each time (hundreds of faults:
  # the probe would fail here, not pass trivially, if the default already kept the memory).
  assert _faults_per_allocation('default') > 50
  assert _faults_per_allocation('keep') < 5


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch):
  from genre_jax import host
  monkeypatch.setattr(platform, 'libc_ver', lambda: ('', ''))
  assert host.keep_freed_memory() is False


# Frees a 256 MB block in the middle of the heap (kept by keep_freed_memory: a block allocated
# after it stops the heap's top from shrinking), then releases it; prints the RSS in MB before and
# after `release_freed_memory` ('release') or a second look ('keep').
_RELEASE_PROBE = '''
import sys
import numpy as np
from genre_jax import host
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20
assert host.keep_freed_memory()
x = np.ones(256 << 20, np.uint8)
above = np.ones(1 << 20, np.uint8)
del x
before = rss()
if sys.argv[1] == 'release':
  assert host.release_freed_memory()
print(before, rss())
'''


def _rss_drop_mb(mode: str) -> int:
  out = subprocess.run([sys.executable, '-c', _RELEASE_PROBE, mode], capture_output=True,
                       text=True, check=True)
  before, after = map(int, out.stdout.split())
  return before - after


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc malloc only')
def test_release_freed_memory_hands_kept_pages_back():
  assert _rss_drop_mb('keep') < 10  # The freed block stays resident ...
  assert _rss_drop_mb('release') > 200  # ... until it is handed back.


def test_release_freed_memory_is_a_no_op_without_glibc(monkeypatch):
  from genre_jax import host
  monkeypatch.setattr(platform, 'libc_ver', lambda: ('', ''))
  assert host.release_freed_memory() is False


def test_cyclic_gc_paused_restores_the_collector_and_pauses_prepare(monkeypatch, tmp_path):
  import gc
  from genre_jax.data import pipeline, splits
  from tests import test_data_pipeline
  for before in (True, False):
    (gc.enable if before else gc.disable)()
    with host.cyclic_gc_paused():
      assert not gc.isenabled()
    assert gc.isenabled() == before
  gc.enable()
  seen, split = [], splits.split_indices
  monkeypatch.setattr(splits, 'split_indices', lambda *a: seen.append(gc.isenabled()) or split(*a))
  pipeline.prepare(test_data_pipeline.data_config(test_data_pipeline.write_csv(tmp_path / 'm.csv')))
  assert seen == [False] and gc.isenabled()
