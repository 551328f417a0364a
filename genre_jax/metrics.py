"""Multi-label classification metrics in plain numpy.

Every function here matches scikit-learn 1.9 with ``zero_division=0`` (the
tests compare against it), but sklearn is not imported: these run inside the
training loop and must stay cheap and dependency-free.

Conventions (shared by all functions):

* ``y_true`` and ``y_pred`` are ``[n, G]`` arrays with values in {0, 1}
  (any numeric or bool dtype; anything else raises ``ValueError``).
* ``y_score`` is ``[n, G]`` float, higher means "more likely"; probabilities
  or logits both work (only the ordering matters).
* A ratio whose denominator is zero is 0 (sklearn ``zero_division=0``):
  - a genre never predicted has precision 0;
  - a genre absent from the labels has recall 0 and F1 0, also when it is
    never predicted either (sklearn 1.9 gives F1 = 0, not 1, in that case);
  - a row with no true and no predicted genre has sample-F1 0 (sklearn 1.9
    ``average='samples'`` does the same, so an all-zero ``y_true`` and
    ``y_pred`` gives ``samples_f1 == 0`` although the prediction is exact).
* ``macro_*`` averages over all G genres, including genres absent from the
  labels (which therefore pull the macro scores down), like sklearn.
* ``weighted_f1`` weights per-genre F1 by support; if no genre has any
  support it is the plain mean (sklearn's fallback), i.e. 0.
* Ranking metrics (only when ``y_score`` is given):
  - ``micro_roc_auc`` is the ROC-AUC of the flattened ``[n * G]`` arrays
    (``roc_auc_score(average='micro')``); NaN when the flattened labels hold
    a single class.
  - ``macro_roc_auc`` is the mean ROC-AUC over the genres that have at least
    one positive AND one negative example; the others are skipped (sklearn
    1.9 would warn and return NaN for the whole macro average). NaN when no
    genre qualifies.
  - ``map`` is the mean average precision over genres with at least one
    positive (a genre whose examples are all positive counts, with AP 1;
    sklearn would give AP 0 to genres without positives and include them).
    NaN when no genre has a positive.
  - ROC-AUC is the trapezoid under the ROC curve on distinct score
    thresholds (ties share one point, equal to the Mann-Whitney statistic
    with tied ranks averaged); AP is sklearn's step-wise
    ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds (no interpolation).
"""

from collections.abc import Sequence
import math

import numpy as np

CLASSIFICATION_KEYS = (
    'micro_f1', 'macro_f1', 'weighted_f1', 'samples_f1', 'micro_precision',
    'micro_recall', 'macro_precision', 'macro_recall', 'hamming_loss',
    'subset_accuracy')
RANKING_KEYS = ('micro_roc_auc', 'macro_roc_auc', 'map')
CALIBRATION_KEYS = ('ece', 'macro_ece', 'brier', 'nll')
ECE_BINS = 15


def _as_binary(y: np.ndarray, name: str) -> np.ndarray:
  """Checks a `[n, G]` {0, 1} array and returns it as bool."""
  y = np.asarray(y)
  if y.ndim != 2:
    raise ValueError(f'{name} must be 2-D [n, G], got shape {y.shape}')
  if y.shape[0] == 0:
    raise ValueError(f'{name} has no rows')
  if y.dtype != bool and not np.isin(y, (0, 1)).all():
    raise ValueError(f'{name} must hold only 0 and 1')
  return y.astype(bool)


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
  y_true = _as_binary(y_true, 'y_true')
  y_pred = _as_binary(y_pred, 'y_pred')
  if y_true.shape != y_pred.shape:
    raise ValueError(
        f'y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape')
  return y_true, y_pred


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """Elementwise `num / den` as float64, 0 where `den == 0`."""
  num = np.asarray(num, dtype=np.float64)
  den = np.asarray(den, dtype=np.float64)
  return np.divide(num, den, out=np.zeros(np.broadcast_shapes(
      num.shape, den.shape)), where=den != 0)


def _counts(y_true: np.ndarray, y_pred: np.ndarray, axis: int):
  """Returns (tp, pred, true) counts summed along `axis`, as int64."""
  tp = np.sum(y_true & y_pred, axis=axis, dtype=np.int64)
  pred = np.sum(y_pred, axis=axis, dtype=np.int64)
  true = np.sum(y_true, axis=axis, dtype=np.int64)
  return tp, pred, true


def _prf(tp, pred, true):
  """Precision, recall and F1 with zero_division=0 (sklearn's formulas)."""
  return (_divide(tp, pred), _divide(tp, true), _divide(2 * tp, true + pred))


def confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
  """Per-genre 2x2 confusion matrices.

  Args:
    y_true: `[n, G]` {0, 1} true labels.
    y_pred: `[n, G]` {0, 1} predicted labels.

  Returns:
    `[G, 2, 2]` int64, sklearn `multilabel_confusion_matrix` layout:
    `out[g] = [[tn, fp], [fn, tp]]`.
  """
  y_true, y_pred = _check_pair(y_true, y_pred)
  tp, pred, true = _counts(y_true, y_pred, axis=0)
  fp = pred - tp
  fn = true - tp
  tn = y_true.shape[0] - tp - fp - fn
  return np.stack([tn, fp, fn, tp], axis=-1).reshape(-1, 2, 2)


def per_genre(y_true: np.ndarray, y_pred: np.ndarray,
              classes: Sequence[str]) -> list[dict]:
  """Per-genre precision, recall, F1 and support (zero_division=0).

  Args:
    y_true: `[n, G]` {0, 1} true labels.
    y_pred: `[n, G]` {0, 1} predicted labels.
    classes: G genre names, in column order.

  Returns:
    A list of G dicts `dict(genre=str, precision=float, recall=float,
    f1=float, support=int)` in column order; support is the number of true
    examples of the genre.
  """
  y_true, y_pred = _check_pair(y_true, y_pred)
  if len(classes) != y_true.shape[1]:
    raise ValueError(
        f'{len(classes)} class names for {y_true.shape[1]} label columns')
  tp, pred, true = _counts(y_true, y_pred, axis=0)
  precision, recall, f1 = _prf(tp, pred, true)
  return [
      dict(genre=str(c), precision=float(p), recall=float(r), f1=float(f),
           support=int(s))
      for c, p, r, f, s in zip(classes, precision, recall, f1, true)
  ]


def _check_score(y_score, shape) -> np.ndarray:
  """Checks finite `[n, G]` scores of the given shape; returns float64."""
  y_score = np.asarray(y_score, dtype=np.float64)
  if y_score.shape != shape:
    raise ValueError(f'y_score has shape {y_score.shape}, expected {shape}')
  if not np.isfinite(y_score).all():
    raise ValueError('y_score holds NaN or infinite values')
  return y_score


def _binary_curve(y: np.ndarray, s: np.ndarray):
  """Cumulative (tps, fps) at each distinct threshold, highest first.

  Same as sklearn's `_binary_clf_curve`: the scores are sorted in decreasing
  order and ties collapse into one point (the last index of each tie group).

  Args:
    y: `[m]` bool labels.
    s: `[m]` float scores.

  Returns:
    tps, fps: `[k]` int64, k = number of distinct scores.
  """
  order = np.argsort(s, kind='mergesort')[::-1]
  s = s[order]
  y = y[order]
  ends = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
  tps = np.cumsum(y, dtype=np.int64)[ends]
  fps = ends + 1 - tps
  return tps, fps


