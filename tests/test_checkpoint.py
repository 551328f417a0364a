"""The epoch commit protocol under faults: a kill at every point of it, a full disk, corrupt,
truncated and deleted checkpoint files. Each fault is followed by the same command, whose final
report must equal an uninterrupted run's."""

import concurrent.futures
import json
import pathlib
import shutil
import signal
import subprocess

import pytest

from genre_jax import checkpoint
from genre_jax import distill
from genre_jax import faults
from genre_jax import inference
from genre_jax import trainer
from genre_jax.errors import GenreJaxError
from tests.conftest import run_module, tiny_config

EPOCHS, EXAMPLES = 3, 120  # 96 training rows / batch 4: 24 steps an epoch.
STEPS_PER_EPOCH = 24
VOLATILE = ('workdir', 'train_seconds')  # Report keys that differ between two identical runs.


def _config(path):
  return tiny_config(path, **{'num_epochs': EPOCHS, 'data.max_examples': EXAMPLES})


def _args(path, workdir):
  return ['--config', 'configs/tiny.py', f'--config.data.path={path}',
          '--config.data.format=jsonl', f'--config.data.max_examples={EXAMPLES}',
          f'--config.num_epochs={EPOCHS}', '--config.progress_bar=False', '--workdir', workdir]


def _outcome(workdir: pathlib.Path) -> dict:
  """What a finished run leaves: report (less timings), thresholds and metrics (less timings)."""
  report = json.loads((workdir / 'report.json').read_text())
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {'report': {k: v for k, v in report.items() if k not in VOLATILE},
          'thresholds': json.loads((workdir / 'thresholds.json').read_text()),
          'metrics': [{k: v for k, v in r.items()
                       if k not in ('epoch_seconds', 'examples_per_second')} for r in rows]}


@pytest.fixture(scope='module')
def straight(synthetic_jsonl, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('straight')
  trainer.train_and_evaluate(_config(synthetic_jsonl), str(workdir))
  return _outcome(workdir)


# Every point of faults.POINTS, each at its first occurrence after epoch 1 is committed.
FAULTS = [('train_step', STEPS_PER_EPOCH + 10)] + [
    (p, 2) for p in faults.POINTS if p.startswith(('epoch_', 'commit_'))] + [
    ('calibration_written', 1), ('thresholds_written', 1), ('report_written', 1)]
# A distilled run's points: the teacher's scores cached before the first step.
DISTILL_FAULTS = [(p, 1) for p in faults.POINTS if p.startswith('distill_')]


def test_fault_table_covers_every_point():
  assert {p for p, _ in FAULTS + DISTILL_FAULTS} == set(faults.POINTS)


def test_kill_at_every_point_of_the_commit_protocol_then_rerun(synthetic_jsonl, tmp_path,
                                                              straight):
  """The fault-injection table: SIGKILL at each point, check the workdir is usable as it is,
  rerun the same command, compare with the uninterrupted run."""
  def kill(fault):
    workdir = tmp_path / f'{fault[0]}-{fault[1]}'
    proc = run_module('genre_jax.train', *_args(synthetic_jsonl, workdir), check=False,
                      env={faults.ENV: f'{fault[0]}:{fault[1]}'})
    return fault, workdir, proc

  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    killed = list(pool.map(kill, FAULTS))
  for (point, count), workdir, proc in killed:
    assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-2000:])
    inference.load_run(workdir)  # Evaluate / predict can use the workdir as the kill left it.
    trainer.train_and_evaluate(_config(synthetic_jsonl), str(workdir))  # The same command.
    assert _outcome(workdir) == straight, point
    record = json.loads((workdir / checkpoint.COMMIT_FILE).read_text())
    assert record['epoch'] == EPOCHS
    assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == sorted(
        str(s) for s in (record['previous']['step'], record['latest']['step']))


def test_kill_while_caching_the_teachers_scores_then_rerun(synthetic_jsonl, tmp_path):
  """A distilled run killed at each point of writing distill_targets.npz: the workdir holds no
  cache or a complete one, and the same command then gives the uninterrupted run's outcome."""
  teacher = tmp_path / 'teacher'
  trainer.train_and_evaluate(tiny_config(synthetic_jsonl, **{'data.max_examples': EXAMPLES}),
                             str(teacher))
  extra = {'distill.teacher': str(teacher), 'distill.augment_copies': 1}
  config = tiny_config(synthetic_jsonl, **{'num_epochs': 2, 'data.max_examples': EXAMPLES,
                                           **extra})
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))

  def outcome(workdir):  # Less the time the teacher took to score.
    out = _outcome(workdir)
    out['report']['distill'].pop('teacher_score_seconds')
    return out

  expected = outcome(tmp_path / 'straight')
  for point, count in DISTILL_FAULTS:
    workdir = tmp_path / point
    args = _args(synthetic_jsonl, workdir) + [f'--config.{k}={v}' for k, v in extra.items()]
    proc = run_module('genre_jax.train', *args, '--config.num_epochs=2', check=False,
                      env={faults.ENV: f'{point}:{count}'})
    assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-2000:])
    cache = workdir / distill.CACHE_FILE
    assert cache.exists() == (point == 'distill_written'), point
    if cache.exists():
      distill.read_cache(cache)  # Complete, its checksum intact.
    trainer.train_and_evaluate(config, str(workdir))
    assert outcome(workdir) == expected, point
    assert not list(workdir.glob('.*.tmp-*'))


def _mount_tmpfs(directory: pathlib.Path, size: str) -> None:
  directory.mkdir()
  proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(directory)],
                        capture_output=True, text=True, timeout=30)
  if proc.returncode:
    pytest.skip(f'a small filesystem is needed and mount was refused: {proc.stderr.strip()}')


