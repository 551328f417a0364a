"""experiments/: baselines on a tiny synthetic data set, report.py on synthetic run files."""

import json

import numpy as np
import pytest

from tests.conftest import tiny_config

pytest.importorskip('matplotlib')

from experiments import report as report_lib  # noqa: E402 (after the skip)


def test_baselines_on_synthetic_data(synthetic_jsonl, tmp_path):
  from experiments import baselines
  config = tiny_config(synthetic_jsonl)
  reports = baselines.run(config.data, tmp_path, num_examples=2, c_grid=(1.0, 4.0))
  assert set(reports) == {'top_k', 'tfidf_lr'}
  for name, report in reports.items():
    saved = json.loads((tmp_path / name / 'report.json').read_text())
    assert saved['model'] == name
    for part in ('test', 'test_at_0.5', 'validation'):
      for key in ('micro_f1', 'macro_f1', 'samples_f1', 'micro_precision', 'micro_recall',
                  'hamming_loss', 'map', 'loss'):
        assert np.isfinite(saved[part][key]), (name, part, key)
    assert len(saved['test_per_genre']) == np.asarray(saved['test_confusion_matrices']).shape[0]
    assert len(saved['examples']) == 2
    npz = np.load(tmp_path / name / baselines.PREDICTIONS_FILE)
    assert npz['probs'].shape == npz['labels'].shape == npz['pred'].shape
  assert reports['top_k']['chosen']['k'] in baselines.K_GRID
  assert reports['tfidf_lr']['chosen']['C'] in (1.0, 4.0)
  # Genre words make the synthetic data easy for TF-IDF, impossible for a constant guess.
  assert reports['tfidf_lr']['test']['micro_f1'] > reports['top_k']['test']['micro_f1'] + 0.2
  # Deterministic: a second run gives the same numbers.
  again = baselines.tfidf_lr(__import__('genre_jax.data.pipeline', fromlist=['x']).prepare(
      config.data), c_grid=(1.0, 4.0), num_examples=2)
  assert again['test'] == reports['tfidf_lr']['test']