def _roc_auc(y: np.ndarray, s: np.ndarray) -> float:
  """Binary ROC-AUC (trapezoid on distinct thresholds); NaN if one class."""
  tps, fps = _binary_curve(y, s)
  if tps[-1] == 0 or fps[-1] == 0:
    return math.nan
  tpr = np.r_[0.0, tps / tps[-1]]
  fpr = np.r_[0.0, fps / fps[-1]]
  return float(np.trapezoid(tpr, fpr))


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
  """Binary step-wise average precision; NaN if there is no positive."""
  tps, fps = _binary_curve(y, s)
  if tps[-1] == 0:
    return math.nan
  precision = tps / (tps + fps)
  recall = tps / tps[-1]
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ranking_per_genre(y_true: np.ndarray,
                      y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-genre ROC-AUC and average precision.

  Args:
    y_true: `[n, G]` {0, 1} true labels.
    y_score: `[n, G]` float scores.

  Returns:
    roc_auc: `[G]` float64, NaN for genres with no positive or no negative.
    ap: `[G]` float64, NaN for genres with no positive.
  """
  y_true = _as_binary(y_true, 'y_true')
  y_score = _check_score(y_score, y_true.shape)
  num_genres = y_true.shape[1]
  auc = np.array([_roc_auc(y_true[:, g], y_score[:, g])
                  for g in range(num_genres)], dtype=np.float64)
  ap = np.array([_average_precision(y_true[:, g], y_score[:, g])
                 for g in range(num_genres)], dtype=np.float64)
  return auc, ap


def _nanmean(x: np.ndarray) -> float:
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else math.nan


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                       y_score: np.ndarray | None = None) -> dict[str, float]:
  """Standard multi-label metrics (see the module docstring for edge cases).

  Args:
    y_true: `[n, G]` {0, 1} true labels.
    y_pred: `[n, G]` {0, 1} predicted labels (thresholded scores).
    y_score: optional `[n, G]` float scores; adds the ranking metrics.

  Returns:
    A dict of Python floats with keys `CLASSIFICATION_KEYS` (micro_f1,
    macro_f1, weighted_f1, samples_f1, micro_precision, micro_recall,
    macro_precision, macro_recall, hamming_loss, subset_accuracy) and, when
    `y_score` is given, `RANKING_KEYS` (micro_roc_auc, macro_roc_auc, map).
  """
  y_true, y_pred = _check_pair(y_true, y_pred)
  out = {}

  # Per genre, then micro (pooled counts) and macro / weighted averages.
  tp, pred, true = _counts(y_true, y_pred, axis=0)
  precision, recall, f1 = _prf(tp, pred, true)
  micro_p, micro_r, micro_f = _prf(tp.sum(), pred.sum(), true.sum())
  out['micro_f1'] = float(micro_f)
  out['macro_f1'] = float(f1.mean())
  out['weighted_f1'] = float(
      np.average(f1, weights=true) if true.sum() > 0 else f1.mean())

  # Per example: F1 of each row, averaged over rows.
  row_tp, row_pred, row_true = _counts(y_true, y_pred, axis=1)
  out['samples_f1'] = float(_divide(2 * row_tp, row_true + row_pred).mean())

  out['micro_precision'] = float(micro_p)
  out['micro_recall'] = float(micro_r)
  out['macro_precision'] = float(precision.mean())
  out['macro_recall'] = float(recall.mean())
  out['hamming_loss'] = float(np.mean(y_true != y_pred))
  out['subset_accuracy'] = float(np.mean(np.all(y_true == y_pred, axis=1)))

  if y_score is not None:
    y_score = _check_score(y_score, y_true.shape)
    out['micro_roc_auc'] = _roc_auc(y_true.ravel(), y_score.ravel())
    auc, ap = ranking_per_genre(y_true, y_score)
    out['macro_roc_auc'] = _nanmean(auc)
    out['map'] = _nanmean(ap)
  return out


def _ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
  """Expected calibration error of 1-D labels and probabilities: sum over equal-width bins of
  (bin size / n) * |mean label - mean probability|, binned as sklearn's `calibration_curve`."""
  bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p)
  total = np.bincount(bins, minlength=n_bins)
  gap = np.abs(np.bincount(bins, weights=y, minlength=n_bins)
               - np.bincount(bins, weights=p, minlength=n_bins))
  return float(gap.sum() / max(total.sum(), 1))


def calibration_metrics(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS,
                        eps: float = 1e-7) -> dict[str, float]:
  """How well probabilities match frequencies.

  Args:
    y_true: [n, G] {0, 1} labels.
    probs: [n, G] probabilities in [0, 1].
    n_bins: equal-width bins of [0, 1] for the ECE.
    eps: probabilities are clipped to [eps, 1 - eps] for the NLL.

  Returns:
    `ece`: the ECE over all n * G genre decisions (micro); `macro_ece`: the mean of the G
    per-genre ECEs; `brier`: the mean squared error of the probabilities; `nll`: the mean binary
    cross-entropy (natural log) over all decisions.
  """
  y = _as_binary(y_true, 'y_true').astype(np.float64)
  p = np.asarray(probs, np.float64)
  if p.shape != y.shape or p.min() < 0 or p.max() > 1:
    raise ValueError(f'probs must be [n, G] = {y.shape} in [0, 1], got {p.shape}')
  clipped = np.clip(p, eps, 1 - eps)
  return {
      'ece': _ece(y.ravel(), p.ravel(), n_bins),
      'macro_ece': float(np.mean([_ece(y[:, g], p[:, g], n_bins) for g in range(y.shape[1])])),
      'brier': float(np.mean((p - y) ** 2)),
      'nll': float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))),
  }


def format_metrics(metrics: dict[str, float],
                   keys: Sequence[str] | None = None,
                   digits: int = 4) -> str:
  """One-line summary, e.g. `micro_f1=0.6123 macro_f1=0.4410`.

  Args:
    metrics: name -> value.
    keys: names to show, in order (missing names are skipped); default all.
    digits: decimals for float values.

  Returns:
    The names and values joined by spaces.
  """
  keys = list(metrics) if keys is None else [k for k in keys if k in metrics]
  parts = []
  for k in keys:
    v = metrics[k]
    parts.append(f'{k}={v:.{digits}f}' if isinstance(v, float) else f'{k}={v}')
  return ' '.join(parts)
