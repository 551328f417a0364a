"""Runs an exported run or ensemble (`python -m genre_jax.export`) with jax, numpy and the
`tokenizers` library alone: no flax, no genre_jax model code.

  model = serving.load('exports/cnn')
  model.labels                                  # the G genres
  model.probabilities(['A retired hitman ...'])   # [n, G] float32, calibrated
  model.predict(['A retired hitman ...'])         # the records of `predict --json`

An export directory (format `FORMAT_VERSION`):

  manifest.json             format and versions, source workdir, labels, thresholds, calibration,
                            ensemble weights, one entry per member, the SHA-256 of every file
  member-K/scorer.jaxexport `jax.export` serialisation (StableHLO) of
                            score(params, tokens [b, l] int32, lengths [b] int32)
                              -> calibrated probabilities [b, G] float32,
                            b and l symbolic (l <= the member's max_length)
  member-K/params.npz       the parameters: score's first argument, {name: array}
  member-K/tokenizer.json   a `tokenizers` pipeline (normalizer, pre-tokenizer, vocabulary,
                            truncation at max_length) giving the ids of the run's own tokenizer

A single run has one member, whose calibration is inside its scorer. An ensemble has one member
per run, each with its own tokenizer and calibration; `Model.probabilities` combines them in numpy
as `inference.Ensemble` does: the (weighted) mean, then the ensemble's own temperature on its
logit. Each batch is padded to one of a few widths (`manifest['members'][k]['widths']`) and batch
sizes (powers of two up to `max_batch`), so that `warm_up` compiles every shape it will meet.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import numpy as np

from genre_jax import records
from genre_jax.errors import GenreJaxError

FORMAT, FORMAT_VERSION = 'genre_jax.export', 1
MANIFEST = 'manifest.json'
SCORER, PARAMS, TOKENIZER = 'scorer.jaxexport', 'params.npz', 'tokenizer.json'
MAX_BATCH = 64
_REEXPORT = 'export the run again with python -m genre_jax.export'


def enable_compilation_cache() -> None:
  """Reuses compiled XLA programs across processes (JAX's persistent compilation cache; the
  directory of `inference.enable_compilation_cache`)."""
  cache = os.environ.get('GENRE_JAX_JAX_CACHE',
                         os.path.join(os.path.expanduser('~'), '.cache', 'genre_jax', 'xla'))
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


def batch_sizes(max_batch: int) -> list[int]:
  """The padded batch sizes: powers of two below `max_batch`, and `max_batch`."""
  sizes, b = [], 1
  while b < max_batch:
    sizes.append(b)
    b *= 2
  return sizes + [max_batch]


def _smallest_at_least(options: list[int], n: int) -> int:
  return options[int(np.searchsorted(options, n))]


class Encoder:
  """Texts to padded ids with a `tokenizers` JSON pipeline, as the run's own tokenizer."""

  def __init__(self, tokenizer_json: str, max_length: int, pad_id: int, empty_id: int):
    """Args: tokenizer_json: the pipeline (truncating at max_length); pad_id: the padding id;
    empty_id: the one id of a text without tokens."""
    import tokenizers
    self.tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)
    self.max_length, self.pad_id, self.empty_id = int(max_length), int(pad_id), int(empty_id)

  def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """tokens [n, max_length] int32 (padded with pad_id) and lengths [n] int32 >= 1: the run's
    `tokenizer.encode(texts, max_length)`."""
    tokens = np.full((len(texts), self.max_length), self.pad_id, np.int32)
    lengths = np.ones(len(texts), np.int32)
    for i, encoding in enumerate(self.tokenizer.encode_batch(list(texts))):
      ids = encoding.ids[:self.max_length] or [self.empty_id]
      tokens[i, :len(ids)] = ids
      lengths[i] = len(ids)
    return tokens, lengths


