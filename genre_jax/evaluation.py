"""Scoring a loaded run or ensemble (see `inference.load_run`) on its test split or another file.

Everything goes through `run.probs_and_loss(texts, labels)`, which `inference.Run` and
`inference.Ensemble` both implement, so each model tokenises the raw texts its own way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genre_jax import inference
from genre_jax import metrics as metrics_lib
from genre_jax import thresholds as thresholds_lib
from genre_jax.data import pipeline
from genre_jax.errors import GenreJaxError

SUMMARY_KEYS = ('micro_f1', 'macro_f1', 'samples_f1', 'weighted_f1', 'micro_precision',
                'micro_recall', 'macro_precision', 'macro_recall', 'hamming_loss',
                'subset_accuracy', 'micro_roc_auc', 'macro_roc_auc', 'map')


def score(run: inference.Run | inference.Ensemble, texts: list[str], labels: np.ndarray,
          source: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
  """Metrics at the run's tuned threshold(s) and at 0.5 for raw texts.

  Args:
    texts: n synopses; labels: [n, G] float32 in the run's label order.
  """
  probs, loss = run.probs_and_loss(texts, labels)
  at_least_one = run.thresholds['at_least_one']
  y_pred = thresholds_lib.apply(probs, run.threshold, at_least_one)
  tuned = metrics_lib.multilabel_metrics(labels, y_pred, probs)
  at_half = metrics_lib.multilabel_metrics(labels, thresholds_lib.apply(probs, 0.5), None)
  thr = run.thresholds
  summary = {'source': source, 'n': int(len(labels)), 'loss': loss,
             **{k: tuned[k] for k in SUMMARY_KEYS},
             'micro_f1@0.5': at_half['micro_f1'], 'macro_f1@0.5': at_half['macro_f1'],
             'threshold': 'per_genre' if thr.get('per_genre') else thr['global'],
             'threshold_tuned': bool(thr.get('tuned', False)), **(extra or {})}
  return {'summary': summary,
          'per_genre': metrics_lib.per_genre(labels, y_pred, run.labels.classes),
          'thresholds': thr}


def evaluate_test_split(run: inference.Run | inference.Ensemble) -> dict[str, Any]:
  """Re-scores the run's own test split (same split and label set as in training)."""
  data = run.load_data()
  if list(data.labels.classes) != list(run.labels.classes):
    raise GenreJaxError(f'the data now gives the label set {list(data.labels.classes)}, but the '
                        f'run in {run.workdir} was trained on {list(run.labels.classes)}.')
  test = data.arrays['test']
  return score(run, test.texts, test.labels, source='test split')


def evaluate_file(run: inference.Run | inference.Ensemble, *, dataset: str | None,
                  path: str | None, format: str | None, text_column: str,
                  genre_column: str) -> dict[str, Any]:
  """Scores every usable record of a data file; genres unknown to the run are ignored."""
  data_config = run.config.data.copy_and_resolve_references()
  with data_config.unlocked():
    data_config.name = dataset or data_config.name
    data_config.path, data_config.format = path, format
    data_config.text_column, data_config.genre_column = text_column, genre_column
    data_config.id_column = data_config.title_column = None
    data_config.max_examples = None
  records, report = pipeline.load(data_config)
  labels, unknown = run.labels.transform(list(records['genres']))
  known = labels.sum(axis=1) > 0
  extra = {'unknown_genres': unknown, 'dropped_no_known_genre': int((~known).sum()),
           'data_report': report}
  return score(run, list(records['text'][known]), labels[known],
               source=report.get('source', path or dataset), extra=extra)


def format_result(result: dict[str, Any]) -> str:
  s = result['summary']
  lines = [f'{s["source"]}: n={s["n"]}  threshold={s["threshold"]}',
           f'  micro-F1 {s["micro_f1"]:.4f}  macro-F1 {s["macro_f1"]:.4f}  samples-F1 '
           f'{s["samples_f1"]:.4f}  precision {s["micro_precision"]:.4f}  recall '
           f'{s["micro_recall"]:.4f}  hamming {s["hamming_loss"]:.4f}  mAP {s["map"]:.4f}',
           f'  at 0.5: micro-F1 {s["micro_f1@0.5"]:.4f}  macro-F1 {s["macro_f1@0.5"]:.4f}']
  if s.get('unknown_genres'):
    lines.append('  genres unknown to the run (ignored): ' + ', '.join(
        f'{g} ({c})' for g, c in sorted(s['unknown_genres'].items())))
  if s.get('dropped_no_known_genre'):
    lines.append(f'  {s["dropped_no_known_genre"]} records had no genre known to the run and '
                 'were not scored.')
  lines.append('  per genre: ' + ', '.join(
      f'{r["genre"]} {r["f1"]:.2f}' for r in result['per_genre']))
  return '\n'.join(lines)
