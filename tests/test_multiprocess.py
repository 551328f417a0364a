"""Two processes on 127.0.0.1 (JAX's distributed runtime, gloo CPU collectives) train one run:
killed together in epoch 2 and restarted, they finish with the report of a 1-process run."""

import json
import os
import socket
import subprocess
import sys

import pytest

from genre_jax import trainer
from tests.conftest import REPO, config_args, run_module, tiny_config

STEPS_PER_EPOCH = 48  # 192 training rows, batches of 4.
OPT = os.environ.get('XLA_FLAGS', '')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch_two(args, workdir, env=None):
  """Starts processes 0 and 1 of one run; returns [(returncode, stdout, stderr)] by process."""
  address = f'127.0.0.1:{_free_port()}'
  full_env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': OPT, **(env or {})}
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'genre_jax.train', *args, '--workdir', str(workdir), '--distributed',
       f'--coordinator_address={address}', '--num_processes=2', f'--process_id={i}'],
      cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in (0, 1)]
  try:
    outputs = [p.communicate(timeout=240) for p in procs]
    return [(p.returncode, *out) for p, out in zip(procs, outputs)]
  finally:
    for p in procs:
      p.kill()


def _epoch_lines(stdout):
  return [line.split('  ex/s')[0].rsplit('  ', 1)[0] for line in stdout.splitlines()
          if line.startswith('epoch ')]


def test_two_processes_killed_and_restarted_match_one_process(synthetic_jsonl, tmp_path):
  args = config_args(synthetic_jsonl, '--config.num_epochs=2')
  workdir = tmp_path / 'two'
  killed = _launch_two(args, workdir, env={'GENRE_JAX_FAULT': f'train_step:{STEPS_PER_EPOCH + 9}'})
  assert all(rc != 0 for rc, _, _ in killed), killed
  assert json.loads((workdir / 'commit.json').read_text())['epoch'] == 1
  results = _launch_two(args, workdir)
  assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2][-3000:]
  lines = [_epoch_lines(out) for _, out, _ in results]
  assert lines[0] == lines[1] and len(lines[0]) == 1  # Epoch 2 only: epoch 1 was committed.
  assert len((workdir / 'metrics.jsonl').read_text().splitlines()) == 2
  two = json.loads((workdir / 'report.json').read_text())

  one = trainer.train_and_evaluate(tiny_config(synthetic_jsonl, num_epochs=2), str(tmp_path / 'one'))
  run_module('genre_jax.train', *args, '--workdir', tmp_path / 'devices',
             env={'XLA_FLAGS': f'{OPT} --xla_force_host_platform_device_count=2'})
  devices = json.loads((tmp_path / 'devices' / 'report.json').read_text())
  for other in (one, devices):
    for key in ('micro_f1', 'macro_f1', 'loss', 'map'):
      assert two['test'][key] == pytest.approx(other['test'][key], abs=1e-6), key
    assert two['thresholds']['global'] == other['thresholds']['global']

  # A workdir written by two processes evaluates in one.
  proc = run_module('genre_jax.evaluate', '--workdir', workdir)
  assert json.loads(proc.stdout.splitlines()[-1])['micro_f1'] == pytest.approx(
      two['test']['micro_f1'], abs=1e-6)