class Member:
  """One exported scorer with its parameters and tokenizer."""

  def __init__(self, spec: dict[str, Any], scorer: jax.export.Exported,
               params: dict[str, np.ndarray], tokenizer_json: str, max_batch: int = MAX_BATCH):
    """Args: spec: the member's manifest entry ('max_length', 'pad_id', 'empty_id', 'widths');
    scorer: the exported function; params: its first argument; tokenizer_json: a `tokenizers`
    JSON; max_batch: the largest batch one call scores."""
    self.spec = spec
    self.encoder = Encoder(tokenizer_json, spec['max_length'], spec['pad_id'], spec['empty_id'])
    self.pad_id = self.encoder.pad_id
    self.widths = sorted(int(w) for w in spec['widths'])
    self.batch_sizes = batch_sizes(max_batch)
    self.params = jax.device_put(params)
    self._score = jax.jit(scorer.call)
    self._executables = {}  # (batch size, width) -> compiled scorer.

  def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.encoder.encode(texts)

  def probabilities(self, texts: list[str]) -> np.ndarray:
    """[n, G] float32: the scorer's calibrated probabilities, texts batched by length."""
    tokens, lengths = self.encode(texts)
    order = np.argsort(lengths, kind='stable')
    out = None
    for start in range(0, len(texts), self.batch_sizes[-1]):
      rows = order[start:start + self.batch_sizes[-1]]
      p = self._score_padded(tokens[rows], lengths[rows])
      if out is None:
        out = np.empty((len(texts), p.shape[1]), np.float32)
      out[rows] = p
    return out

  def _score_padded(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Scores m <= max_batch rows padded to the next batch size and width: [m, G] float32."""
    m = len(lengths)
    width = _smallest_at_least(self.widths, int(lengths.max()))
    size = _smallest_at_least(self.batch_sizes, m)
    batch = np.full((size, width), self.pad_id, np.int32)
    batch[:m] = tokens[:, :width]
    padded_lengths = np.ones(size, np.int32)
    padded_lengths[:m] = lengths
    return np.asarray(self._executable(size, width)(self.params, batch, padded_lengths))[:m]

  def _executable(self, size: int, width: int):
    """The scorer compiled for tokens [size, width] (from the compilation cache if it is there)."""
    key = (size, width)
    if key not in self._executables:
      self._executables[key] = self._score.lower(
          self.params, jax.ShapeDtypeStruct((size, width), np.int32),
          jax.ShapeDtypeStruct((size,), np.int32)).compile()
    return self._executables[key]

  def warm_up(self) -> int:
    """Compiles the scorer for every (batch size, width) it will be called with, without running
    it, in one thread per core (XLA compiles and reads the compilation cache outside Python's
    lock); returns how many shapes that is."""
    shapes = [(size, width) for width in self.widths for size in self.batch_sizes]
    with concurrent.futures.ThreadPoolExecutor(min(len(shapes), os.cpu_count() or 1)) as pool:
      list(pool.map(lambda shape: self._executable(*shape), shapes))
    return len(self._executables)


@dataclasses.dataclass
class Model:
  """An exported run or ensemble, ready to score raw synopses."""
  manifest: dict[str, Any]
  members: list[Member]

  @property
  def labels(self) -> list[str]:
    return list(self.manifest['labels'])

  @property
  def thresholds(self) -> dict[str, Any]:
    return self.manifest['thresholds']

  @functools.cached_property
  def threshold(self) -> float | np.ndarray:
    """The tuned threshold(s) in use: per-genre [G] when tuned, else the global float."""
    return records.threshold_in_use(self.thresholds)

  @property
  def calibration_method(self) -> str:
    """How the probabilities are calibrated: 'temperature' or 'none'."""
    return self.manifest['calibration']['method']

  @functools.cached_property
  def calibration(self):
    """The `calibration.Calibration` of the final probabilities (a run's: inside its scorer; an
    ensemble's: applied by `probabilities` to the logit of the combined members). Imported on
    use: scipy, which it needs, would slow every start."""
    from genre_jax import calibration as calibration_lib
    return calibration_lib.from_dict(self.manifest['calibration'])

  @property
  def max_batch(self) -> int:
    return self.members[0].batch_sizes[-1]

  def probabilities(self, texts: list[str]) -> np.ndarray:
    """[n, G] float32 calibrated probabilities of n raw synopses."""
    texts = list(texts)
    if not texts:
      return np.zeros((0, len(self.labels)), np.float32)
    member_probs = [m.probabilities(texts) for m in self.members]
    if self.manifest['kind'] != 'ensemble':
      return member_probs[0]
    from genre_jax import calibration as calibration_lib
    weights = self.manifest.get('weights')
    combined = np.average(np.stack(member_probs), axis=0, weights=weights).astype(np.float32)
    return self.calibration.probs(calibration_lib.logit(combined))

  def predict(self, texts: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """The records of `python -m genre_jax.predict --json` (`records.prediction_records`)."""
    texts = list(texts)
    return records.prediction_records(texts, self.probabilities(texts), self.labels,
                                      self.thresholds, self.calibration_method, top_k)

  def warm_up(self) -> int:
    """Compiles every shape `probabilities` will use; returns the number of compiled shapes."""
    return sum(m.warm_up() for m in self.members)


def sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
  """The checked manifest of an export directory: its format version, and every file present
  with the SHA-256 it lists.

  Raises:
    GenreJaxError: not an export directory, another format version, a missing or altered file.
  """
  directory = pathlib.Path(directory)
  path = directory / MANIFEST
  if not directory.is_dir():
    raise GenreJaxError(f'export directory {directory} does not exist; make it with python -m '
                        f'genre_jax.export --workdir RUN --out {directory}.')
  try:
    manifest = json.loads(path.read_text(encoding='utf-8'))
    found, version, files = manifest['format'], manifest['format_version'], manifest['files']
  except FileNotFoundError:
    raise GenreJaxError(f'{directory} is not an export directory (no {MANIFEST}); '
                        f'{_REEXPORT}.') from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise GenreJaxError(f'{path} is not a valid export manifest ({e!r:.120}); {_REEXPORT}.'
                        ) from None
  if found != FORMAT or version != FORMAT_VERSION:
    raise GenreJaxError(f'{path}: export format {found!r} version {version!r}; this genre_jax '
                        f'reads {FORMAT!r} version {FORMAT_VERSION}: {_REEXPORT}.')
  for name, digest in files.items():
    file = directory / name
    if not file.is_file():
      raise GenreJaxError(f'{file} is missing (listed in {path}); {_REEXPORT}.')
    if sha256(file) != digest:
      raise GenreJaxError(f'{file} is corrupted (its SHA-256 differs from {path}); '
                          f'{_REEXPORT}.')
  return manifest


def load(directory: str | os.PathLike, max_batch: int = MAX_BATCH) -> Model:
  """Loads an export directory (checked by `read_manifest`) for scoring with jax.

  Args:
    directory: made by `python -m genre_jax.export`.
    max_batch: the largest batch one compiled call scores (more texts are scored in turns).
  """
  directory = pathlib.Path(directory)
  manifest = read_manifest(directory)
  members = []
  try:
    for spec in manifest['members']:
      folder = directory / spec['dir']
      scorer = jax.export.deserialize(bytearray((folder / SCORER).read_bytes()))
      with np.load(folder / PARAMS, allow_pickle=False) as npz:
        params = {k: npz[k] for k in npz.files}
      members.append(Member(spec, scorer, params, (folder / TOKENIZER).read_text('utf-8'),
                            max_batch))
  except GenreJaxError:
    raise
  except Exception as e:  # A file that passed its checksum but does not load: another jax.
    raise GenreJaxError(
        f'{directory} cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0]:.160}); it '
        f'was exported with jax {manifest.get("jax_version")}, this is jax {jax.__version__}: '
        f'{_REEXPORT}.') from None
  return Model(manifest, members)
