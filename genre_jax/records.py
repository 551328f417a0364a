"""Prediction records: what `predict --json`, `serving.Model.predict` and the HTTP API return per
synopsis. numpy only, so that the serving side (jax and numpy, no flax) builds the same records.

  {'text': the synopsis,
   'genres': {genre: probability} of the genres at or above their threshold, most probable first,
   'top': {genre: probability} of the `top_k` most probable genres,
   'calibration': 'temperature' | 'none' (how the probabilities were calibrated)}

Probabilities are rounded to 4 decimals.
"""

from typing import Any

import numpy as np

from genre_jax import thresholds as thresholds_lib

DIGITS = 4


def threshold_in_use(thresholds: dict[str, Any]) -> float | np.ndarray:
  """The tuned threshold(s) of a thresholds.json dict: per-genre [G] float32 when tuned, else the
  global float."""
  per = thresholds.get('per_genre')
  return np.asarray(per, np.float32) if per is not None else thresholds['global']


def prediction_records(texts: list[str], probs: np.ndarray, classes: list[str],
                       thresholds: dict[str, Any], calibration_method: str,
                       top_k: int = 5) -> list[dict[str, Any]]:
  """One record per text (see the module docstring).

  Args:
    texts: n synopses.
    probs: [n, G] float calibrated probabilities, columns in `classes` order.
    classes: the G genre names.
    thresholds: the run's thresholds.json dict ('global', 'per_genre', 'at_least_one').
    calibration_method: the run's `Calibration.method`.
    top_k: how many of the most probable genres go into 'top'.
  """
  preds = thresholds_lib.apply(probs, threshold_in_use(thresholds),
                               bool(thresholds.get('at_least_one', False)))
  out = []
  for text, p, y in zip(texts, probs, preds):
    order = sorted(range(len(classes)), key=lambda j: -p[j])
    out.append({'text': text,
                'genres': {classes[j]: round(float(p[j]), DIGITS) for j in order if y[j]},
                'top': {classes[j]: round(float(p[j]), DIGITS) for j in order[:top_k]},
                'calibration': calibration_method})
  return out
