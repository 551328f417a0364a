"""Tests for genre_jax.thresholds, brute-forced with scikit-learn F1."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from genre_jax import thresholds


def _case(seed, n=300, g=6, density=0.25, decimals=2, dtype=np.float64):
  rng = np.random.default_rng(seed)
  y_true = (rng.random((n, g)) < density).astype(np.float32)
  logits = 2.0 * y_true - 1.2 + rng.normal(size=(n, g))
  y_score = 1 / (1 + np.exp(-logits))
  if decimals is not None:  # ties, and scores lying exactly on grid points
    y_score = np.round(y_score, decimals)
  return y_true, y_score.astype(dtype)


CASES = [
    dict(seed=0),
    dict(seed=1, n=60, g=4, density=0.1, decimals=1),
    dict(seed=2, n=500, g=10, density=0.15, decimals=None, dtype=np.float32),
    dict(seed=3, n=25, g=5, density=0.05, decimals=2),  # some empty genres
]


def _brute_micro(y_true, y_score, grid, at_least_one):
  return np.array([
      f1_score(y_true, thresholds.apply(y_score, t, at_least_one),
               average='micro', zero_division=0) for t in grid])


def test_default_grid():
  grid = thresholds.DEFAULT_GRID
  assert grid.size == 91 and grid[0] == 0.05 and grid[-1] == 0.95
  assert 0.5 in grid


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('at_least_one', [False, True])
def test_tune_global_is_best_on_grid(case, at_least_one):
  y_true, y_score = _case(**case)
  grid = thresholds.DEFAULT_GRID
  brute = _brute_micro(y_true, y_score, grid, at_least_one)
  curve = thresholds.micro_f1_curve(y_true, y_score, grid, at_least_one)
  np.testing.assert_allclose(curve, brute, rtol=0, atol=1e-12)
  t = thresholds.tune_global(y_true, y_score, at_least_one=at_least_one)
  assert t in grid
  best = f1_score(y_true, thresholds.apply(y_score, t, at_least_one),
                  average='micro', zero_division=0)
  assert best >= brute.max() - 1e-12


def test_tune_global_custom_grid_for_logits():
  y_true, y_score = _case(5, decimals=None)
  logits = np.log(y_score / (1 - y_score))
  grid = np.linspace(-3, 3, 61)
  t = thresholds.tune_global(y_true, logits, grid)
  brute = _brute_micro(y_true, logits, grid, False)
  assert t in grid and brute[list(grid).index(t)] == brute.max()


@pytest.mark.parametrize('case', CASES)
def test_tune_per_genre_is_best_per_genre(case):
  y_true, y_score = _case(**case)
  grid = thresholds.DEFAULT_GRID
  ts = thresholds.tune_per_genre(y_true, y_score, fallback=0.42)
  curves = thresholds.genre_f1_curves(y_true, y_score, grid)
  assert ts.shape == (y_true.shape[1],) and ts.dtype == np.float64
  # [T, G]: every genre's F1 at every grid point, from sklearn.
  brute_all = np.array([
      f1_score(y_true, thresholds.apply(y_score, t), average=None,
               zero_division=0) for t in grid])
  np.testing.assert_allclose(curves, brute_all.T, rtol=0, atol=1e-12)
  for g in range(y_true.shape[1]):
    brute = brute_all[:, g]
    if y_true[:, g].any():
      assert ts[g] in grid
      assert brute[list(grid).index(ts[g])] >= brute.max() - 1e-12
    else:
      assert ts[g] == 0.42


def test_per_genre_fallback_defaults_to_global():
  y_true, y_score = _case(6, n=100, g=4)
  y_true[:, 2] = 0  # no positives in validation
  ts = thresholds.tune_per_genre(y_true, y_score)
  assert ts[2] == thresholds.tune_global(y_true, y_score)


def test_ties_prefer_closest_to_half_then_smaller():
  # No positives at all: every threshold gives F1 0 -> 0.5.
  assert thresholds.tune_global(np.zeros((5, 2)), np.random.rand(5, 2)) == 0.5
  # Perfectly separated at any t in (0.2, 0.8]: 0.5 is the closest to 0.5.
  y = np.array([[1], [0]])
  s = np.array([[0.8], [0.2]])
  assert thresholds.tune_global(y, s) == 0.5
  # Separated only for t in (0.1, 0.3]: the plateau's closest point is 0.3.
  s = np.array([[0.3], [0.1]])
  assert thresholds.tune_global(y, s) == 0.3
  assert thresholds.tune_per_genre(y, s)[0] == 0.3
  # Equidistant 0.4 and 0.6 both best -> the smaller.
  grid = np.array([0.4, 0.6])
  s = np.array([[0.9], [0.1]])
  assert thresholds.tune_global(y, s, grid) == 0.4


def test_apply_scalar_and_per_genre():
  s = np.array([[0.2, 0.5, 0.7], [0.6, 0.1, 0.3]], dtype=np.float32)
  out = thresholds.apply(s, 0.5)
  assert out.dtype == np.int8
  np.testing.assert_array_equal(out, [[0, 1, 1], [1, 0, 0]])
  out = thresholds.apply(s, np.array([0.1, 0.6, 0.8]))
  np.testing.assert_array_equal(out, [[1, 0, 0], [1, 0, 0]])
  with pytest.raises(ValueError, match='threshold'):
    thresholds.apply(s, np.array([0.5, 0.5]))


def test_apply_at_least_one_leaves_no_empty_rows():
  y_true, y_score = _case(8, n=200, g=6)
  plain = thresholds.apply(y_score, 0.9)
  assert (plain.sum(axis=1) == 0).any()  # the case is not trivial
  forced = thresholds.apply(y_score, 0.9, at_least_one=True)
  assert (forced.sum(axis=1) >= 1).all()
  nonempty = plain.sum(axis=1) > 0
  np.testing.assert_array_equal(forced[nonempty], plain[nonempty])
  empty = ~nonempty
  assert (forced[empty].sum(axis=1) == 1).all()
  np.testing.assert_array_equal(
      forced[empty].argmax(axis=1), y_score[empty].argmax(axis=1))
  # Per-genre thresholds too.
  ts = thresholds.tune_per_genre(y_true, y_score)
  assert (thresholds.apply(y_score, ts, True).sum(axis=1) >= 1).all()


def test_input_validation():
  with pytest.raises(ValueError, match='shape'):
    thresholds.tune_global(np.zeros((3, 2)), np.zeros((3, 3)))
  with pytest.raises(ValueError, match='0 and 1'):
    thresholds.tune_global(np.full((3, 2), 2), np.zeros((3, 2)))
  with pytest.raises(ValueError, match='grid'):
    thresholds.tune_global(np.zeros((3, 2)), np.zeros((3, 2)), grid=[])
  with pytest.raises(ValueError, match='examples'):
    thresholds.tune_per_genre(np.zeros((0, 2)), np.zeros((0, 2)))


def test_tuning_is_fast_on_realistic_sizes():
  import time
  y_true, y_score = _case(9, n=5000, g=20, decimals=None, dtype=np.float32)
  start = time.perf_counter()
  thresholds.tune_global(y_true, y_score, at_least_one=True)
  thresholds.tune_per_genre(y_true, y_score)
  assert time.perf_counter() - start < 2.0


def test_cross_validate_prefers_per_genre_thresholds_only_when_genres_differ():
  from sklearn.metrics import f1_score
  rng = np.random.default_rng(0)
  n, g = 2000, 4
  y = (rng.random((n, g)) < 0.3).astype(np.float32)
  # Genre j's positives score around 0.2 + 0.2 j: one global threshold cannot fit them all.
  shift = np.array([0.2, 0.4, 0.6, 0.8])
  score = np.clip(np.where(y > 0, shift, shift - 0.15) + rng.normal(0, 0.04, (n, g)), 0, 1)
  cv = thresholds.cross_validate(y, score, repeats=2)
  assert set(cv) == set(thresholds.POLICIES)
  assert cv['per_genre'][0] > cv['global'][0] + 0.05
  # Each held-out fold's figure is sklearn's micro-F1 at thresholds tuned on the other fold.
  from sklearn.model_selection import KFold
  expected = []
  for fit, held in KFold(2, shuffle=True, random_state=0).split(score):
    t = thresholds.tune_global(y[fit], score[fit])
    expected.append(f1_score(y[held], thresholds.apply(score[held], t), average='micro'))
  one = thresholds.cross_validate(y, score, repeats=1)
  np.testing.assert_allclose(one['global'][0], np.mean(expected))
  # Few rows and genres on one scale: per-genre thresholds fit noise and lose held out.
  y_small, s_small = _case(5, n=120, g=6, decimals=None)
  small = thresholds.cross_validate(y_small, s_small, repeats=10)
  assert small['per_genre'][0] < small['global'][0]