def _fake_report(name, seed, micro, genres=('Action', 'Drama', 'Horror')):
  metrics = {'micro_f1': micro, 'macro_f1': micro - 0.1, 'samples_f1': micro, 'micro_precision':
             micro, 'micro_recall': micro, 'hamming_loss': 0.1, 'map': 0.5, 'loss': 0.3}
  return {
      'model': name, 'seed': seed, 'train_seconds': 10.0 + (seed or 0), 'best_epoch': 2,
      'epochs_run': 3, 'thresholds': {'global': 0.3},
      'validation': dict(metrics), 'test': dict(metrics),
      'test_at_0.5': {**metrics, 'micro_f1': micro - 0.05},
      'test_per_genre': [{'genre': g, 'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'support': 3}
                         for g in genres],
      'test_confusion_matrices': [[[5, 1], [2, 3]]] * len(genres),
      'examples': [{'id': 'm1', 'synopsis': 'a ghost', 'original': ['Horror'],
                    'predicted': ['Horror'], 'probabilities': {'Horror': 0.9}}],
  }


def test_report_on_synthetic_runs(tmp_path):
  from experiments import report
  runs, out = tmp_path / 'runs', tmp_path / 'out'
  out.mkdir()
  for name, micro in (('top_k', 0.4), ('tfidf_lr', 0.6)):
    (runs / 'baselines' / name).mkdir(parents=True)
    (runs / 'baselines' / name / 'report.json').write_text(
        json.dumps({**_fake_report(name, None, micro), 'chosen': {'x': 1}}))
  for seed, micro in ((0, 0.55), (1, 0.57), (2, 0.59)):
    d = runs / 'cnn' / f'seed{seed}'
    d.mkdir(parents=True)
    (d / 'report.json').write_text(json.dumps(_fake_report('cnn', seed, micro)))
    (d / 'metrics.jsonl').write_text('\n'.join(json.dumps(
        {'epoch': e, 'train_loss': 0.4 - 0.05 * e, 'val_loss': 0.35, 'val_micro_f1': 0.5,
         'val_micro_f1@0.5': 0.45}) for e in (1, 2, 3)) + '\n')
  rng = np.random.default_rng(0)
  for path in (runs / 'cnn' / 'seed0', runs / 'baselines' / 'tfidf_lr'):
    labels = rng.integers(0, 2, (40, 3))
    np.savez(path / 'test_predictions.npz', labels=labels, pred=rng.integers(0, 2, (40, 3)),
             probs=rng.random((40, 3)), n_words=rng.integers(5, 120, 40),
             classes=np.array(['Action', 'Drama', 'Horror']), ids=np.arange(40).astype(str))
  trial = {'best_epoch': 2, 'epochs_run': 3, 'train_seconds': 30.0}
  (out / 'search_results.json').write_text(json.dumps({'cnn': [
      {**trial, 'trial': 0, 'params': {'learning_rate': 0.003}, 'validation_micro_f1': 0.55},
      {**trial, 'trial': 1, 'params': {'learning_rate': 0.005}, 'validation_micro_f1': 0.56,
       'confirm': {'1': 0.50, '2': 0.52}},
      {**trial, 'trial': 2, 'params': {'learning_rate': 0.001}, 'validation_micro_f1': 0.54,
       'confirm': {'1': 0.54, '2': 0.55}}]}))
  summary = report.write_results(runs, out)

  assert summary['complete'] is False  # Only one row has seeds.
  assert summary['best'] == 'cnn'
  stat = summary['rows']['cnn']['test']['micro_f1']
  assert stat['mean'] == pytest.approx(0.57) and stat['std'] == pytest.approx(0.02)
  assert summary['baselines']['tfidf_lr']['test']['micro_f1']['std'] == 0.0
  text = (out / 'RESULTS.md').read_text()
  assert 'PARTIAL RESULTS' in text
  assert '| Tuned CNN | 0,1,2 | 0.570 ± 0.020 |' in text
  assert 'NOT reached' in text  # 0.57 < 0.60 (TF-IDF) and < 0.58.
  assert 'Tuned CNN micro-F1 ≥ 0.58: **NOT reached** (0.5700 ± 0.0200 over' in text
  assert 'Seed LSTM | missing' in text
  assert '## Where the models fail' in text and '| 21–40 words |' in text
  # The search winner is the best confirmed 3-seed mean (trial 2), not the best seed-0 trial.
  assert '| 2 **(best)** | 0.5400 | 0.5400, 0.5500 | 0.5433 |' in text
  assert '| 1 | 0.5600 | 0.5000, 0.5200 | 0.5267 |' in text
  for figure in ('curves.png', 'per_genre_f1.png', 'confusion_matrices.png'):
    assert (out / 'figures' / figure).stat().st_size > 1000
    assert f'figures/{figure}' in text
  assert json.loads((out / 'results.json').read_text())['best'] == 'cnn'
  # Without the run directories, RESULTS.md is redrawn from results.json to the same text.
  import shutil
  shutil.rmtree(runs)
  (out / 'RESULTS.md').unlink()
  report.main(['--out', str(out), '--from-results', '--runs', str(runs)])
  assert (out / 'RESULTS.md').read_text() == text


@pytest.mark.parametrize('arch', ['cnn', 'lstm', 'cnn_lstm', 'minilm'])
def test_search_configs_are_valid(arch):
  """The search's starting points and a sampled trial make valid configs (no training)."""
  from experiments import search
  from genre_jax import run_config
  for params in search.START[arch]:
    config = search.make_config(arch, params)
    run_config.check_config(config)
    assert config.model.name == {'minilm': 'pretrained'}.get(arch, arch) and config.seed == 0
  optuna = pytest.importorskip('optuna')
  trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
  config = search.make_config(arch, search.space(trial, arch))
  run_config.check_config(config)
  assert isinstance(config.model.conv_kernel_sizes, tuple)


def test_search_results_of_one_architecture_keep_the_others(tmp_path, monkeypatch):
  """Two searches at once (different architectures) do not overwrite each other's records."""
  from experiments import search
  monkeypatch.setattr(search, 'RESULTS', tmp_path / 'search_results.json')
  first = search.load_results().setdefault('cnn', [])  # Process 1 reads (empty) ...
  search.save_results('lstm', [{'trial': 0}])  # ... process 2 writes its record ...
  first.append({'trial': 0, 'x': 1})
  merged = search.save_results('cnn', first)  # ... then process 1 writes its own.
  assert merged == {'lstm': [{'trial': 0}], 'cnn': [{'trial': 0, 'x': 1}]}
  assert search.load_results() == merged


def test_retrain_reruns_recorded_settings_without_writing(tmp_path, monkeypatch):
  """`--retrain` trains a record's stored settings with the seeds asked for and leaves the file."""
  from experiments import search
  monkeypatch.setattr(search, 'RESULTS', tmp_path / 'search_results.json')
  search.save_results('cnn', [{'trial': 0, 'params': {'learning_rate': 0.003},
                               'validation_micro_f1': 0.55, 'confirm': {'1': 0.54}}])
  before = search.RESULTS.read_text()
  calls = []

  def fake_run_trial(arch, params, workdir):
    calls.append((arch, params, workdir.name))
    return {'validation_micro_f1': 0.5 + params['seed'] / 100}

  monkeypatch.setattr(search, 'run_trial', fake_run_trial)
  out = search.retrain('cnn', [0], [0, 1, 2], tmp_path)
  assert calls == [('cnn', {'learning_rate': 0.003, 'seed': s}, f'retrain0_seed{s}')
                   for s in (0, 1, 2)]
  assert [(r['recorded'], r['validation_micro_f1']) for r in out] == [
      (0.55, 0.5), (0.54, 0.51), (None, 0.52)]
  assert search.RESULTS.read_text() == before
  with pytest.raises(ValueError):
    search.retrain('cnn', [3], [0], tmp_path)


def test_minilm_search_starts_from_its_config():
  """`--arch minilm` changes only the searched values of configs/minilm.py."""
  import configs
  from experiments import search
  shipped = configs.load('minilm')
  trial = search.make_config('minilm', search.START['minilm'][0])
  changed = {k for k, v in trial.to_dict().items() if shipped.to_dict()[k] != v}
  assert changed <= {'learning_rate', 'num_epochs', 'progress_bar'}
  assert trial.model.to_dict() == shipped.model.to_dict()


@pytest.mark.parametrize('arch', report_lib.SEARCHED_CONFIGS)
def test_tuned_configs_are_the_search_winners(arch):
  """configs/<arch>.py holds exactly the best validation trial of experiments/search_results.json."""
  import configs
  from experiments import search
  results = search.load_results()
  if not results.get(arch):
    pytest.skip(f'no search results for {arch}')
  shipped = configs.load(arch).to_dict()
  searched = search.make_config(arch, search.best_params(arch, results)).to_dict()
  shipped.pop('progress_bar'), searched.pop('progress_bar')
  assert json.loads(json.dumps(shipped)) == json.loads(json.dumps(searched))


def test_minilm_rows_are_optional_and_marked(tmp_path):
  """MiniLM rows: only run when named; a single seed is marked and the MiniLM target incomplete."""
  from experiments import report, reproduce
  assert [r for r, _, _ in reproduce.selected_rows()] == [r for r, _, _ in report.ROWS]
  assert [r for r, _, _ in reproduce.selected_rows(['minilm', 'cnn'])] == ['cnn', 'minilm']
  with pytest.raises(ValueError):
    reproduce.selected_rows(['bert'])
  assert reproduce._load_config('configs/minilm.py', 1, num_epochs=1).num_epochs == 1
  runs, out = tmp_path / 'runs', tmp_path / 'out'
  out.mkdir()
  (runs / 'baselines' / 'tfidf_lr').mkdir(parents=True)
  (runs / 'baselines' / 'tfidf_lr' / 'report.json').write_text(
      json.dumps({**_fake_report('tfidf_lr', None, 0.6), 'chosen': {'C': 1}}))
  for row, micro in (('cnn', 0.58), ('minilm', 0.70)):
    d = runs / row / 'seed0'
    d.mkdir(parents=True)
    (d / 'report.json').write_text(json.dumps(_fake_report(row, 0, micro)))
    (d / 'config.json').write_text(json.dumps({'num_epochs': 1}))
  summary = report.write_results(runs, out)
  assert summary['best'] == 'cnn'  # Best from-scratch row; MiniLM is judged separately.
  text = (out / 'RESULTS.md').read_text()
  assert '| Fine-tuned MiniLM | 0 (**only 1 of 3 seeds**) | 0.700 | 0.600 |' in text
  assert '| MiniLM, frozen encoder + head | not run (optional) |' in text
  assert ('- Fine-tuned MiniLM micro-F1 ≥ 0.65 on test (mean of 3 seeds), above the best '
          'from-scratch model and TF-IDF + LR: **incomplete (fewer than 3 seeds') in text
  configured = reproduce._load_config('configs/minilm.py', 0).num_epochs
  assert f'1 (capped; config file: {configured})' in text  # The epoch cap is recorded.


def test_ensemble_rows_compete_for_best_model(tmp_path):
  """Ensemble rows are tabled like the others; the best genre_jax model is chosen on validation
  among rows with every seed, the best from-scratch model among the trained rows only."""
  from experiments import report, reproduce
  runs, out = tmp_path / 'runs', tmp_path / 'out'
  out.mkdir()
  (runs / 'baselines' / 'tfidf_lr').mkdir(parents=True)
  (runs / 'baselines' / 'tfidf_lr' / 'report.json').write_text(
      json.dumps({**_fake_report('tfidf_lr', None, 0.6), 'chosen': {'C': 1}}))
  for row, micro in (('cnn', 0.58), ('ensemble', 0.62)):
    for seed in (0, 1, 2):
      d = runs / row / f'seed{seed}'
      d.mkdir(parents=True)
      (d / 'report.json').write_text(json.dumps(_fake_report(row, seed, micro)))
  summary = report.write_results(runs, out)
  assert summary['best'] == 'ensemble'
  assert report.best_row(summary) == 'cnn'
  text = (out / 'RESULTS.md').read_text()
  assert '| Ensemble: tuned LSTM + CNN + CNN→LSTM | 0,1,2 | 0.620 ± 0.000 |' in text
  assert ('Best genre_jax model (any row with seeds 0, 1, 2: from scratch, pretrained or an '
          'ensemble), chosen by mean validation micro-F1: Ensemble: tuned LSTM + CNN + CNN→LSTM, '
          'test micro-F1 0.620 ± 0.000') in text
  assert '**reached** (difference +0.020)' in text
  assert 'not built (needs its members)' in text  # ensemble_minilm: no MiniLM runs.
  # Ensembles are built, not trained: reproduce refuses them as rows, and builds none without
  # every member.
  with pytest.raises(ValueError):
    reproduce.selected_rows(['ensemble'])
  timings = {'runs': {}}
  reproduce.build_ensembles(runs, (0,), timings)
  assert timings == {'runs': {}}


def test_timings_of_concurrent_reproduce_calls_are_merged(tmp_path):
  """Two reproduce calls on different rows (each holding its own dict) keep each other's times."""
  from experiments import reproduce
  first, second = reproduce._timings(tmp_path), reproduce._timings(tmp_path)
  first['runs']['cnn/seed0'] = 20.0
  reproduce._save_timings(tmp_path, first)
  second['runs']['minilm/seed0'] = 600.0
  reproduce._save_timings(tmp_path, second)
  saved = json.loads((tmp_path / 'timings.json').read_text())
  assert saved['runs'] == {'cnn/seed0': 20.0, 'minilm/seed0': 600.0}
  assert saved['total_seconds'] == 620.0


def test_speed_verdicts_of_the_distilled_models():
  from experiments import report
  speed = {'teacher': 50.0, 'distill_cnn': 1990.0}
  slow = report._speed_verdict(speed, 'distill_cnn', 4000.0)
  assert '≥ 4,000 synopses/s and ≥ 10× the teacher: **NOT reached** (1,990 synopses/s, 39.8×' in slow
  assert '≥ 10× the teacher: **reached** (1,990' in report._speed_verdict(speed, 'distill_cnn', 0.0)
  assert '**NOT reached**' in report._speed_verdict({'teacher': 500.0, 'x': 4500.0}, 'x', 4000.0)
  assert 'not measured' in report._speed_verdict({}, 'distill_cnn', 4000.0)
