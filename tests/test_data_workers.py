"""Tests for genre_jax.data.workers: tokenisation in worker processes gives what one process gives."""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from genre_jax import errors
from genre_jax.data import pipeline
from genre_jax.data import text
from genre_jax.data import workers
from tests import test_data_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_workers(monkeypatch):
  """Worker processes for any number of texts."""
  monkeypatch.setenv(workers.ENV, '2')
  monkeypatch.setattr(workers, 'MIN_TEXTS', 0)


def test_prepare_in_workers_equals_prepare_in_process(tmp_path, monkeypatch, two_workers):
  monkeypatch.setattr(workers, 'CHUNK_SIZE', 16)  # Many chunks, in order.
  config = test_data_pipeline.data_config(test_data_pipeline.write_csv(tmp_path / 'm.csv', 400))
  spread = pipeline.prepare(config)
  monkeypatch.setenv(workers.ENV, '1')
  here = pipeline.prepare(config)
  assert spread.tokenizer.vocab == here.tokenizer.vocab
  for name in here.arrays:
    np.testing.assert_array_equal(spread.arrays[name].tokens, here.arrays[name].tokens)
    np.testing.assert_array_equal(spread.arrays[name].lengths, here.arrays[name].lengths)
    assert spread.arrays[name].tokens.dtype == here.arrays[name].tokens.dtype == np.uint8


def test_word_tokenizer_fit_and_encode_in_workers(two_workers):
  texts = [f'Ünïcode word{i % 13} and the Ｆｕｌｌ width {i % 5} text, №{i}' for i in range(300)]
  with workers.pool(len(texts)) as pool:
    assert pool is not None
    fitted = text.WordTokenizer.fit(texts, 40, 2, pool=pool)
    tokens, lengths = np.zeros((300, 9), np.uint8), np.zeros(300, np.int32)
    text.encode_into(fitted, texts, tokens, lengths, pool, chunk_size=16)
  assert fitted.vocab == text.WordTokenizer.fit(texts, 40, 2).vocab
  expected = fitted.encode(texts, 9)
  np.testing.assert_array_equal(tokens, expected[0])
  np.testing.assert_array_equal(lengths, expected[1])


def test_no_pool_for_few_texts_or_one_worker(monkeypatch):
  monkeypatch.setenv(workers.ENV, '4')
  assert (workers.size(workers.MIN_TEXTS - 1), workers.size(workers.MIN_TEXTS)) == (0, 4)
  with workers.pool(workers.MIN_TEXTS - 1) as pool:
    assert pool is None
  monkeypatch.setenv(workers.ENV, '1')
  assert workers.size(10 * workers.MIN_TEXTS) == 0
  with workers.pool(10 * workers.MIN_TEXTS) as pool:
    assert pool is None


@pytest.mark.parametrize('value', ['0', 'two', '-1', ''])
def test_bad_worker_count_is_one_line(tmp_path, value):
  path = test_data_pipeline.write_csv(tmp_path / 'm.csv')
  proc = subprocess.run(
      [sys.executable, '-m', 'genre_jax.data', f'--path={path}', '--format=csv',
       '--text_column=plot', '--genre_column=tags', '--genre_separator=|'],
      cwd=REPO, env=dict(os.environ, **{workers.ENV: value}), capture_output=True, text=True,
      timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.count('\n') == 1 and workers.ENV in proc.stderr, proc.stderr


def _die(chunk):
  os._exit(3)


def test_a_dead_worker_is_one_clear_error(two_workers):
  with pytest.raises(errors.GenreJaxError, match=f'worker process died.*{workers.ENV}=1'):
    with workers.pool(10) as pool:
      list(workers.map_chunks(pool, _die, ['a'] * 10, chunk_size=2))


KILLED_PARENT = '''
import os
from genre_jax.data import text, workers
workers.MIN_TEXTS, workers.IDLE_SECONDS = 0, 1
texts = ['the words of a long synopsis ' * 40] * 400_000
with workers.pool(len(texts)) as pool:
  for i, _ in enumerate(workers.map_chunks(pool, text.count_words, texts, (True,), 2_000)):
    if i == 2:  # Every child process (the workers and any helper of theirs).
      print(' '.join(p for t in os.listdir('/proc/self/task')
                     for p in open(f'/proc/self/task/{t}/children').read().split()), flush=True)
'''


def test_workers_end_with_a_killed_parent():
  proc = subprocess.Popen([sys.executable, '-c', KILLED_PARENT], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, env=dict(os.environ, **{workers.ENV: '2'}))
  try:
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) >= 2
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  assert _all_end(pids)


def test_a_script_without_a_main_guard_runs_once(tmp_path):
  script = tmp_path / 'script.py'  # Spawned workers that re-ran it would pool again and fail.
  script.write_text(f"""import sys
sys.path.insert(0, {str(REPO)!r})
from genre_jax.data import text, workers
workers.MIN_TEXTS = 0
print('main ran')
with workers.pool(1) as pool:
  print(sum(len(c) for c in workers.map_chunks(pool, text.count_words, ['a b', 'c'] * 9, (True,), 2)))
""")
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, **{workers.ENV: '2'}))
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ['main', 'ran', '27']


def test_ctrl_c_interrupts_once_and_stops_the_workers():
  proc = subprocess.Popen([sys.executable, '-c', KILLED_PARENT], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                          env=dict(os.environ, **{workers.ENV: '2'}))
  try:
    pids = [int(p) for p in proc.stdout.readline().split()]
    os.killpg(proc.pid, signal.SIGINT)  # As a terminal's Ctrl-C: the whole process group.
    _, stderr = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode != 0 and stderr.count('KeyboardInterrupt') == 1, stderr
  assert _all_end(pids)


def _all_end(pids: list[int], seconds: float = 30.0) -> bool:
  """Whether every process of `pids` has ended within `seconds`."""
  deadline = time.monotonic() + seconds
  while any(_alive(p) for p in pids) and time.monotonic() < deadline:
    time.sleep(0.2)
  return not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'  # A zombie has ended.
  except FileNotFoundError:
    return False
