"""The evaluation side: thresholds tuned on validation, the report of a run or an ensemble, its
printed summary, and scoring a loaded run (see `inference.load_run`) on its test split or a file.

Scoring goes through `run.logits_and_loss(texts, labels)` and `run.calibration`, which
`inference.Run` and `inference.Ensemble` both have, so each model tokenises the raw texts its own
way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genre_jax import calibration as calibration_lib
from genre_jax import inference
from genre_jax import metrics as metrics_lib
from genre_jax import thresholds as thresholds_lib
from genre_jax.data import pipeline
from genre_jax.errors import GenreJaxError

SUMMARY_KEYS = ('micro_f1', 'macro_f1', 'samples_f1', 'weighted_f1', 'micro_precision',
                'micro_recall', 'macro_precision', 'macro_recall', 'hamming_loss',
                'subset_accuracy', 'micro_roc_auc', 'macro_roc_auc', 'map')


def epoch_metrics(y_true: np.ndarray, probs: np.ndarray, at_least_one: bool) -> dict[str, float]:
  """Validation metrics of one epoch at its own tuned global threshold (and at 0.5).

  Args:
    y_true: [n, G] labels; probs: [n, G] probabilities.
  """
  thr = thresholds_lib.tune_global(y_true, probs, at_least_one=at_least_one)
  tuned = metrics_lib.multilabel_metrics(
      y_true, thresholds_lib.apply(probs, thr, at_least_one), probs)
  at_half = metrics_lib.multilabel_metrics(y_true, thresholds_lib.apply(probs, 0.5), None)
  out = {k: tuned[k] for k in ('micro_f1', 'macro_f1', 'samples_f1', 'micro_precision',
                               'micro_recall', 'map')}
  out['threshold'] = thr
  out['micro_f1@0.5'] = at_half['micro_f1']
  return out


def tune_thresholds(y_val: np.ndarray, val_probs: np.ndarray, classes: list[str], *,
                    at_least_one: bool, per_genre: bool) -> dict[str, Any]:
  """Thresholds tuned on validation, as written to `thresholds.json`.

  Args:
    y_val: [n, G] validation labels; val_probs: [n, G] validation probabilities.
    classes: the G genre names.
    at_least_one: predict the top genre of rows with none above threshold.
    per_genre: also tune one threshold per genre (the global one is the fallback).
  """
  global_thr = thresholds_lib.tune_global(y_val, val_probs, at_least_one=at_least_one)
  per = (thresholds_lib.tune_per_genre(y_val, val_probs, fallback=global_thr)
         if per_genre else None)
  return {'global': float(global_thr), 'at_least_one': at_least_one, 'tuned': True,
          'per_genre': None if per is None else [float(t) for t in per], 'classes': classes}


def report_metrics(thr: dict[str, Any], val, val_probs: np.ndarray, val_loss: float, test,
                   test_logits: np.ndarray, test_loss: float, num_examples: int,
                   calib: calibration_lib.Calibration) -> dict[str, Any]:
  """The report's entries from `thresholds` to `examples`, at a calibration and thresholds fixed
  beforehand (on validation).

  Args:
    thr: from `tune_thresholds`.
    val, test: `SplitArrays` (labels [n, G], ids, texts); val_probs: [n, G] calibrated;
      test_logits: [n, G] before calibration; *_loss: mean loss.
    num_examples: how many test examples to show.
    calib: the calibration fitted on validation.
  """
  classes, at_least_one = thr['classes'], thr['at_least_one']
  chosen = thr['global'] if thr['per_genre'] is None else np.asarray(thr['per_genre'])
  test_probs = calib.probs(test_logits)
  y_pred = thresholds_lib.apply(test_probs, chosen, at_least_one)
  tuned = metrics_lib.multilabel_metrics(test.labels, y_pred, test_probs)
  at_half = metrics_lib.multilabel_metrics(
      test.labels, thresholds_lib.apply(test_probs, 0.5), test_probs)
  return {
      'thresholds': thr,
      'validation': {'loss': val_loss, **metrics_lib.multilabel_metrics(
          val.labels, thresholds_lib.apply(val_probs, chosen, at_least_one), val_probs),
                     **metrics_lib.calibration_metrics(val.labels, val_probs)},
      'test': {'loss': test_loss, **tuned, **calibration_report(test.labels, test_logits, calib)},
      'test_at_0.5': {'loss': test_loss, **at_half},
      'test_per_genre': metrics_lib.per_genre(test.labels, y_pred, classes),
      'test_confusion_matrices': metrics_lib.confusion_matrices(test.labels, y_pred).tolist(),
      'examples': _examples(test, test_probs, y_pred, classes, num_examples),
  }


def calibration_report(labels: np.ndarray, logits: np.ndarray,
                       calib: calibration_lib.Calibration) -> dict[str, Any]:
  """ECE (micro and macro), Brier score and NLL of the calibrated probabilities, and the same
  under `uncalibrated` (sigmoid of the logits). labels, logits: [n, G]."""
  return {**metrics_lib.calibration_metrics(labels, calib.probs(logits)),
          'uncalibrated': metrics_lib.calibration_metrics(
              labels, calibration_lib.IDENTITY.probs(logits))}


def summary(report: dict[str, Any]) -> str:
  """A short human summary: test metrics and a few example predictions."""
  t, h = report['test'], report['test_at_0.5']
  thr = report['thresholds']
  how = 'per-genre' if thr['per_genre'] else f'{thr["global"]:.2f}'
  if report.get('members'):  # An ensemble (python -m genre_jax.ensemble).
    head = ('== ensemble (mean probabilities) of ' + ', '.join(
        f'{m["model"]} (seed {m["seed"]})' for m in report['members']) + ' ==')
  else:
    head = (f'== {report["model"]} (seed {report["seed"]}), best epoch {report["best_epoch"]} '
            f'of {report["epochs_run"]}, {report["train_seconds"]:.0f} s training ==')
  lines = [
      head,
      f'test (threshold {how}, tuned on validation): micro-F1 {t["micro_f1"]:.4f}  macro-F1 '
      f'{t["macro_f1"]:.4f}  precision {t["micro_precision"]:.4f}  recall {t["micro_recall"]:.4f}'
      f'  mAP {t["map"]:.4f}',
      f'test (threshold 0.50): micro-F1 {h["micro_f1"]:.4f}  macro-F1 {h["macro_f1"]:.4f}',
      *_calibration_line(report),
      'examples (synopsis -> original genres -> predicted genres):',
  ]
  for ex in report['examples']:
    text = ex['synopsis'] if len(ex['synopsis']) < 90 else ex['synopsis'][:87] + '...'
    lines.append(f'  "{text}"\n    -> {", ".join(ex["original"])}\n'
                 f'    -> {", ".join(ex["predicted"]) or "(none)"}')
  return '\n'.join(lines)


def _calibration_line(report: dict[str, Any]) -> list[str]:
  t, c = report['test'], report.get('calibration')
  if c is None or 'ece' not in t:
    return []
  how = ('per-genre temperatures' if c['per_genre'] else f'temperature {c["temperature"]:.3f}'
         ) if c['method'] == 'temperature' else 'none'
  return [f'test calibration ({how}, fitted on validation): ECE {t["ece"]:.4f}  macro-ECE '
          f'{t["macro_ece"]:.4f}  Brier {t["brier"]:.4f}  (uncalibrated: ECE '
          f'{t["uncalibrated"]["ece"]:.4f}  macro-ECE {t["uncalibrated"]["macro_ece"]:.4f})']


def _examples(arrays, probs, y_pred, classes, k: int) -> list[dict[str, Any]]:
  out = []
  for i in range(min(k, len(arrays.texts))):
    order = np.argsort(-probs[i])
    out.append({
        'id': arrays.ids[i],
        'synopsis': arrays.texts[i],
        'original': [classes[j] for j in np.flatnonzero(arrays.labels[i])],
        'predicted': [classes[j] for j in order if y_pred[i, j]],
        'probabilities': {classes[j]: round(float(probs[i, j]), 3) for j in order[:5]},
    })
  return out


def score(run: inference.Run | inference.Ensemble, texts: list[str], labels: np.ndarray,
          source: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
  """Metrics at the run's calibration and tuned threshold(s), and at 0.5, for raw texts.

  Args:
    texts: n synopses; labels: [n, G] float32 in the run's label order.
  """
  logits, loss = run.logits_and_loss(texts, labels)
  probs = run.calibration.probs(logits)
  at_least_one = run.thresholds['at_least_one']
  y_pred = thresholds_lib.apply(probs, run.threshold, at_least_one)
  tuned = metrics_lib.multilabel_metrics(labels, y_pred, probs)
  at_half = metrics_lib.multilabel_metrics(labels, thresholds_lib.apply(probs, 0.5), None)
  thr = run.thresholds
  summary = {'source': source, 'n': int(len(labels)), 'loss': loss,
             **{k: tuned[k] for k in SUMMARY_KEYS},
             'micro_f1@0.5': at_half['micro_f1'], 'macro_f1@0.5': at_half['macro_f1'],
             'threshold': 'per_genre' if thr.get('per_genre') else thr['global'],
             'threshold_tuned': bool(thr.get('tuned', False)),
             'calibration': run.calibration.method,
             **calibration_report(labels, logits, run.calibration), **(extra or {})}
  return {'summary': summary,
          'per_genre': metrics_lib.per_genre(labels, y_pred, run.labels.classes),
          'thresholds': thr, 'calibration': run.calibration.to_dict()}


def evaluate_test_split(run: inference.Run | inference.Ensemble) -> dict[str, Any]:
  """Re-scores the run's own test split (same split and label set as in training); its texts
  are tokenised once, by the run itself, and the other splits not at all."""
  data = run.load_data(encode=())
  if list(data.labels.classes) != list(run.labels.classes):
    raise GenreJaxError(f'the data now gives the label set {list(data.labels.classes)}, but the '
                        f'run in {run.workdir} was trained on {list(run.labels.classes)}.')
  texts, labels = pipeline.texts_and_labels(data, 'test')
  return score(run, texts, labels, source='test split')


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
           f'  at 0.5: micro-F1 {s["micro_f1@0.5"]:.4f}  macro-F1 {s["macro_f1@0.5"]:.4f}',
           f'  calibration ({s["calibration"]}): ECE {s["ece"]:.4f}  macro-ECE '
           f'{s["macro_ece"]:.4f}  Brier {s["brier"]:.4f}  (uncalibrated: ECE '
           f'{s["uncalibrated"]["ece"]:.4f}  macro-ECE {s["uncalibrated"]["macro_ece"]:.4f}  '
           f'Brier {s["uncalibrated"]["brier"]:.4f})']
  if s.get('unknown_genres'):
    lines.append('  genres unknown to the run (ignored): ' + ', '.join(
        f'{g} ({c})' for g, c in sorted(s['unknown_genres'].items())))
  if s.get('dropped_no_known_genre'):
    lines.append(f'  {s["dropped_no_known_genre"]} records had no genre known to the run and '
                 'were not scored.')
  lines.append('  per genre: ' + ', '.join(
      f'{r["genre"]} {r["f1"]:.2f}' for r in result['per_genre']))
  return '\n'.join(lines)
