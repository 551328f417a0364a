"""Tests for genre_jax.metrics: every value is checked against scikit-learn."""

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from genre_jax import metrics

TOL = dict(rtol=1e-12, atol=1e-12)


def _sk_reference(y_true, y_pred, y_score=None):
  """The same metrics computed with scikit-learn (zero_division=0)."""
  ref = {}
  for avg in ('micro', 'macro', 'weighted', 'samples'):
    ref[f'{avg}_f1'] = skm.f1_score(
        y_true, y_pred, average=avg, zero_division=0)
  for avg in ('micro', 'macro'):
    ref[f'{avg}_precision'] = skm.precision_score(
        y_true, y_pred, average=avg, zero_division=0)
    ref[f'{avg}_recall'] = skm.recall_score(
        y_true, y_pred, average=avg, zero_division=0)
  ref['hamming_loss'] = skm.hamming_loss(y_true, y_pred)
  ref['subset_accuracy'] = skm.accuracy_score(y_true, y_pred)
  if y_score is not None:
    pos = y_true.sum(axis=0)
    both = (pos > 0) & (pos < y_true.shape[0])
    flat = y_true.ravel()
    ref['micro_roc_auc'] = (
        skm.roc_auc_score(y_true, y_score, average='micro')
        if 0 < flat.sum() < flat.size else math.nan)
    # sklearn is NaN for the macro average as soon as one genre is undefined:
    # compare on the subset of genres where ROC-AUC is defined.
    ref['macro_roc_auc'] = (
        skm.roc_auc_score(y_true[:, both], y_score[:, both], average='macro')
        if both.any() else math.nan)
    # sklearn gives AP 0 (with a warning) to genres with no positive; we skip
    # them, so compare with the mean of per-column AP over the others.
    aps = [skm.average_precision_score(y_true[:, g], y_score[:, g])
           for g in np.flatnonzero(pos > 0)]
    ref['map'] = float(np.mean(aps)) if aps else math.nan
  return ref


def _assert_matches_sklearn(y_true, y_pred, y_score=None):
  got = metrics.multilabel_metrics(y_true, y_pred, y_score)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    ref = _sk_reference(y_true, y_pred, y_score)
  assert set(got) == set(ref)
  for k, v in ref.items():
    assert isinstance(got[k], float), k
    np.testing.assert_allclose(got[k], v, err_msg=k, equal_nan=True, **TOL)

  classes = [f'g{i}' for i in range(y_true.shape[1])]
  rows = metrics.per_genre(y_true, y_pred, classes)
  p, r, f, s = skm.precision_recall_fscore_support(
      y_true, y_pred, average=None, zero_division=0)
  assert [row['genre'] for row in rows] == classes
  np.testing.assert_allclose([row['precision'] for row in rows], p, **TOL)
  np.testing.assert_allclose([row['recall'] for row in rows], r, **TOL)
  np.testing.assert_allclose([row['f1'] for row in rows], f, **TOL)
  assert [row['support'] for row in rows] == list(s)

  cm = metrics.confusion_matrices(y_true, y_pred)
  assert cm.dtype == np.int64 and cm.shape == (y_true.shape[1], 2, 2)
  np.testing.assert_array_equal(
      cm, skm.multilabel_confusion_matrix(y_true, y_pred))
  return got


def _random_case(seed, n, g, density, score_decimals=None):
  rng = np.random.default_rng(seed)
  y_true = (rng.random((n, g)) < density).astype(np.float32)
  y_score = np.clip(0.35 * y_true + 0.65 * rng.random((n, g)), 0, 1)
  if score_decimals is not None:  # coarse scores: many ties
    y_score = np.round(y_score, score_decimals)
  y_pred = (y_score >= 0.5).astype(np.int8)
  return y_true, y_pred, y_score


@pytest.mark.parametrize('seed,n,g,density,decimals', [
    (0, 200, 8, 0.3, None),
    (1, 57, 5, 0.1, 1),          # heavy ties
    (2, 500, 20, 0.15, 2),
    (3, 31, 12, 0.05, None),     # sparse: some genres have no positives
    (4, 80, 3, 0.8, 1),          # dense
    (5, 10, 30, 0.2, 0),         # scores are only 0 or 1
])
def test_random_inputs_match_sklearn(seed, n, g, density, decimals):
  y_true, y_pred, y_score = _random_case(seed, n, g, density, decimals)
  _assert_matches_sklearn(y_true, y_pred)
  _assert_matches_sklearn(y_true, y_pred, y_score)


def test_float32_scores_and_bool_labels():
  y_true, y_pred, y_score = _random_case(7, 120, 6, 0.3, None)
  _assert_matches_sklearn(y_true.astype(bool), y_pred.astype(bool),
                          y_score.astype(np.float32))


def _edge_case():
  # genre 0: normal; 1: never predicted; 2: absent from the labels (but
  # predicted once); 3: absent and never predicted. Row 3 is all zero in both,
  # row 4 is all zero in y_true only, row 5 all zero in y_pred only.
  y_true = np.array([[1, 1, 0, 0],
                     [0, 1, 0, 0],
                     [1, 0, 0, 0],
                     [0, 0, 0, 0],
                     [0, 0, 0, 0],
                     [1, 1, 0, 0]])
  y_pred = np.array([[1, 0, 0, 0],
                     [1, 0, 1, 0],
                     [0, 0, 0, 0],
                     [0, 0, 0, 0],
                     [1, 0, 0, 0],
                     [0, 0, 0, 0]])
  y_score = np.array([[.9, .2, .1, .0],
                      [.8, .4, .6, .0],
                      [.4, .4, .1, .0],
                      [.1, .1, .1, .0],
                      [.7, .3, .2, .0],
                      [.4, .4, .3, .0]])
  return y_true, y_pred, y_score


