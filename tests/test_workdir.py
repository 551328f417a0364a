"""Workdirs: the lock against a second writer, the marker, paths that cannot be workdirs, and
atomic writes."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from genre_jax import workdir as workdir_lib
from genre_jax.errors import GenreJaxError
from tests.conftest import REPO, config_args, run_module

HOLD_LOCK = textwrap.dedent('''
    import sys, time
    from genre_jax import workdir
    with workdir.open_for_writing(sys.argv[1], 'run'):
      print('locked', flush=True)
      time.sleep(120)
''')


def _holder(path):
  """A live process holding the workdir's lock (killed by the caller)."""
  proc = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(path)], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def test_second_writer_fails_at_once_naming_pid_and_host(synthetic_jsonl, tmp_path):
  workdir = tmp_path / 'run'
  holder = _holder(workdir)
  try:
    proc = run_module('genre_jax.train', *config_args(synthetic_jsonl), '--workdir', workdir,
                      check=False)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert f'pid {holder.pid} on host {socket.gethostname()}' in proc.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ['.lock', '.lock.owner']
  finally:
    holder.kill()
    holder.wait(timeout=30)
  # The dead holder's lock is taken over: the same command now runs.
  run_module('genre_jax.train', *config_args(synthetic_jsonl), '--workdir', workdir)
  assert (workdir / 'report.json').exists()


def test_two_trains_at_once_leave_one_consistent_run(synthetic_jsonl, tmp_path):
  workdir = tmp_path / 'run'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  procs = [subprocess.Popen([sys.executable, '-m', 'genre_jax.train',
                             *config_args(synthetic_jsonl, f'--config.seed={seed}'),
                             '--workdir', str(workdir)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for seed in (0, 1)]
  results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
  for p in procs:
    p.stdout.close()
    p.stderr.close()
  # Either the second was refused by the lock, or it ran after the first and was refused as
  # another configuration (seed); never both writing.
  codes = sorted(rc for rc, _ in results)
  assert codes == [0, 2], results
  refused = next(err for rc, err in results if rc == 2)
  assert 'being written by pid' in refused or 'seed' in refused, refused
  config = json.loads((workdir / 'config.json').read_text())
  report = json.loads((workdir / 'report.json').read_text())
  assert config['seed'] == report['seed']


def test_workdir_that_is_a_file_is_one_line(synthetic_jsonl, tmp_path):
  path = tmp_path / 'file'
  path.write_text('not a directory')
  for module, args in (('genre_jax.train', config_args(synthetic_jsonl)),
                       ('genre_jax.evaluate', []), ('genre_jax.predict', ['a ghost story'])):
    proc = run_module(module, *args, '--workdir', path, check=False)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, (module, proc.stderr)
    assert 'is a file' in proc.stderr
  assert path.read_text() == 'not a directory'


def test_read_only_workdir_is_one_line(synthetic_jsonl, tmp_path):
  readonly = tmp_path / 'ro'
  readonly.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(readonly)],
                           capture_output=True, text=True, timeout=30)
  if mounted.returncode:
    pytest.skip(f'a read-only filesystem is needed and mount was refused: {mounted.stderr}')
  try:
    proc = run_module('genre_jax.train', *config_args(synthetic_jsonl), '--workdir', readonly,
                      check=False)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert 'cannot be written' in proc.stderr and str(readonly) in proc.stderr
  finally:
    subprocess.run(['umount', '-l', str(readonly)], timeout=30)


def test_a_run_that_never_started_leaves_nothing(tmp_path):
  workdir = tmp_path / 'new'
  proc = run_module('genre_jax.train', '--config', 'configs/tiny.py',
                    f'--config.data.path={tmp_path / "missing.jsonl"}',
                    '--config.data.format=jsonl', '--workdir', workdir, check=False)
  assert proc.returncode == 2 and 'missing.jsonl' in proc.stderr
  assert not workdir.exists()


def test_marker_kind_and_format(tmp_path):
  assert workdir_lib.kind(tmp_path / 'absent') is None
  workdir_lib.write_marker(tmp_path, workdir_lib.RUN)
  assert workdir_lib.kind(tmp_path) == 'run'
  with pytest.raises(GenreJaxError, match='ensemble workdirs only'):
    workdir_lib.check_kind(tmp_path, workdir_lib.ENSEMBLE)
  (tmp_path / workdir_lib.MARKER).write_text('{"kind": "run", "format": 99}')
  with pytest.raises(GenreJaxError, match='newer genre_jax'):
    workdir_lib.kind(tmp_path)
  (tmp_path / workdir_lib.MARKER).write_text('{"kind": ')
  with pytest.raises(GenreJaxError, match='not a valid workdir marker'):
    workdir_lib.kind(tmp_path)


def test_write_text_killed_before_rename_keeps_the_old_file(tmp_path):
  path = tmp_path / 'f.json'
  workdir_lib.write_text(path, 'old')
  script = textwrap.dedent(f'''
      import os, pathlib, signal
      from genre_jax import workdir
      workdir.write_text(pathlib.Path({str(path)!r}), 'new',
                         before_rename=lambda: os.kill(os.getpid(), signal.SIGKILL))
  ''')
  proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert path.read_text() == 'old'
  workdir_lib.remove_temporaries(tmp_path)
  assert [p.name for p in tmp_path.iterdir()] == ['f.json']


def test_relative_workdir_trains_resumes_and_loads(synthetic_jsonl, tmp_path, monkeypatch):
  """The README's commands give relative workdirs (`--workdir runs/cnn`); orbax wants absolute
  paths."""
  from genre_jax import inference, trainer
  from tests.conftest import tiny_config
  monkeypatch.chdir(tmp_path)
  trainer.train_and_evaluate(tiny_config(synthetic_jsonl), 'runs/tiny')
  report = trainer.train_and_evaluate(tiny_config(synthetic_jsonl, num_epochs=2), 'runs/tiny')
  assert report['epochs_run'] == 2
  inference.load_run('runs/tiny')
