"""Batched inference and loading a trained run or an ensemble from its workdir.

`load_run(workdir)` returns a `Run` (one trained model) or, when the workdir holds `ensemble.json`
(written by `python -m genre_jax.ensemble`), an `Ensemble` averaging its members' probabilities.
Both offer what evaluate and predict use: `config`, `labels`, `meta['split']`, `thresholds`,
`threshold`, `calibration`, `mesh`, `workdir`, `probs(texts)` (calibrated),
`logits_and_loss(texts, labels)` (before calibration), `probs_and_loss(texts, labels)` and
`load_data()`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, TYPE_CHECKING

import jax
import ml_collections
import numpy as np
from flax import nnx

from genre_jax import calibration as calibration_lib
from genre_jax import checkpoint
from genre_jax import losses
from genre_jax import models
from genre_jax import parallel
from genre_jax import workdir as workdir_lib
from genre_jax.data import batching
from genre_jax.data import text as text_lib
from genre_jax.errors import GenreJaxError

if TYPE_CHECKING:
  from genre_jax.data import pipeline  # Imported on use: pandas would slow predict's start.

THRESHOLDS_FILE, ENSEMBLE_FILE = 'thresholds.json', 'ensemble.json'
# The config.data fields that select the records and the split; members of an ensemble must agree
# on them (vocab_size, max_length, bucketing ... are each member's own input settings).
DATA_SOURCE_FIELDS = ('name', 'path', 'format', 'text_column', 'genre_column', 'genre_separator',
                      'id_column', 'title_column', 'max_examples', 'split_seed', 'split_sizes')


def enable_compilation_cache() -> None:
  """Reuses compiled XLA programs across processes (JAX's persistent compilation cache)."""
  cache = os.environ.get('GENRE_JAX_JAX_CACHE',
                         os.path.join(os.path.expanduser('~'), '.cache', 'genre_jax', 'xla'))
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


def logits(model: nnx.Module, batch: dict[str, jax.Array]) -> jax.Array:
  """[B, G] logits of a batch of `tokens` and `lengths`, or of precomputed `features` [B, H]
  (models with a frozen feature extractor: `model.classify`)."""
  if 'features' in batch:
    return model.classify(batch['features'])
  return model(batch['tokens'], batch['lengths'])


@nnx.jit
def eval_step(model: nnx.Module, batch: dict[str, jax.Array],
              pos_weight: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Logits [B, G] and the summed loss of the real (mask = 1) rows."""
  out = logits(model, batch)
  loss = losses.sigmoid_bce(out, batch['labels'], batch['mask'], pos_weight)
  return out, loss * batch['mask'].sum()


def _row_batches(tokens: np.ndarray, lengths: np.ndarray, labels: np.ndarray, batch_size: int,
                 bucket_widths: list[int] | None):
  """Every row once, in order within buckets (no shuffling), for scoring; padded final batches."""
  n = len(tokens)
  arrays = batching.SplitArrays(ids=[''] * n, texts=[''] * n, tokens=tokens, lengths=lengths,
                                labels=labels)
  return batching.batches(arrays, batch_size, shuffle=False, seed=0, epoch=0,
                          bucket_by_length=bucket_widths is not None, widths=bucket_widths,
                          part=parallel.process_part())


@nnx.jit
def _features_step(model: nnx.Module, batch: dict[str, jax.Array]) -> jax.Array:
  return model.features(batch['tokens'], batch['lengths'])


def encode_features(model: nnx.Module, tokens: np.ndarray, lengths: np.ndarray, *,
                    batch_size: int, mesh,
                    bucket_widths: list[int] | None = None) -> np.ndarray:
  """`model.features` of every row in evaluation mode: [n, H] float32, in row order.

  Args:
    tokens: [n, L] token ids (int32, or narrower as `SplitArrays.tokens`); lengths: [n] int32;
      batch_size, mesh, bucket_widths: as `predict_probs`.
  """
  model.eval()
  n = len(tokens)
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  out = None
  for batch in _row_batches(tokens, lengths, np.zeros((n, 1), np.float32), batch_size,
                            bucket_widths):
    f = parallel.to_host(_features_step(model, parallel.shard_batch(
        {k: batch[k] for k in ('tokens', 'lengths')}, mesh)))
    if out is None:
      out = np.zeros((n, f.shape[1]), np.float32)
    real = batch['index'] >= 0
    out[batch['index'][real]] = f[real]
  return out


def feature_batch(features: np.ndarray, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The training / evaluation batch of precomputed features for this process's rows of a batch
  of `batching.batches` (its `index`, -1 on padding rows, which get zero features)."""
  mine = batching.local_rows(batch['index'], parallel.process_part())
  real = mine >= 0
  rows = np.where(real, mine, 0)
  return {'features': np.where(real[:, None], features[rows], 0.0).astype(np.float32),
          'labels': batch['labels'], 'mask': batch['mask']}


def predict_probs(model: nnx.Module, tokens: np.ndarray, lengths: np.ndarray,
                  labels: np.ndarray, **kwargs) -> tuple[np.ndarray, float]:
  """`predict_logits`' sigmoid (uncalibrated probabilities [n, G] float32) and mean loss."""
  out, loss = predict_logits(model, tokens, lengths, labels, **kwargs)
  return calibration_lib.IDENTITY.probs(out), loss


def predict_logits(model: nnx.Module, tokens: np.ndarray, lengths: np.ndarray,
                   labels: np.ndarray, *, batch_size: int, mesh,
                   pos_weight: jax.Array | None = None,
                   bucket_widths: list[int] | None = None,
                   features: np.ndarray | None = None) -> tuple[np.ndarray, float]:
  """Scores every row (none dropped) in evaluation mode.

  Args:
    tokens: [n, L] token ids: int32, or narrower as `SplitArrays.tokens` (batches are int32).
    lengths: [n] int32 real lengths.
    labels: [n, G] float32 multi-hot labels (zeros when unknown; the loss is then meaningless).
    batch_size: rows per compiled call (rounded up to a multiple of the device count; the last
      batch is padded).
    mesh: the device mesh from `parallel.make_mesh()`.
    pos_weight: [G] positive weights of the training loss, or None.
    bucket_widths: optional padded widths, to cut padding.
    features: optional [n, H] precomputed `model.features` of the rows (`encode_features`);
      then only `model.classify` runs.

  Returns:
    logits: [n, G] float32 in row order; mean loss over the rows.
  """
  model.eval()
  n = len(tokens)
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  out = np.zeros(labels.shape, np.float32)
  total = 0.0
  for batch in _row_batches(tokens, lengths, labels, batch_size, bucket_widths):
    inputs = (feature_batch(features, batch) if features is not None else
              {k: batch[k] for k in ('tokens', 'lengths', 'labels', 'mask')})
    z, loss_sum = eval_step(model, parallel.shard_batch(inputs, mesh), pos_weight)
    real = batch['index'] >= 0
    out[batch['index'][real]] = parallel.to_host(z)[real]
    total += float(parallel.to_host(loss_sum))
  return out, total / max(n, 1)


def _threshold_in_use(thresholds: dict[str, Any]):
  """The tuned threshold(s) in use: per-genre [G] when tuned, else the global float."""
  per = thresholds.get('per_genre')
  return np.asarray(per, np.float32) if per is not None else thresholds['global']


class _Calibrated:
  """Calibrated probabilities from a class's `logits_and_loss(texts, labels=None)` and
  `calibration`."""

  def probs(self, texts: list[str]) -> np.ndarray:
    """[n, G] float32 calibrated probabilities for raw texts."""
    return self.calibration.probs(self.logits_and_loss(texts)[0])

  def probs_and_loss(self, texts: list[str], labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Calibrated probabilities [n, G] of raw texts and `logits_and_loss`' loss."""
    z, loss = self.logits_and_loss(texts, labels)
    return self.calibration.probs(z), loss


@dataclasses.dataclass
class Run(_Calibrated):
  """A trained run loaded from its workdir."""
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  model: nnx.Module
  tokenizer: Any
  labels: Any  # data.text.LabelEncoder
  meta: dict[str, Any]
  thresholds: dict[str, Any]  # {'global': float, 'per_genre': [G] | None, 'at_least_one': bool}
  mesh: Any
  calibration: calibration_lib.Calibration = calibration_lib.IDENTITY

  @property
  def threshold(self):
    """The tuned threshold(s) in use: per-genre [G] when tuned, else the global float."""
    return _threshold_in_use(self.thresholds)

  def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.tokenizer.encode(list(texts), self.config.data.max_length)

  def logits_and_loss(self, texts: list[str], labels: np.ndarray | None = None
                      ) -> tuple[np.ndarray, float]:
    """Scores raw texts (batches no larger than needed: quick for a few).

    Args:
      texts: n synopses.
      labels: [n, G] float32 multi-hot labels in this run's label order, or None (unknown; the
        loss is then meaningless).

    Returns:
      logits: [n, G] float32 before calibration; the mean (unweighted) sigmoid cross-entropy.
    """
    tokens, lengths = self._encode(texts)
    if labels is None:
      labels = np.zeros((len(texts), len(self.labels.classes)), np.float32)
    bs = batch_size_for(len(texts), self.config.eval_batch_size, self.mesh)
    return predict_logits(self.model, tokens, lengths, labels, batch_size=bs, mesh=self.mesh)

  def load_data(self, encode: tuple[str, ...] | None = None) -> pipeline.PreparedData:
    """The run's data set with its saved split and label set, tokenised by this run: the splits
    in `encode` (default all three; `('test',)` to score the test split)."""
    from genre_jax.data import pipeline, splits
    return pipeline.prepare(self.config.data, tokenizer_factory=lambda texts: self.tokenizer,
                            split=self.meta['split'],
                            encode=splits.SPLITS if encode is None else encode)


@dataclasses.dataclass
class Ensemble(_Calibrated):
  """Several compatible runs whose probabilities are averaged (arithmetic mean, or a weighted
  mean with `weights` [members] summing to 1, as `python -m genre_jax.ensemble --weights tuned`
  chooses them on validation).

  Each member turns raw texts into ids with its own tokenizer and max_length, so members may use
  different vocabularies. Config, labels, split and mesh are the first member's (all members share
  labels, split and data source; see `check_compatible`); thresholds are the ensemble's own.
  """
  workdir: pathlib.Path
  members: list[Run]
  thresholds: dict[str, Any]
  meta: dict[str, Any]  # 'split' (record ids), 'members' and 'combination' from ensemble.json.
  weights: np.ndarray | None = None  # [members]; None: equal weights.
  # Fitted on the combined (calibrated) members' probabilities, in logit space.
  calibration: calibration_lib.Calibration = calibration_lib.IDENTITY

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.members[0].config

  @property
  def labels(self):
    return self.members[0].labels

  @property
  def mesh(self):
    return self.members[0].mesh

  @property
  def threshold(self):
    """The tuned threshold(s) in use: per-genre [G] when tuned, else the global float."""
    return _threshold_in_use(self.thresholds)

  def combine(self, member_probs: list[np.ndarray]) -> np.ndarray:
    """[n, G]: the (weighted) mean of the members' probabilities, each [n, G]."""
    return np.average(np.stack(member_probs), axis=0, weights=self.weights).astype(np.float32)

  def member_probs(self, texts: list[str], labels: np.ndarray | None = None
                   ) -> list[np.ndarray]:
    """Each member's calibrated probabilities [n, G] for raw texts (labels [n, G] or None)."""
    return [m.calibration.probs(m.logits_and_loss(texts, labels)[0]) for m in self.members]

  def logits_and_loss(self, texts: list[str], labels: np.ndarray | None = None
                      ) -> tuple[np.ndarray, float]:
    """The logits [n, G] of the combined members' probabilities (before the ensemble's own
    calibration) and the combination's cross-entropy against labels [n, G]."""
    probs = self.combine(self.member_probs(texts, labels))
    loss = 0.0 if labels is None else losses.binary_cross_entropy(probs, labels)
    return calibration_lib.logit(probs), loss

  def load_data(self, encode: tuple[str, ...] | None = None) -> pipeline.PreparedData:
    """The members' data set and split (read through the first member; `encode` as there)."""
    data = self.members[0].load_data(encode)
    data.report['vocab_size'] = [m.tokenizer.vocab_size for m in self.members]
    return data


def check_compatible(runs: list[Run]) -> None:
  """Refuses to combine runs with other label classes, data splits or data sources than the first.

  Raises:
    GenreJaxError naming the member's workdir and what differs.
  """
  first = runs[0]
  for run in runs[1:]:
    where = f'ensemble member {run.workdir} does not match member {first.workdir}'
    if list(run.labels.classes) != list(first.labels.classes):
      raise GenreJaxError(f'{where}: label classes {list(run.labels.classes)} there, '
                          f'{list(first.labels.classes)} in the first. Ensemble members must '
                          'predict the same genres in the same order.')
    a, b = first.meta['split'], run.meta['split']
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diff:
      raise GenreJaxError(f'{where}: its data split differs ({", ".join(diff)} hold other '
                          'records). Ensemble members must be trained on the same split.')
    a, b = _data_source(first.config), _data_source(run.config)
    diff = [k for k in DATA_SOURCE_FIELDS if a[k] != b[k]]
    if diff:
      raise GenreJaxError(f'{where}: its data source differs (' + ', '.join(
          f'data.{k}: {b[k]!r} there, {a[k]!r} in the first' for k in diff) + ').')


def _data_source(config: ml_collections.ConfigDict) -> dict[str, Any]:
  d = config.data.to_dict()
  out = {k: list(v) if isinstance(v, tuple) else v for k, v in
         ((k, d.get(k)) for k in DATA_SOURCE_FIELDS)}
  if out['path']:  # The data set name is ignored when a path is given.
    out['path'], out['name'] = os.path.abspath(os.path.expanduser(out['path'])), None
  return out


def read_texts(texts: list[str], input_path: str | None) -> list[str]:
  """The synopses to classify: the arguments, then the lines of `input_path` (split on '\\n'
  only: a form feed or a Unicode line separator inside a synopsis does not split it)."""
  texts = list(texts)
  if input_path:
    try:
      with open(input_path, encoding='utf-8', newline='') as f:
        lines = f.read().split('\n')
    except FileNotFoundError:
      raise GenreJaxError(f'--input file {input_path} does not exist.') from None
    except IsADirectoryError:
      raise GenreJaxError(f'--input {input_path} is a directory; give a text file with '
                                 'one synopsis per line.') from None
    except OSError as e:
      raise GenreJaxError(f'--input file {input_path} cannot be read ({e.strerror}).'
                                 ) from None
    except UnicodeDecodeError as e:
      raise GenreJaxError(f'--input file {input_path} is not UTF-8 text ({e}).') from None
    texts += [line.removesuffix('\r') for line in lines if line.strip()]
  if not texts:
    raise GenreJaxError('no synopsis given: pass texts as arguments or --input FILE.')
  for i, t in enumerate(texts):
    if not t.strip():
      raise GenreJaxError(f'synopsis {i + 1} is empty; give some text to classify.')
  return texts


def batch_size_for(n: int, eval_batch_size: int, mesh) -> int:
  """The smallest device-count multiple covering `n` rows, at most `eval_batch_size`."""
  d = mesh.devices.size
  want = min(max(n, 1), eval_batch_size)
  return -(-want // d) * d


def placeholder(x: jax.ShapeDtypeStruct) -> jax.Array:
  """A concrete value for non-parameter state (RNG keys and counters), unused in evaluation."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.split(jax.random.key(0), x.shape) if x.shape else jax.random.key(0)
  return jax.numpy.zeros(x.shape, x.dtype)


def load_run(workdir: str | pathlib.Path) -> Run | Ensemble:
  """Rebuilds the best model of a finished (or interrupted) run, with its tokenizer and labels,
  on this machine's devices (whatever the device count it was trained on).

  An ensemble workdir (`python -m genre_jax.ensemble`) gives an `Ensemble` of the member runs
  copied inside it.
  """
  workdir = pathlib.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise GenreJaxError(f'--workdir {workdir} is a file, not a workdir.')
  if workdir_lib.kind(workdir) == workdir_lib.ENSEMBLE:
    return load_ensemble(workdir)
  ckpts = checkpoint.RunCheckpoints(workdir)
  meta = ckpts.read_meta(checkpoint.BEST)
  meta['split'] = ckpts.read_split(meta)
  config = ml_collections.ConfigDict(meta['config'])
  tokenizer = text_lib.tokenizer_from_dict(meta['tokenizer'])
  labels = text_lib.LabelEncoder.from_dict(meta['labels'])
  # Built abstractly (no initialiser runs or compiles), then filled from the checkpoint.
  model = nnx.eval_shape(lambda: models.build_model(config, tokenizer, len(labels.classes)))
  nnx.update(model, jax.tree.map(placeholder, nnx.state(model, nnx.Not(nnx.Param))))
  mesh = parallel.make_mesh()
  ckpts.restore(checkpoint.BEST, mesh, model)
  model.eval()
  thresholds = read_thresholds(workdir, list(labels.classes))
  calibration = calibration_lib.read(workdir, list(labels.classes))
  return Run(workdir, config, model, tokenizer, labels, meta, thresholds, mesh, calibration)


def load_ensemble(workdir: str | pathlib.Path) -> Ensemble:
  """Loads the members listed in `workdir/ensemble.json` (directories relative to `workdir`)."""
  workdir = pathlib.Path(workdir)
  try:
    spec = json.loads((workdir / ENSEMBLE_FILE).read_text())
    entries = [entry['dir'] for entry in spec['members']]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise GenreJaxError(f'{workdir / ENSEMBLE_FILE} is missing or not a valid ensemble file '
                        f'({e!r:.200}); rebuild the ensemble with python -m genre_jax.ensemble.'
                        ) from None
  members = []
  for entry in entries:
    run = load_run(workdir / entry)
    if not isinstance(run, Run):
      raise GenreJaxError(f'ensemble member {run.workdir} is itself an ensemble.')
    members.append(run)
  if len(members) < 2:
    raise GenreJaxError(f'{workdir / ENSEMBLE_FILE} lists {len(members)} member(s); an ensemble '
                        'needs at least two.')
  check_compatible(members)
  meta = {'split': members[0].meta['split'], 'members': spec['members'],
          'combination': spec.get('combination', 'mean')}
  weights = spec.get('weights')
  if weights is not None:
    weights = np.asarray(weights, np.float64)
    if weights.shape != (len(members),) or weights.min() < 0 or not weights.sum() > 0:
      raise GenreJaxError(f'{workdir / ENSEMBLE_FILE}: "weights" must be {len(members)} '
                          f'non-negative numbers, not all zero; got {spec["weights"]}.')
    weights = weights / weights.sum()
  classes = list(members[0].labels.classes)
  return Ensemble(workdir, members, read_thresholds(workdir, classes), meta, weights,
                  calibration_lib.read(workdir, classes))


def read_thresholds(workdir: pathlib.Path, classes: list[str]) -> dict[str, Any]:
  """`workdir/thresholds.json` (tuned on validation), checked; 0.5 when the run has none yet."""
  path = workdir / THRESHOLDS_FILE
  if not path.exists():
    return {'global': 0.5, 'per_genre': None, 'at_least_one': False, 'tuned': False}
  try:
    thr = json.loads(path.read_text())
    ok = (0.0 <= float(thr['global']) <= 1.0 and isinstance(thr['at_least_one'], bool)
          and (thr['per_genre'] is None or len(thr['per_genre']) == len(classes)))
  except (ValueError, KeyError, TypeError) as e:
    ok, thr = False, repr(e)
  if not ok:
    raise GenreJaxError(
        f'{path} is not a valid thresholds file ({thr!s:.200}); it should hold "global" (0-1), '
        f'"at_least_one" and "per_genre" (null or {len(classes)} numbers). Delete it to use 0.5, '
        'or rerun the training command to tune it again.')
  return thr