def test_edge_cases_match_sklearn():
  y_true, y_pred, y_score = _edge_case()
  got = _assert_matches_sklearn(y_true, y_pred, y_score)
  # Hand-checked values documenting the conventions.
  rows = metrics.per_genre(y_true, y_pred, list('abcd'))
  assert rows[1]['precision'] == 0.0  # never predicted
  assert rows[2]['recall'] == 0.0 and rows[2]['f1'] == 0.0  # absent
  assert rows[3]['f1'] == 0.0  # absent and never predicted: 0, not 1
  # macro averages over all 4 genres, absent ones included.
  assert got['macro_f1'] == pytest.approx(rows[0]['f1'] / 4)
  # samples_f1: the all-zero row 3 scores 0 (sklearn 1.9 behaviour).
  # Row F1: [2/3, 0, 0, 0, 0, 0].
  assert got['samples_f1'] == pytest.approx((2 / 3) / 6)
  # ROC-AUC only over genres 0 and 1; mAP over genres 0 and 1.
  auc, ap = metrics.ranking_per_genre(y_true, y_score)
  assert np.isnan(auc[2:]).all() and np.isnan(ap[2:]).all()
  assert got['macro_roc_auc'] == pytest.approx(np.mean(auc[:2]))
  assert got['map'] == pytest.approx(np.mean(ap[:2]))


def test_all_zero_predictions():
  y_true, _, y_score = _random_case(11, 40, 5, 0.3, 1)
  y_pred = np.zeros_like(y_true)
  got = _assert_matches_sklearn(y_true, y_pred, y_score)
  for k in ('micro_f1', 'macro_f1', 'weighted_f1', 'samples_f1',
            'micro_precision', 'micro_recall'):
    assert got[k] == 0.0


def test_all_zero_everything():
  y = np.zeros((4, 3))
  got = _assert_matches_sklearn(y, y, np.full((4, 3), 0.5))
  # A perfect (empty) prediction still gets F1 0 with zero_division=0.
  assert got['micro_f1'] == got['samples_f1'] == got['weighted_f1'] == 0.0
  assert got['hamming_loss'] == 0.0 and got['subset_accuracy'] == 1.0
  assert math.isnan(got['micro_roc_auc'])
  assert math.isnan(got['macro_roc_auc']) and math.isnan(got['map'])


def test_all_positive_genre():
  # Genre 0 is positive everywhere: AUC undefined, AP defined (= 1).
  y_true = np.array([[1, 0], [1, 1], [1, 0], [1, 1]])
  y_score = np.array([[.1, .2], [.5, .9], [.3, .9], [.2, .1]])
  y_pred = (y_score >= 0.5).astype(int)
  got = _assert_matches_sklearn(y_true, y_pred, y_score)
  auc, ap = metrics.ranking_per_genre(y_true, y_score)
  assert np.isnan(auc[0]) and ap[0] == 1.0
  assert got['map'] == pytest.approx((1.0 + ap[1]) / 2)


def test_single_example():
  y_true = np.array([[1, 0, 1]])
  y_pred = np.array([[1, 1, 0]])
  y_score = np.array([[.9, .6, .3]])
  got = _assert_matches_sklearn(y_true, y_pred, y_score)
  assert math.isnan(got['macro_roc_auc'])  # every genre has one class
  assert got['micro_roc_auc'] == pytest.approx(0.5)


def test_roc_auc_equals_mann_whitney_with_ties():
  rng = np.random.default_rng(3)
  y = rng.random(300) < 0.3
  s = np.round(rng.random(300), 1)  # 11 distinct values, many ties
  pos, neg = s[y], s[~y]
  mw = ((pos[:, None] > neg[None, :]).sum()
        + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
  got = metrics.multilabel_metrics(y[:, None], y[:, None], s[:, None])
  assert got['macro_roc_auc'] == pytest.approx(mw, abs=1e-12)
  assert got['micro_roc_auc'] == pytest.approx(mw, abs=1e-12)


def test_average_precision_with_ties_hand_computed():
  # Scores .9 (pos), .5 (pos, neg tied), .1 (neg): thresholds .9 -> P=1 R=.5;
  # .5 -> P=2/3 R=1. AP = .5 * 1 + .5 * 2/3.
  y = np.array([[1], [1], [0], [0]])
  s = np.array([[.9], [.5], [.5], [.1]])
  got = metrics.multilabel_metrics(y, y, s)
  assert got['map'] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-15)


def test_input_validation():
  y = np.zeros((3, 2))
  with pytest.raises(ValueError, match='shape'):
    metrics.multilabel_metrics(y, np.zeros((3, 3)))
  with pytest.raises(ValueError, match='0 and 1'):
    metrics.multilabel_metrics(y, np.full((3, 2), 0.5))
  with pytest.raises(ValueError, match='2-D'):
    metrics.multilabel_metrics(np.zeros(3), np.zeros(3))
  with pytest.raises(ValueError, match='no rows'):
    metrics.multilabel_metrics(np.zeros((0, 2)), np.zeros((0, 2)))
  with pytest.raises(ValueError, match='y_score'):
    metrics.multilabel_metrics(y, y, np.zeros((3, 1)))
  with pytest.raises(ValueError, match='NaN'):
    metrics.multilabel_metrics(y, y, np.full((3, 2), np.nan))
  with pytest.raises(ValueError, match='class names'):
    metrics.per_genre(y, y, ['a'])


def test_format_metrics():
  d = {'micro_f1': 0.61234, 'macro_f1': 0.5, 'n': 3}
  assert metrics.format_metrics(d) == 'micro_f1=0.6123 macro_f1=0.5000 n=3'
  assert metrics.format_metrics(d, ['macro_f1', 'nope'], digits=2) == (
      'macro_f1=0.50')
