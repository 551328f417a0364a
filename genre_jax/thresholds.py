"""Decision thresholds for multi-label scores, tuned on validation data.

Usage rule: tune on the VALIDATION split only, then `apply` the thresholds
unchanged to the test split. Tuning on test data leaks labels into the
reported scores; nothing here can check that, the caller must.

Conventions:

* A genre is predicted when `score >= threshold` (compared in float64, so a
  float32 score and a Python-float threshold give the same answer here and
  in the tuners).
* Candidates come from a fixed grid, default `DEFAULT_GRID` =
  0.05, 0.06, ..., 0.95 (91 points), suited to sigmoid probabilities. Pass
  your own grid for logits.
* Ties: when several grid points reach the same best F1, the one closest to
  0.5 wins, and of two equally close the smaller one. So data that cannot
  tell thresholds apart (e.g. no positives at all) gives 0.5.
* All counting is vectorised over thresholds: scores are sorted once and the
  number of scores `>= t` for every grid point `t` comes from
  `np.searchsorted`, so cost is O(n G log(n G) + T log(n G)).
"""

import numpy as np

from genre_jax import metrics

DEFAULT_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def _check(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
  """Validates `[n, G]` {0,1} labels and finite scores; bool and float64."""
  y_true = np.asarray(y_true)
  y_score = np.asarray(y_score, dtype=np.float64)
  if y_true.ndim != 2 or y_true.shape != y_score.shape:
    raise ValueError(
        f'y_true {y_true.shape} and y_score {y_score.shape} must be the same '
        '[n, G] shape')
  if y_true.shape[0] == 0:
    raise ValueError('no examples to tune thresholds on')
  if y_true.dtype != bool and not np.isin(y_true, (0, 1)).all():
    raise ValueError('y_true must hold only 0 and 1')
  if not np.isfinite(y_score).all():
    raise ValueError('y_score holds NaN or infinite values')
  return y_true.astype(bool), y_score


def _check_grid(grid) -> np.ndarray:
  grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
  if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all():
    raise ValueError('grid must be a non-empty 1-D array of finite values')
  return grid


def _count_at_least(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
  """`[T]` int64: for each grid point t, how many of `values` are >= t."""
  values = np.sort(values)
  return values.size - np.searchsorted(values, grid, side='left')


def _f1(tp: np.ndarray, fp: np.ndarray, num_pos: int) -> np.ndarray:
  """F1 = 2 tp / (tp + fp + num_pos), 0 where the denominator is 0."""
  den = (tp + fp + num_pos).astype(np.float64)
  return np.divide(2.0 * tp, den, out=np.zeros(den.shape), where=den > 0)


def _best(grid: np.ndarray, f1: np.ndarray) -> float:
  """Grid point with the highest F1; ties -> closest to 0.5, then smaller."""
  cand = np.flatnonzero(f1 == f1.max())
  dist = np.round(np.abs(grid[cand] - 0.5), 12)
  return float(grid[cand[np.lexsort((grid[cand], dist))[0]]])


def micro_f1_curve(y_true: np.ndarray, y_score: np.ndarray,
                   grid: np.ndarray | None = None,
                   at_least_one: bool = False) -> np.ndarray:
  """Micro-F1 of `apply(y_score, t, at_least_one)` for every grid point t.

  Args:
    y_true: `[n, G]` {0, 1} labels.
    y_score: `[n, G]` float scores.
    grid: `[T]` candidate thresholds (default `DEFAULT_GRID`).
    at_least_one: evaluate with the at-least-one rule of `apply`.

  Returns:
    `[T]` float64 micro-F1 values.
  """
  y_true, y_score = _check(y_true, y_score)
  grid = _check_grid(grid)
  tp = _count_at_least(y_score[y_true], grid)
  fp = _count_at_least(y_score[~y_true], grid)
  if at_least_one:
    # A row whose top score m is < t predicts nothing on its own, so `apply`
    # switches on its top genre (np.argmax): one extra TP or FP for that row.
    rows = np.arange(y_score.shape[0])
    top = np.argmax(y_score, axis=1)
    top_score = y_score[rows, top]
    top_hit = y_true[rows, top]
    tp = tp + (top_hit.sum() - _count_at_least(top_score[top_hit], grid))
    fp = fp + ((~top_hit).sum() - _count_at_least(top_score[~top_hit], grid))
  return _f1(tp, fp, int(y_true.sum()))


def tune_global(y_true: np.ndarray, y_score: np.ndarray,
                grid: np.ndarray | None = None,
                at_least_one: bool = False) -> float:
  """One threshold for all genres, maximising micro-F1 on (validation) data.

  Args:
    y_true: `[n, G]` {0, 1} validation labels.
    y_score: `[n, G]` float validation scores.
    grid: `[T]` candidate thresholds (default `DEFAULT_GRID`).
    at_least_one: score each candidate with the at-least-one rule applied,
      as `apply(..., at_least_one=True)` will use it.

  Returns:
    The best grid point (ties: closest to 0.5, then the smaller).
  """
  grid = _check_grid(grid)
  return _best(grid, micro_f1_curve(y_true, y_score, grid, at_least_one))


def genre_f1_curves(y_true: np.ndarray, y_score: np.ndarray,
                    grid: np.ndarray | None = None) -> np.ndarray:
  """Each genre's F1 at every grid point.

  Args:
    y_true: `[n, G]` {0, 1} labels.
    y_score: `[n, G]` float scores.
    grid: `[T]` candidate thresholds (default `DEFAULT_GRID`).

  Returns:
    `[G, T]` float64 F1 values (0 for a genre with no positives and no
    predictions, as sklearn with zero_division=0).
  """
  y_true, y_score = _check(y_true, y_score)
  grid = _check_grid(grid)
  curves = []
  for g in range(y_true.shape[1]):  # G is small; inner work is vectorised.
    col, pos = y_score[:, g], y_true[:, g]
    tp = _count_at_least(col[pos], grid)
    fp = _count_at_least(col[~pos], grid)
    curves.append(_f1(tp, fp, int(pos.sum())))
  return np.stack(curves).reshape(y_true.shape[1], grid.size)


def tune_per_genre(y_true: np.ndarray, y_score: np.ndarray,
                   grid: np.ndarray | None = None,
                   fallback: float | None = None) -> np.ndarray:
  """One threshold per genre, maximising that genre's F1 on validation data.

  The at-least-one rule is not taken into account (it couples the genres);
  `apply(..., at_least_one=True)` still works with the result.

  Args:
    y_true: `[n, G]` {0, 1} validation labels.
    y_score: `[n, G]` float validation scores.
    grid: `[T]` candidate thresholds (default `DEFAULT_GRID`).
    fallback: threshold for genres with no positive validation example
      (their F1 cannot be improved); default `tune_global(y_true, y_score,
      grid)`.

  Returns:
    `[G]` float64 thresholds (ties: closest to 0.5, then the smaller).
  """
  y_true, y_score = _check(y_true, y_score)
  grid = _check_grid(grid)
  curves = genre_f1_curves(y_true, y_score, grid)
  has_pos = y_true.any(axis=0)
  if fallback is None and not has_pos.all():
    fallback = tune_global(y_true, y_score, grid)
  return np.array([_best(grid, c) if p else float(fallback)
                   for c, p in zip(curves, has_pos)], dtype=np.float64)


def apply(y_score: np.ndarray, threshold: float | np.ndarray,
          at_least_one: bool = False) -> np.ndarray:
  """Turns scores into 0/1 predictions.

  Args:
    y_score: `[n, G]` float scores.
    threshold: a float for all genres, or `[G]` per-genre thresholds.
    at_least_one: for rows where no genre reaches its threshold, predict the
      top-scoring genre (first one on ties, as `np.argmax`).

  Returns:
    `[n, G]` int8 predictions, `y_score >= threshold` (float64 comparison).
  """
  y_score = np.asarray(y_score, dtype=np.float64)
  threshold = np.asarray(threshold, dtype=np.float64)
  if y_score.ndim != 2:
    raise ValueError(f'y_score must be 2-D [n, G], got shape {y_score.shape}')
  if threshold.ndim > 1 or (threshold.ndim == 1 and
                            threshold.shape[0] != y_score.shape[1]):
    raise ValueError(
        f'threshold must be a float or [{y_score.shape[1]}], got shape '
        f'{threshold.shape}')
  y_pred = (y_score >= threshold).astype(np.int8)
  if at_least_one and y_score.shape[1] > 0:
    empty = np.flatnonzero(~y_pred.any(axis=1))
    y_pred[empty, np.argmax(y_score[empty], axis=1)] = 1
  return y_pred


POLICIES = ('global', 'global+at_least_one', 'per_genre', 'per_genre+at_least_one')


def cross_validate(y_true: np.ndarray, y_score: np.ndarray, *, folds: int = 2,
                   repeats: int = 20, seed: int = 0,
                   grid: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
  """How well each threshold policy generalises, judged inside one (validation) split.

  For each of `repeats` shuffles (`sklearn.model_selection.KFold`), every fold's thresholds are
  tuned on the other folds as `tune_global` / `tune_per_genre` would on the whole split, and the
  fold's micro-F1 is taken at them. A policy that only fits noise (per-genre thresholds on a few
  hundred rows) scores lower here than on the rows it was tuned on.

  Args:
    y_true: `[n, G]` {0, 1} labels; y_score: `[n, G]` scores.
    folds, repeats, seed: the cross-validation.
    grid: `[T]` candidate thresholds (default `DEFAULT_GRID`).

  Returns:
    {policy: (mean, std) of micro-F1 over the folds x repeats held-out folds} for `POLICIES`.
  """
  from sklearn.model_selection import KFold  # pylint: disable=g-import-not-at-top
  y_true, y_score = _check(y_true, y_score)
  scores = {p: [] for p in POLICIES}
  for r in range(repeats):
    for fit, held in KFold(folds, shuffle=True, random_state=seed + r).split(y_score):
      for at_least_one, suffix in ((False, ''), (True, '+at_least_one')):
        best = tune_global(y_true[fit], y_score[fit], grid, at_least_one)
        per = tune_per_genre(y_true[fit], y_score[fit], grid, fallback=best)
        for name, t in (('global', best), ('per_genre', per)):
          pred = apply(y_score[held], t, at_least_one)
          scores[name + suffix].append(metrics.multilabel_metrics(y_true[held], pred)['micro_f1'])
  return {p: (float(np.mean(s)), float(np.std(s))) for p, s in scores.items()}