def test_full_disk_is_one_line_and_the_run_resumes_once_space_is_freed(synthetic_jsonl,
                                                                         tmp_path, straight):
  disk = tmp_path / 'disk'
  _mount_tmpfs(disk, '2m')
  try:
    filler = disk / 'filler'
    filler.write_bytes(b'\0' * (shutil.disk_usage(disk).free - 200_000))
    workdir = disk / 'run'
    proc = run_module('genre_jax.train', *_args(synthetic_jsonl, workdir), check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count('\n') == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert 'no space left' in proc.stderr and str(workdir) in proc.stderr
    assert 'MiB free' in proc.stderr
    filler.unlink()
    run_module('genre_jax.train', *_args(synthetic_jsonl, workdir))
    assert _outcome(workdir) == straight
  finally:
    subprocess.run(['umount', '-l', str(disk)], timeout=30)


@pytest.fixture
def finished(synthetic_jsonl, tmp_path):
  """A finished 3-epoch run in a fresh workdir (in-process: seconds)."""
  workdir = tmp_path / 'run'
  trainer.train_and_evaluate(_config(synthetic_jsonl), str(workdir))
  return workdir


def _first_array_file(directory: pathlib.Path) -> pathlib.Path:
  return sorted((directory / 'state' / 'ocdbt.process_0' / 'd').iterdir())[0]


@pytest.mark.parametrize('damage', ['truncate', 'garble', 'meta'])
def test_corrupt_best_checkpoint_names_the_file(finished, damage):
  best = next((finished / 'best').iterdir())
  target = best / 'meta' / 'metadata' if damage == 'meta' else _first_array_file(best)
  data = target.read_bytes()
  target.write_bytes(data[:len(data) // 2] if damage == 'truncate' else
                     b'{"broken' if damage == 'meta' else bytes(b ^ 0xFF for b in data))
  proc = run_module('genre_jax.evaluate', '--workdir', finished, check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert proc.stderr.count('\n') == 1
  assert str(target) in proc.stderr and 'corrupt' in proc.stderr


def test_corrupt_latest_checkpoint_resumes_from_the_previous_epoch(synthetic_jsonl, finished,
                                                                   straight):
  record = json.loads((finished / checkpoint.COMMIT_FILE).read_text())
  latest = finished / 'checkpoints' / str(record['latest']['step'])
  target = _first_array_file(latest)
  target.write_bytes(target.read_bytes()[:3])
  config = _config(synthetic_jsonl)
  config.num_epochs = EPOCHS + 1  # num_epochs may change on resume: extend the run.
  trainer.train_and_evaluate(config, str(finished))
  rows = (finished / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(r)['epoch'] for r in rows] == [1, 2, 3, 4]  # Epoch 3 was trained again.
  assert [json.loads(r)['val_loss'] for r in rows[:3]] == [
      r['val_loss'] for r in straight['metrics']]


def test_broken_commit_record_is_one_line(finished):
  (finished / checkpoint.COMMIT_FILE).write_text('{"format": 1, "latest": ')
  proc = run_module('genre_jax.predict', '--workdir', finished, 'a ghost story', check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'commit.json' in proc.stderr


def test_deleted_checkpoints_directory_is_refused_and_nothing_is_lost(synthetic_jsonl, finished):
  shutil.rmtree(finished / 'checkpoints')
  before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
  with pytest.raises(GenreJaxError, match='missing'):
    trainer.train_and_evaluate(_config(synthetic_jsonl), str(finished))
  after = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
  assert after == before  # metrics.jsonl, report.json, thresholds.json untouched.
  inference.load_run(finished)  # best/ still serves evaluate and predict.


def test_leftovers_of_a_killed_write_are_removed(synthetic_jsonl, finished, straight):
  record = json.loads((finished / checkpoint.COMMIT_FILE).read_text())
  newer = record['latest']['step'] + STEPS_PER_EPOCH
  (finished / 'checkpoints' / f'{newer}.orbax-checkpoint-tmp').mkdir()
  shutil.copytree(finished / 'best' / str(record['best']['step']), finished / 'best' / str(newer))
  (finished / '.commit.json.tmp-123').write_text('{}')
  trainer.train_and_evaluate(_config(synthetic_jsonl), str(finished))
  assert sorted(p.name for p in (finished / 'best').iterdir()) == [str(record['best']['step'])]
  assert not list(finished.glob('.*.tmp-*'))
  assert _outcome(finished) == straight


def test_legacy_workdir_without_commit_record_is_adopted(finished, straight, synthetic_jsonl):
  for name in (checkpoint.COMMIT_FILE, 'workdir.json'):
    (finished / name).unlink()
  meta = checkpoint.RunCheckpoints(finished).read_meta(checkpoint.BEST)
  assert meta['epoch'] >= 1
  trainer.train_and_evaluate(_config(synthetic_jsonl), str(finished))
  assert json.loads((finished / checkpoint.COMMIT_FILE).read_text())['latest']['files']
  assert _outcome(finished) == straight


def test_corrupt_latest_checkpoint_without_an_earlier_one_names_the_file(synthetic_jsonl,
                                                                         tmp_path):
  config = tiny_config(synthetic_jsonl, **{'num_epochs': 1, 'data.max_examples': EXAMPLES})
  trainer.train_and_evaluate(config, str(tmp_path))
  target = _first_array_file(next((tmp_path / 'checkpoints').iterdir()))
  target.write_bytes(b'garbage')
  config.num_epochs = 2
  with pytest.raises(GenreJaxError, match=f'checkpoint file {target} is corrupt'):
    trainer.train_and_evaluate(config, str(tmp_path))
  inference.load_run(tmp_path)  # best/ is intact: evaluate and predict still work.
