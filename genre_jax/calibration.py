"""Temperature scaling: probabilities that mean what they say.

A run's logits z [n, G] become probabilities sigmoid(z / T), with one temperature T for the run
(default) or one per genre (`config.calibration.per_genre`). T is fitted on the validation split
by minimising the binary cross-entropy (NLL) of the labels, and is kept at 1 wherever the fit
would not lower it, so calibration never raises validation NLL. The fitted calibration lives in
`WORKDIR/calibration.json`; evaluate, predict, explain, ensembles and exported models apply it,
and the thresholds are tuned on the calibrated probabilities. A workdir without the file is
served uncalibrated (T = 1) and says so (`method: 'none'`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np
from scipy import optimize
from scipy import special

from genre_jax.errors import GenreJaxError

FILE = 'calibration.json'
METHODS = ('temperature', 'none')
LOG_T_BOUNDS = (-3.0, 3.0)  # Temperatures from 0.05 to 20.
EPS = 1e-7


def nll(logits: np.ndarray, labels: np.ndarray, axis=None) -> np.ndarray:
  """Mean binary cross-entropy of sigmoid(logits) against {0, 1} labels (float64, stable).

  Args:
    logits: [n, G] or [n]; labels: the same shape. axis: as np.mean's.
  """
  z = np.asarray(logits, np.float64)
  y = np.asarray(labels, np.float64)
  return np.mean(np.logaddexp(0.0, z) - y * z, axis=axis)


def _fit_one(z: np.ndarray, y: np.ndarray) -> float:
  """The temperature minimising nll(z / T, y), or 1 if none lowers it. z, y: [m] float64."""
  result = optimize.minimize_scalar(lambda log_t: nll(z / np.exp(log_t), y),
                                    bounds=LOG_T_BOUNDS, method='bounded')
  t = float(np.exp(result.x))
  return t if nll(z / t, y) < nll(z, y) else 1.0


def logit(probs: np.ndarray) -> np.ndarray:
  """log(p / (1 - p)) with p clipped to [EPS, 1 - EPS]: [n, G] float32 (for averaged
  probabilities, e.g. an ensemble's, which have no logits of their own)."""
  p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
  return (np.log(p) - np.log1p(-p)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Calibration:
  """Temperatures applied to logits: a float (one for all genres) or a [G] array."""
  temperature: float | np.ndarray = 1.0
  method: str = 'none'
  per_genre: bool = False
  validation_nll: dict[str, float] | None = None  # {'uncalibrated': .., 'calibrated': ..}

  def logits(self, z):
    """Calibrated logits z / T: [n, G] numpy or jax arrays."""
    return z / (np.asarray(self.temperature, np.float32) if self.per_genre
                else np.float32(self.temperature))

  def probs(self, z: np.ndarray) -> np.ndarray:
    """[n, G] float32 calibrated probabilities of logits z [n, G]."""
    return special.expit(self.logits(np.asarray(z, np.float32))).astype(np.float32)

  def to_dict(self) -> dict[str, Any]:
    t = self.temperature
    return {'method': self.method, 'per_genre': self.per_genre,
            'temperature': [float(x) for x in t] if self.per_genre else float(t),
            'validation_nll': self.validation_nll}


IDENTITY = Calibration()


def fit(logits: np.ndarray, labels: np.ndarray, *, method: str = 'temperature',
        per_genre: bool = False) -> Calibration:
  """Fits the calibration on validation logits [n, G] and labels [n, G] ({0, 1})."""
  z, y = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
  if method == 'none':
    return IDENTITY
  if per_genre:
    t = np.array([_fit_one(z[:, g], y[:, g]) for g in range(z.shape[1])], np.float64)
  else:
    t = _fit_one(z.ravel(), y.ravel())
  out = Calibration(t, 'temperature', per_genre)
  return dataclasses.replace(out, validation_nll={
      'uncalibrated': float(nll(z, y)), 'calibrated': float(nll(out.logits(z), y))})


def settings(config) -> dict[str, Any]:
  """`config.calibration` as keyword arguments of `fit`; a config saved before that section
  existed gets the default (one temperature)."""
  section = config.get('calibration')
  return ({'method': 'temperature', 'per_genre': False} if section is None
          else {'method': section.method, 'per_genre': bool(section.per_genre)})


def write(workdir: pathlib.Path, calibration: Calibration, classes: list[str]) -> None:
  from genre_jax import workdir as workdir_lib
  workdir_lib.write_json(workdir / FILE, {**calibration.to_dict(), 'classes': classes})


def read(workdir: pathlib.Path, classes: list[str]) -> Calibration:
  """`workdir/calibration.json`, checked against the run's genres; IDENTITY without the file."""
  path = workdir / FILE
  if not path.exists():
    return IDENTITY
  try:
    d = json.loads(path.read_text())
    per_genre = bool(d['per_genre'])
    t = np.asarray(d['temperature'], np.float64)
    ok = (d['method'] in METHODS and t.shape == ((len(classes),) if per_genre else ())
          and bool(np.all(t > 0)) and d.get('classes', classes) == classes)
  except (ValueError, KeyError, TypeError) as e:
    ok, d = False, repr(e)
  if not ok:
    raise GenreJaxError(
        f'{path} is not a valid calibration file ({d!s:.200}); it should hold "method", '
        f'"per_genre" and "temperature" (a positive number, or {len(classes)} with per_genre). '
        'Delete it to serve uncalibrated probabilities, or rerun the training command to fit it '
        'again.')
  return from_dict(d)


def from_dict(d: dict[str, Any]) -> Calibration:
  """The Calibration a calibration.json's (or an export manifest's) fields describe."""
  per_genre = bool(d['per_genre'])
  t = np.asarray(d['temperature'], np.float64)
  return Calibration(t if per_genre else float(t), d['method'], per_genre,
                     d.get('validation_nll'))
