"""A run moves between machines with other device counts: trained on 4 devices, it resumes,
evaluates and predicts on 1; trained on 1, it evaluates and predicts on 3 (whose count divides
neither batch size: evaluate pads its last batch as predict does)."""

import json
import os

from tests.conftest import config_args, run_module

OPT = os.environ.get('XLA_FLAGS', '')


def _devices(n):
  return {'XLA_FLAGS': f'{OPT} --xla_force_host_platform_device_count={n}'.strip()}


def _check_evaluate_and_predict(workdir, n):
  proc = run_module('genre_jax.evaluate', '--workdir', workdir, env=_devices(n))
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  report = json.loads((workdir / 'report.json').read_text())
  assert abs(result['micro_f1'] - report['test']['micro_f1']) < 1e-6
  proc = run_module('genre_jax.predict', '--workdir', workdir, '--json', 'a haunted ghost',
                    'a funny joke', 'alien planet', env=_devices(n))
  assert len(proc.stdout.strip().splitlines()) == 3


def test_four_devices_to_one(synthetic_jsonl, tmp_path):
  args = config_args(synthetic_jsonl, '--config.num_epochs=2', '--config.eval_batch_size=8')
  run_module('genre_jax.train', *args, '--workdir', tmp_path, env={
      **_devices(4), 'GENRE_JAX_FAULT': 'epoch_committed:1'}, check=False)
  assert json.loads((tmp_path / 'commit.json').read_text())['epoch'] == 1
  proc = run_module('genre_jax.train', *args, '--workdir', tmp_path, env=_devices(1))
  assert 'resumed from' in proc.stdout
  _check_evaluate_and_predict(tmp_path, 1)


def test_one_device_to_three(synthetic_jsonl, tmp_path):
  run_module('genre_jax.train', *config_args(synthetic_jsonl), '--workdir', tmp_path,
             env=_devices(1))
  _check_evaluate_and_predict(tmp_path, 3)
