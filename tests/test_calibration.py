"""Calibration metrics against hand computations and scikit-learn; temperature scaling; its file,
and how train, evaluate and predict use it."""

import json

import numpy as np
import pytest
from sklearn import calibration as sk_calibration
from sklearn import metrics as sk_metrics

from genre_jax import calibration
from genre_jax import inference
from genre_jax import metrics
from genre_jax import trainer
from genre_jax.errors import GenreJaxError
from tests.conftest import run_module, tiny_config


def _sklearn_ece(y, p, n_bins=15):
  prob_true, prob_pred = sk_calibration.calibration_curve(y, p, n_bins=n_bins,
                                                          strategy='uniform')
  bins = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], p)
  counts = np.bincount(bins, minlength=n_bins)
  counts = counts[counts > 0]
  return float(np.sum(counts / len(p) * np.abs(prob_true - prob_pred)))


def test_ece_by_hand():
  # Two genres, four rows. Genre 0: bins [0.0667, 0.1333) holds 0.1 (label 0) and 0.1 (label 1):
  # gap |0.5 - 0.1| = 0.4 over 2 of 4; bin [0.8667, 0.9333) holds 0.9, 0.9 (labels 1, 1):
  # gap 0.1 over 2 of 4 -> ECE 0.25. Genre 1: every probability 0.5, half the labels 1 -> 0.
  y = np.array([[0, 1], [1, 0], [1, 1], [1, 0]])
  p = np.array([[0.1, 0.5], [0.1, 0.5], [0.9, 0.5], [0.9, 0.5]])
  out = metrics.calibration_metrics(y, p)
  assert out['macro_ece'] == pytest.approx((0.25 + 0.0) / 2)
  assert out['ece'] == pytest.approx((2 * 0.4 + 2 * 0.1 + 0) / 8)
  assert out['brier'] == pytest.approx(np.mean((p - y) ** 2))


def test_calibration_metrics_match_sklearn():
  rng = np.random.default_rng(0)
  p = rng.uniform(size=(500, 6))
  y = (rng.uniform(size=p.shape) < p ** 1.5).astype(int)
  out = metrics.calibration_metrics(y, p)
  assert out['ece'] == pytest.approx(_sklearn_ece(y.ravel(), p.ravel()))
  assert out['macro_ece'] == pytest.approx(
      np.mean([_sklearn_ece(y[:, g], p[:, g]) for g in range(6)]))
  assert out['brier'] == pytest.approx(sk_metrics.brier_score_loss(y.ravel(), p.ravel()))
  assert out['nll'] == pytest.approx(sk_metrics.log_loss(y.ravel(), p.ravel()))
  with pytest.raises(ValueError):
    metrics.calibration_metrics(y, p * 2)


def _overconfident(n=4000, genres=3, scale=(3.0, 3.0, 3.0), seed=0):
  rng = np.random.default_rng(seed)
  z = rng.normal(0, 1.5, size=(n, genres))
  y = (rng.uniform(size=z.shape) < 1 / (1 + np.exp(-z))).astype(np.float32)
  return (z * np.asarray(scale)).astype(np.float32), y


def test_temperature_recovers_the_overconfidence_and_lowers_nll():
  z, y = _overconfident()
  c = calibration.fit(z, y)
  assert c.temperature == pytest.approx(3.0, rel=0.1)
  assert c.validation_nll['calibrated'] < c.validation_nll['uncalibrated']
  before = metrics.calibration_metrics(y, calibration.IDENTITY.probs(z))
  after = metrics.calibration_metrics(y, c.probs(z))
  assert after['ece'] < before['ece'] / 2 and after['macro_ece'] < 0.03


def test_per_genre_temperatures():
  z, y = _overconfident(scale=(0.5, 1.0, 4.0))
  c = calibration.fit(z, y, per_genre=True)
  np.testing.assert_allclose(c.temperature, [0.5, 1.0, 4.0], rtol=0.15)


def test_never_raises_validation_nll():
  z, y = _overconfident(n=50, scale=(1.0, 1.0, 1.0))
  for per_genre in (False, True):
    c = calibration.fit(z, y, per_genre=per_genre)
    assert calibration.nll(c.logits(z), y) <= calibration.nll(z, y) + 1e-12
  assert calibration.fit(z, y, method='none') is calibration.IDENTITY


def test_file_round_trip_and_refusals(tmp_path):
  z, y = _overconfident(scale=(0.5, 1.0, 4.0))
  c = calibration.fit(z, y, per_genre=True)
  calibration.write(tmp_path, c, ['a', 'b', 'c'])
  back = calibration.read(tmp_path, ['a', 'b', 'c'])
  np.testing.assert_allclose(back.probs(z), c.probs(z), atol=1e-6)
  assert calibration.read(tmp_path / 'none', ['a']) is calibration.IDENTITY
  for bad in ('{', '{"method": "temperature", "per_genre": false, "temperature": -1}',
              json.dumps({**c.to_dict(), 'classes': ['a', 'b', 'x']})):
    (tmp_path / calibration.FILE).write_text(bad)
    with pytest.raises(GenreJaxError, match='calibration.json is not a valid calibration file'):
      calibration.read(tmp_path, ['a', 'b', 'c'])


def test_training_fits_it_and_evaluate_and_predict_serve_it(synthetic_jsonl, tmp_path):
  workdir = tmp_path / 'run'
  report = trainer.train_and_evaluate(tiny_config(synthetic_jsonl), str(workdir))
  saved = json.loads((workdir / calibration.FILE).read_text())
  assert saved['method'] == 'temperature' and report['calibration']['temperature'] > 0
  nll = saved['validation_nll']
  assert nll['calibrated'] <= nll['uncalibrated']
  for key in ('ece', 'macro_ece', 'brier', 'nll'):
    assert key in report['test'] and key in report['test']['uncalibrated']
  run = inference.load_run(workdir)
  z, _ = run.logits_and_loss(['a robot explosion'])
  np.testing.assert_allclose(run.probs(['a robot explosion']), run.calibration.probs(z))
  summary = json.loads(run_module('genre_jax.evaluate', '--workdir', workdir
                                  ).stdout.strip().splitlines()[-1])
  assert summary['calibration'] == 'temperature'
  assert summary['ece'] == pytest.approx(report['test']['ece'], abs=1e-6)
  assert summary['uncalibrated']['brier'] == pytest.approx(
      report['test']['uncalibrated']['brier'], abs=1e-6)
  line = json.loads(run_module('genre_jax.predict', '--workdir', workdir, '--json',
                               'a robot explosion').stdout.strip())
  assert line['calibration'] == 'temperature'
  assert max(line['top'].values()) == pytest.approx(float(run.probs(['a robot explosion']).max()),
                                                    abs=1e-4)
