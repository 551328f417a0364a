"""Ensembles: built by `python -m genre_jax.ensemble`, used by evaluate and predict (CPU, seconds)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from genre_jax import calibration
from genre_jax import ensembling as ensemble_lib
from genre_jax import evaluation
from genre_jax import inference
from genre_jax import losses
from genre_jax import trainer
from genre_jax.errors import GenreJaxError
from tests.conftest import config_args, run_module, synthetic_records, tiny_config

TEXTS = ['a haunted house full of ghost screams and blood', 'love and a wedding kiss',
         'alien robot fight on a spaceship']


@pytest.fixture(scope='module')
def members(tmp_path_factory, synthetic_jsonl):
  """Two one-epoch runs on the same data and split: a CNN and an LSTM with another vocabulary."""
  root = tmp_path_factory.mktemp('members')
  cnn = tiny_config(synthetic_jsonl)
  lstm = tiny_config(synthetic_jsonl, seed=1)
  lstm.model.name = 'lstm'
  lstm.data.vocab_size, lstm.data.max_length = 30, 12  # The data has 44 words.
  for name, config in (('cnn', cnn), ('lstm', lstm)):
    trainer.train_and_evaluate(config, str(root / name))
  return [root / 'cnn', root / 'lstm']


@pytest.fixture(scope='module')
def ensemble(members, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('ensemble') / 'ens'
  proc = run_module('genre_jax.ensemble', '--workdir', workdir, '--members', *members,
                    '--per_genre')
  return workdir, proc


def test_probs_are_the_calibrated_mean_of_the_calibrated_members(ensemble, members):
  workdir, _ = ensemble
  ens = inference.load_run(workdir)
  assert isinstance(ens, inference.Ensemble) and len(ens.members) == 2
  runs = [inference.load_run(m) for m in members]
  assert [r.tokenizer.vocab_size for r in runs] == [46, 30]  # Each its own tokenizer.
  assert all(r.calibration.method == 'temperature' for r in runs + [ens])
  assert ens.calibration.temperature != 1.0 and runs[0].calibration.temperature != 1.0
  mean = np.mean([r.probs(TEXTS) for r in runs], axis=0)  # The members' calibrated probs.
  np.testing.assert_allclose(ens.probs(TEXTS), ens.calibration.probs(calibration.logit(mean)),
                             rtol=0, atol=1e-6)
  labels, _ = ens.labels.transform([['Horror'], ['Romance'], ['Action', 'Science Fiction']])
  probs, loss = ens.probs_and_loss(TEXTS, labels)
  np.testing.assert_allclose(probs, ens.probs(TEXTS), atol=1e-6)
  p = mean.astype(np.float64)  # The loss is the combination's, before its own calibration.
  assert loss == pytest.approx(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
  assert ens.meta['split'] == runs[0].meta['split'] and ens.labels.classes == runs[0].labels.classes


def test_report_has_the_trainer_keys(ensemble, members):
  workdir, proc = ensemble
  report = json.loads((workdir / 'report.json').read_text())
  member_reports = [json.loads((m / 'report.json').read_text()) for m in members]
  assert set(report) == set(member_reports[0]) | {'members', 'weights'}
  assert report['model'] == 'ensemble' and report['seed'] is None  # Member seeds 0 and 1.
  assert report['weights'] is None  # Equal weights.
  assert report['epochs_run'] is None and report['best_epoch'] is None
  assert [m['model'] for m in report['members']] == ['cnn', 'lstm']
  assert report['num_parameters'] == sum(r['num_parameters'] for r in member_reports)
  assert report['train_seconds'] == pytest.approx(
      sum(r['train_seconds'] for r in member_reports), abs=0.02)
  thr = json.loads((workdir / 'thresholds.json').read_text())
  assert thr == report['thresholds'] and thr['tuned'] and len(thr['per_genre']) == 6
  assert set(thr) == set(member_reports[0]['thresholds'])
  assert report['data']['split_sizes'] == member_reports[0]['data']['split_sizes']
  assert 0.0 <= report['test']['micro_f1'] <= 1.0 and np.isfinite(report['test']['loss'])
  assert '== ensemble' in proc.stdout and 'test (threshold per-genre' in proc.stdout


def test_evaluate_and_predict_work_without_the_member_workdirs(ensemble, members, tmp_path):
  workdir, _ = ensemble
  report = json.loads((workdir / 'report.json').read_text())
  before = evaluation.evaluate_test_split(inference.load_run(workdir))['summary']
  assert before['micro_f1'] == pytest.approx(report['test']['micro_f1'], abs=1e-6)
  moved = [shutil.move(m, tmp_path / m.name) for m in members]  # As if deleted.
  try:
    proc = run_module('genre_jax.evaluate', '--workdir', workdir)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['n'] == report['data']['split_sizes']['test']
    assert result['micro_f1'] == pytest.approx(report['test']['micro_f1'], abs=1e-6)
    assert result['threshold'] == 'per_genre' and result['threshold_tuned']
    proc = run_module('genre_jax.predict', '--workdir', workdir, '--json', *TEXTS[:2])
    lines = [json.loads(l) for l in proc.stdout.strip().splitlines()]
    assert len(lines) == 2 and all(0.0 <= p <= 1.0 for p in lines[0]['top'].values())
  finally:
    for src, dst in zip(moved, members):
      shutil.move(src, dst)


def test_members_with_other_labels_are_refused(members, tmp_path):
  path = tmp_path / 'no_horror.jsonl'
  with open(path, 'w') as f:
    for r in synthetic_records(60):
      r['genres'] = [g for g in r['genres'] if g != 'Horror'] or ['Drama']
      f.write(json.dumps(r) + '\n')
  trainer.train_and_evaluate(tiny_config(path), str(tmp_path / 'other'))
  proc = run_module('genre_jax.ensemble', '--workdir', tmp_path / 'ens', '--members',
                    members[0], tmp_path / 'other', check=False)
  assert proc.returncode == 2, proc.stderr
  assert 'label classes' in proc.stderr and str(tmp_path / 'other') in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'ens' / 'ensemble.json').exists()


def test_members_with_other_splits_or_data_are_refused(members):
  a, b = [inference.load_run(m) for m in members]
  split = {k: list(v) for k, v in b.meta['split'].items()}
  split['test'], split['validation'] = split['validation'], split['test']
  with pytest.raises(GenreJaxError, match=f'{b.workdir}.*split differs'):
    inference.check_compatible([a, dataclasses.replace(b, meta={**b.meta, 'split': split})])
  config = b.config.copy_and_resolve_references()
  config.data.split_seed = 7
  with pytest.raises(GenreJaxError, match='data.split_seed: 7 there, 0'):
    inference.check_compatible([a, dataclasses.replace(b, config=config)])
  config = b.config.copy_and_resolve_references()
  config.data.max_length, config.data.vocab_size = 99, 99  # A member's own input settings.
  inference.check_compatible([a, dataclasses.replace(b, config=config)])


@pytest.mark.parametrize('extra_member, needle', [
    (None, 'at least two members'),
    ('empty', 'checkpoint'),
])
def test_one_member_or_no_checkpoint_is_a_clear_error(members, tmp_path, extra_member, needle):
  others = [tmp_path / extra_member] if extra_member else []
  if extra_member:
    (tmp_path / extra_member).mkdir()
  proc = run_module('genre_jax.ensemble', '--workdir', tmp_path / 'ens', '--members', members[0],
                    *others, check=False)
  assert proc.returncode == 2, proc.stderr
  assert needle in proc.stderr and 'Traceback' not in proc.stderr


def test_weight_grid_covers_the_simplex_with_equal_weights_first():
  grid = ensemble_lib.weight_grid(3, step=0.5)
  np.testing.assert_allclose(grid[0], [1 / 3] * 3)
  assert {tuple(w) for w in grid[1:]} == {(0, 0, 1), (0, .5, .5), (0, 1, 0), (.5, 0, .5),
                                           (.5, .5, 0), (1, 0, 0)}
  grid = ensemble_lib.weight_grid(4)
  assert grid.shape == (1 + 286, 4)  # C(13, 3) points of step 0.1, and equal weights.
  np.testing.assert_allclose(grid.sum(axis=1), 1.0)
  assert grid.min() >= 0


def test_tuned_weights_favour_the_informative_member():
  rng = np.random.default_rng(0)
  y = (rng.random((300, 6)) < 0.3).astype(np.int32)
  good = np.clip(0.6 * y + 0.4 * rng.random(y.shape), 0, 1)
  noise = rng.random(y.shape)
  w, f1 = ensemble_lib.tune_weights(y, [noise, good], at_least_one=False)
  assert w[1] >= 0.8 and w.sum() == pytest.approx(1.0)
  from genre_jax import thresholds as thresholds_lib
  best = max(thresholds_lib.micro_f1_curve(y, np.tensordot(v, np.stack([noise, good]), axes=1),
                                           thresholds_lib.DEFAULT_GRID, False).max()
             for v in ensemble_lib.weight_grid(2))
  assert f1 == pytest.approx(best)


def test_tuned_weights_are_saved_and_used_by_the_loaded_ensemble(members, tmp_path):
  workdir = tmp_path / 'weighted'
  report = ensemble_lib.build(workdir, [str(m) for m in members], weights='tuned')
  spec = json.loads((workdir / 'ensemble.json').read_text())
  assert spec['combination'] == 'weighted_mean' and report['weights'] == spec['weights']
  assert len(spec['weights']) == 2 and sum(spec['weights']) == pytest.approx(1.0)
  ens = inference.load_run(workdir)
  runs = [inference.load_run(m) for m in members]
  expected = np.average([r.probs(TEXTS) for r in runs], axis=0, weights=spec['weights'])
  np.testing.assert_allclose(ens.probs(TEXTS), ens.calibration.probs(calibration.logit(expected)),
                             atol=1e-6)
  result = evaluation.evaluate_test_split(ens)['summary']
  assert result['micro_f1'] == pytest.approx(report['test']['micro_f1'], abs=1e-6)
  spec['weights'] = [1.0, -1.0]
  (workdir / 'ensemble.json').write_text(json.dumps(spec))
  with pytest.raises(GenreJaxError, match='"weights" must be 2 non-negative numbers'):
    inference.load_run(workdir)


def test_threshold_policy_command_scores_validation_halves_only(members, tmp_path, monkeypatch):
  from experiments import threshold_policy
  load_data = inference.Run.load_data

  def without_test_split(run):  # Reading the test split would now fail.
    data = load_data(run)
    data.arrays['test'] = None
    return data

  monkeypatch.setattr(inference.Run, 'load_data', without_test_split)
  out = tmp_path / 'cv.json'
  threshold_policy.main([str(members[0]), '--repeats', '2', '--json', str(out)])
  cv = json.loads(out.read_text())[str(members[0])]
  assert set(cv) == {'global', 'global+at_least_one', 'per_genre', 'per_genre+at_least_one'}
  assert all(0.0 < mean <= 1.0 and std >= 0.0 for mean, std in cv.values())


def _files(directory):
  return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob('*')
          if p.is_file()}


def test_train_refuses_an_ensemble_workdir_and_leaves_it_intact(ensemble, synthetic_jsonl):
  workdir, _ = ensemble
  before = _files(workdir)
  proc = run_module('genre_jax.train', *config_args(synthetic_jsonl), '--workdir', workdir,
                    check=False)
  assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
  assert 'ensemble workdir' in proc.stderr and 'genre_jax.ensemble' in proc.stderr
  assert _files(workdir) == before
  assert json.loads((workdir / 'workdir.json').read_text())['kind'] == 'ensemble'


def test_ensemble_refuses_a_run_workdir(members, tmp_path):
  before = _files(members[0])
  proc = run_module('genre_jax.ensemble', '--workdir', members[0], '--members', *members,
                    check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'run workdir' in proc.stderr
  assert _files(members[0]) == before
