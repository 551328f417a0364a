"""Non-neural baselines in the trainer's protocol: same split, thresholds tuned on validation.

* `top_k`: always predict the k genres most frequent in the training split; k = 1..4 is chosen
  on validation micro-F1. Its "probabilities" are the training frequencies (used for mAP and the
  loss), the same for every synopsis.
* `tfidf_lr`: TF-IDF (word 1-2 grams, sublinear tf) + one-vs-rest logistic regression
  (scikit-learn, liblinear); C is chosen from `C_GRID` on validation micro-F1 at the tuned
  threshold, then the global threshold tuned on validation is applied to the test split once.

Both are deterministic: repeated runs give the same numbers, so their "± std" over seeds is 0.
Each writes a report with the trainer's report.json layout (test, test_at_0.5, validation,
test_per_genre, test_confusion_matrices, examples, thresholds, train_seconds).

Run:
  python -m experiments.baselines --config configs/cnn.py --out runs/experiments/baselines
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import numpy as np

import configs
from genre_jax import metrics as metrics_lib
from genre_jax import thresholds as thresholds_lib
from genre_jax.data import pipeline

C_GRID = (1.0, 2.0, 4.0, 8.0, 16.0)
PREDICTIONS_FILE = 'test_predictions.npz'  # For the error analysis in experiments/report.py.
K_GRID = (1, 2, 3, 4)


def bce(y_true: np.ndarray, probs: np.ndarray) -> float:
  """Mean binary cross-entropy over examples and genres (the trainer's unweighted loss)."""
  p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
  y = np.asarray(y_true, np.float64)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def save_predictions(path, arrays, probs, pred, classes) -> None:
  """Test-split probabilities and predictions, with what the error analysis groups by."""
  np.savez_compressed(
      path, ids=np.asarray(arrays.ids), probs=np.asarray(probs, np.float32),
      pred=np.asarray(pred, np.int8), labels=np.asarray(arrays.labels, np.int8),
      n_words=np.asarray([len(t.split()) for t in arrays.texts]), classes=np.asarray(classes))


def _examples(arrays, probs, y_pred, classes, k: int) -> list[dict[str, Any]]:
  """The first `k` test synopses, as the trainer's report shows them."""
  out = []
  for i in range(min(k, len(arrays.texts))):
    order = np.argsort(-probs[i], kind='stable')
    out.append({
        'id': arrays.ids[i], 'synopsis': arrays.texts[i],
        'original': [classes[j] for j in np.flatnonzero(arrays.labels[i])],
        'predicted': [classes[j] for j in order if y_pred[i, j]],
        'probabilities': {classes[j]: round(float(probs[i, j]), 3) for j in order[:5]},
    })
  return out


def _report(name, data, val_probs, test_probs, val_pred, test_pred, threshold, seconds,
            extra, num_examples, at_half=None) -> dict[str, Any]:
  """A report in the trainer's layout from validation / test scores and predictions.

  `at_half`: the test predictions reported as "at threshold 0.5"; default `test_probs >= 0.5`.
  """
  classes = list(data.labels.classes)
  val, test = data.validation, data.test
  if at_half is None:
    at_half = thresholds_lib.apply(test_probs, 0.5)
  return {
      'model': name, 'seed': None, 'deterministic': True,
      'train_seconds': round(seconds, 2),
      'thresholds': {'global': threshold, 'tuned': threshold is not None, 'per_genre': None,
                     'classes': classes},
      'validation': {'loss': bce(val.labels, val_probs),
                     **metrics_lib.multilabel_metrics(val.labels, val_pred, val_probs)},
      'test': {'loss': bce(test.labels, test_probs),
               **metrics_lib.multilabel_metrics(test.labels, test_pred, test_probs)},
      'test_at_0.5': {'loss': bce(test.labels, test_probs),
                      **metrics_lib.multilabel_metrics(test.labels, at_half, test_probs)},
      'test_per_genre': metrics_lib.per_genre(test.labels, test_pred, classes),
      'test_confusion_matrices': metrics_lib.confusion_matrices(test.labels, test_pred).tolist(),
      'examples': _examples(test, test_probs, test_pred, classes, num_examples),
      **extra,
      '_predictions': {'probs': test_probs, 'pred': test_pred},  # Saved apart, not in JSON.
  }


def top_k(data, num_examples: int = 5) -> dict[str, Any]:
  """Always predicts the k most frequent training genres; k chosen on validation micro-F1."""
  t0 = time.time()
  freq = data.train.labels.mean(axis=0)  # Also its "probabilities" (mAP, loss).
  order = np.argsort(-freq, kind='stable')
  val, test = data.validation, data.test

  def predict(n, k):
    y = np.zeros((n, len(freq)), np.int8)
    y[:, order[:k]] = 1
    return y

  search = {}
  for k in K_GRID:
    if k <= len(freq):
      search[k] = metrics_lib.multilabel_metrics(val.labels, predict(len(val), k))['micro_f1']
  best_k = max(search, key=lambda k: (search[k], -k))
  val_probs = np.broadcast_to(freq, val.labels.shape).astype(np.float64)
  test_probs = np.broadcast_to(freq, test.labels.shape).astype(np.float64)
  return _report('top_k', data, val_probs, test_probs, predict(len(val), best_k),
                 predict(len(test), best_k), None, time.time() - t0,
                 {'chosen': {'k': best_k, 'genres': [data.labels.classes[j]
                                                     for j in order[:best_k]]},
                  'search': {'validation_micro_f1_by_k': search}}, num_examples,
                 at_half=predict(len(test), best_k))  # No threshold: the same predictions.


def tfidf_lr(data, c_grid=C_GRID, num_examples: int = 5) -> dict[str, Any]:
  """TF-IDF (1-2 grams, sublinear) + one-vs-rest logistic regression, C chosen on validation."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression
  from sklearn.multiclass import OneVsRestClassifier

  t0 = time.time()
  train, val, test = data.train, data.validation, data.test
  vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                               token_pattern=r'(?u)\b\w+\b')
  x_train = vectorizer.fit_transform(train.texts)
  x_val, x_test = vectorizer.transform(val.texts), vectorizer.transform(test.texts)
  y_train = train.labels.astype(np.int64)
  always = y_train.all(axis=0) | ~y_train.any(axis=0)  # A genre without both classes.

  def fit(c):
    cols = np.flatnonzero(~always)
    clf = OneVsRestClassifier(LogisticRegression(C=c, solver='liblinear', max_iter=1000))
    clf.fit(x_train, y_train[:, cols])
    return clf, cols

  def probs(model, x):
    clf, cols = model
    out = np.tile(y_train.mean(axis=0).astype(np.float64), (x.shape[0], 1))
    out[:, cols] = clf.predict_proba(x)
    return out

  search, best = {}, None
  for c in c_grid:
    model = fit(c)
    p = probs(model, x_val)
    thr = thresholds_lib.tune_global(val.labels, p)
    score = metrics_lib.multilabel_metrics(val.labels, thresholds_lib.apply(p, thr))['micro_f1']
    search[str(c)] = {'validation_micro_f1': score, 'threshold': thr}
    print(f'tfidf_lr: C={c:g} validation micro-F1 {score:.4f} (threshold {thr:.2f})', flush=True)
    if best is None or score > best[0]:
      best = (score, c, thr, model, p)
  _, c, thr, model, val_probs = best
  test_probs = probs(model, x_test)
  return _report('tfidf_lr', data, val_probs, test_probs, thresholds_lib.apply(val_probs, thr),
                 thresholds_lib.apply(test_probs, thr), thr, time.time() - t0,
                 {'chosen': {'C': c, 'ngram_range': [1, 2], 'sublinear_tf': True, 'min_df': 2,
                             'vocabulary': len(vectorizer.vocabulary_)},
                  'search': {'by_C': search}}, num_examples)


def run(data_config, out_dir, num_examples: int = 5, c_grid=C_GRID) -> dict[str, dict]:
  """Both baselines on `data_config`'s split; writes `out_dir/<name>/report.json`."""
  data = pipeline.prepare(data_config)
  reports = {'top_k': top_k(data, num_examples),
             'tfidf_lr': tfidf_lr(data, c_grid, num_examples)}
  for name, report in reports.items():
    path = pathlib.Path(out_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    predictions = report.pop('_predictions')
    save_predictions(path / PREDICTIONS_FILE, data.test, predictions['probs'],
                     predictions['pred'], list(data.labels.classes))
    (path / 'report.json').write_text(json.dumps(report, indent=1))
    t = report['test']
    print(f'{name}: test micro-F1 {t["micro_f1"]:.4f} macro-F1 {t["macro_f1"]:.4f} '
          f'({report["chosen"]})', flush=True)
  return reports


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/cnn.py',
                      help='config whose data section (data set, split) is used')
  parser.add_argument('--out', default='runs/experiments/baselines')
  args = parser.parse_args(argv)
  config = configs.load(args.config)
  run(config.data, args.out, config.num_examples_to_show)


if __name__ == '__main__':
  main()
