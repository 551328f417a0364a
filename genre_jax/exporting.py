"""Exports a trained run or ensemble as a directory that `serving.load` runs with jax alone.

`build(run)` turns each model of a run (one) or an ensemble (one per member) into
`score(params, tokens [b, l] int32, lengths [b] int32) -> probabilities [b, G] float32`: the model
in evaluation mode, then the run's calibration (`run.calibration.logits`) and the sigmoid, traced
once by `jax.export` with a symbolic batch size b and a symbolic width l <= max_length (every
architecture is exact at any width that holds the longest text: models mask by the lengths). Each
tokenizer becomes a `tokenizers` JSON pipeline with the same ids. `write(run, out)` writes the
directory `serving` describes, atomically; `serve --workdir` uses `build` in memory.

The parameters are the scorer's first argument, saved beside it as `params.npz`, rather than
constants baked into the StableHLO: one copy of the weights whatever the number of compiled
shapes, a small module that XLA compiles quickly (large constants slow constant folding and the
compilation cache's keys), and the weights stay readable with numpy alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import pathlib
import shutil
from typing import Any, Sequence

import filelock
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genre_jax import inference
from genre_jax import serving
from genre_jax import workdir as workdir_lib
from genre_jax.data import text as text_lib
from genre_jax.errors import GenreJaxError

PLATFORMS = ('cpu', 'cuda', 'tpu')  # What `jax.export` lowers the scorers for by default.
KNOWN_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
MIN_WIDTH = 16  # The narrowest padded width; the others double up to max_length.
# Checked after writing: the export gives the run's own probabilities on these texts.
PROBE_TEXTS = ('A retired hitman is pulled back for one last job.',
               'Two strangers fall in love in Paris; ÉTÉ, naïve café — “quoted” ﬁnale!',
               '', '?!', 'A ghost haunts an old house. ' * 60)
TOLERANCE = 1e-5


@dataclasses.dataclass
class MemberExport:
  """One model of the export: its manifest entry, scorer, parameters and tokenizer JSON."""
  spec: dict[str, Any]
  scorer: jax.export.Exported
  params: dict[str, np.ndarray]
  tokenizer_json: str


def widths(max_length: int) -> list[int]:
  """The padded widths a batch is cut to: MIN_WIDTH, doubling, below max_length; max_length."""
  out, w = [], MIN_WIDTH
  while w < max_length:
    out.append(w)
    w *= 2
  return out + [max_length]


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
  unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
  if unknown or not platforms:
    raise GenreJaxError(f'--platforms: unknown platform(s) {", ".join(unknown) or "(none)"}; '
                        f'choose from {", ".join(KNOWN_PLATFORMS)}.')
  return tuple(platforms)


def scoring_function(run: inference.Run):
  """(score, params): score(params, tokens [b, l] int32, lengths [b] int32) -> calibrated
  probabilities [b, G] float32 of `run`'s model, and params {name: array} (its `nnx.Param`s)."""
  graphdef, state, rest = nnx.split(run.model, nnx.Param, ...)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
  names = [jax.tree_util.keystr(path, simple=True, separator='/') for path, _ in leaves]
  params = {name: np.asarray(x) for name, (_, x) in zip(names, leaves)}
  abstract_rest = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), rest)
  calibration = run.calibration

  def score(params, tokens, lengths):
    model = nnx.merge(graphdef, jax.tree.unflatten(treedef, [params[n] for n in names]),
                      jax.tree.map(inference.placeholder, abstract_rest))  # RNGs: unused.
    logits = model(tokens, lengths).astype(jnp.float32)
    return jax.nn.sigmoid(calibration.logits(logits)).astype(jnp.float32)

  return score, params


def tokenizer_json(tokenizer, max_length: int) -> tuple[str, int]:
  """A `tokenizers` JSON pipeline giving `tokenizer.encode(texts, max_length)`'s ids (up to the
  padding, which `serving` adds), and the id of a text without tokens."""
  import tokenizers
  if isinstance(tokenizer, text_lib.WordTokenizer):
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {w: i for i, w in enumerate(tokenizer.vocab)}, unk_token=text_lib.OOV))
    tok.normalizer = text_lib.normalizer(tokenizer.lowercase)  # The word tokenizer's own.
    tok.pre_tokenizer = text_lib.pre_tokenizer()
    empty_id = tokenizer.oov_id
  elif tokenizer.to_dict().get('kind') == 'hf':
    tok = tokenizers.Tokenizer.from_str(tokenizer.to_dict()['tokenizer_json'])
    tok.no_padding()
    empty_id = tokenizer.unk_id  # As HFTokenizer.encode gives a text without ids.
  else:
    raise GenreJaxError(f'cannot export a tokenizer of kind {tokenizer.to_dict().get("kind")!r}.')
  tok.enable_truncation(max_length)
  return tok.to_str(), int(empty_id)


def export_member(run: inference.Run, platforms: Sequence[str]) -> MemberExport:
  """Traces and exports one run's scorer (see the module docstring)."""
  max_length = int(run.config.data.max_length)
  score, params = scoring_function(run)
  b, l = jax.export.symbolic_shape('b, l', constraints=(f'l <= {max_length}',))
  args = ({k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()},
          jax.ShapeDtypeStruct((b, l), jnp.int32), jax.ShapeDtypeStruct((b,), jnp.int32))
  try:
    scorer = jax.export.export(jax.jit(score), platforms=tuple(platforms))(*args)
  except (ValueError, NotImplementedError) as e:
    raise GenreJaxError(f'cannot export {run.workdir} for platforms {",".join(platforms)} '
                        f'({str(e).splitlines()[0]:.200}); try --platforms=cpu.') from None
  json_text, empty_id = tokenizer_json(run.tokenizer, max_length)
  spec = {'model': run.config.model.name, 'source': str(run.workdir),
          'max_length': max_length, 'pad_id': int(run.tokenizer.pad_id), 'empty_id': empty_id,
          'widths': widths(max_length), 'platforms': list(scorer.platforms),
          'calibration': run.calibration.to_dict()}
  return MemberExport(spec, scorer, params, json_text)


def build(run: inference.Run | inference.Ensemble,
          platforms: Sequence[str] | None = None) -> tuple[dict[str, Any], list[MemberExport]]:
  """The manifest (without its 'files') and the exported members of a run or an ensemble.

  Args:
    run: from `inference.load_run`.
    platforms: what to lower for (default: this machine's backend only).
  """
  platforms = check_platforms(platforms or (jax.default_backend(),))
  ensemble = isinstance(run, inference.Ensemble)
  runs = run.members if ensemble else [run]
  members = [export_member(r, platforms) for r in runs]
  for k, m in enumerate(members):
    m.spec['dir'] = f'member-{k}'
  weights = getattr(run, 'weights', None)
  manifest = {
      'format': serving.FORMAT, 'format_version': serving.FORMAT_VERSION,
      'genre_jax_version': importlib.metadata.version('genre_jax'),
      'jax_version': jax.__version__,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'source_workdir': str(pathlib.Path(run.workdir).resolve()),
      'kind': 'ensemble' if ensemble else 'run',
      'labels': list(run.labels.classes), 'thresholds': run.thresholds,
      'calibration': run.calibration.to_dict(),
      'weights': None if weights is None else [float(w) for w in weights],
      'members': [m.spec for m in members],
  }
  return manifest, members


def in_memory(run, max_batch: int = serving.MAX_BATCH) -> serving.Model:
  """`serving.Model` of a loaded run or ensemble without writing it (`serve --workdir`)."""
  manifest, members = build(run)
  return serving.Model(manifest, [serving.Member(m.spec, m.scorer, m.params, m.tokenizer_json,
                                                 max_batch) for m in members])


def write(run, out: str | os.PathLike, platforms: Sequence[str] = PLATFORMS) -> dict[str, Any]:
  """Exports `run` to the directory `out` and returns its manifest.

  The directory is written beside `out` under a temporary name, checked (`verify`), then renamed
  to `out`; an earlier export there is replaced, any other existing directory refused. A lock
  beside `out` keeps two exports to the same path apart.

  Raises:
    GenreJaxError: `out` is a file or a directory that is not an export, another export is
      writing it, the disk is full, or a platform cannot be lowered for.
  """
  out = pathlib.Path(out).absolute()
  check_out(out)
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(out.parent / f'.{out.name}.lock', timeout=0,
                            preserve_lock_file=True)
    lock.acquire()
  except filelock.Timeout:
    raise GenreJaxError(f'--out {out} is being written by another export; wait for it to '
                        'finish or choose another --out.') from None
  except OSError as e:
    raise GenreJaxError(f'--out {out} cannot be written ({e.strerror or e}).') from None
  try:
    with workdir_lib.disk_full_is_an_error(out.parent):
      for stale in out.parent.glob(f'.{out.name}.tmp-*'):  # Left by a killed export.
        shutil.rmtree(stale, ignore_errors=True)
      tmp = out.parent / f'.{out.name}.tmp-{os.getpid()}'
      try:
        manifest, members = build(run, platforms)
        manifest['files'] = _write_files(tmp, manifest, members)
        workdir_lib.write_json(tmp / serving.MANIFEST, manifest)
        verify(run, tmp)
        _replace(tmp, out)
      finally:
        shutil.rmtree(tmp, ignore_errors=True)
  finally:
    lock.release()
  return manifest


def check_out(out: pathlib.Path) -> None:
  """Refuses an `out` that is a file, or a non-empty directory without an export's manifest."""
  if out.exists() and not out.is_dir():
    raise GenreJaxError(f'--out {out} is a file; give a directory path for the export.')
  if out.is_dir() and any(out.iterdir()):
    try:
      manifest = json.loads((out / serving.MANIFEST).read_text(encoding='utf-8'))
      ours = isinstance(manifest, dict) and manifest.get('format') == serving.FORMAT
    except (OSError, ValueError):
      ours = False
    if not ours:
      raise GenreJaxError(f'--out {out} is a directory that holds no export; choose a new path '
                          '(an earlier export is replaced, anything else is left alone).')


def _write_files(tmp: pathlib.Path, manifest: dict[str, Any],
                 members: list[MemberExport]) -> dict[str, str]:
  """Writes each member's files under `tmp`; returns {relative path: SHA-256}."""
  files = {}
  for m in members:
    folder = tmp / m.spec['dir']
    folder.mkdir(parents=True)
    _write_bytes(folder / serving.SCORER, bytes(m.scorer.serialize()))
    _write_bytes(folder / serving.TOKENIZER, m.tokenizer_json.encode('utf-8'))
    with open(folder / serving.PARAMS, 'wb') as f:
      np.savez(f, **m.params)
      f.flush()
      os.fsync(f.fileno())
    for name in (serving.SCORER, serving.PARAMS, serving.TOKENIZER):
      files[f'{m.spec["dir"]}/{name}'] = serving.sha256(folder / name)
  return files


def _write_bytes(path: pathlib.Path, data: bytes) -> None:
  with open(path, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _replace(tmp: pathlib.Path, out: pathlib.Path) -> None:
  """Renames `tmp` to `out`, moving an earlier export there aside first (then deleting it)."""
  old = out.parent / f'.{out.name}.old-{os.getpid()}'
  if out.exists():
    os.rename(out, old)
  os.rename(tmp, out)
  workdir_lib.fsync_directory(out.parent)
  shutil.rmtree(old, ignore_errors=True)


def verify(run, directory: pathlib.Path) -> None:
  """Loads the export with `serving` and checks that its token ids and probabilities on
  `PROBE_TEXTS` are the run's own.

  Raises:
    GenreJaxError: they differ (by more than `TOLERANCE` for the probabilities).
  """
  model = serving.load(directory, max_batch=8)
  texts = list(PROBE_TEXTS)
  runs = run.members if isinstance(run, inference.Ensemble) else [run]
  for r, member in zip(runs, model.members):
    want = r.tokenizer.encode(texts, r.config.data.max_length)
    if any(not np.array_equal(a, b) for a, b in zip(member.encode(texts), want)):
      raise GenreJaxError(f'the exported tokenizer of {r.workdir} gives other ids than the run\'s '
                          'on the probe texts; this tokenizer cannot be exported.')
  diff = float(np.abs(model.probabilities(texts) - run.probs(texts)).max())
  if not diff <= TOLERANCE:
    raise GenreJaxError(f'the exported model\'s probabilities differ from the run\'s by {diff:.2g} '
                        f'(more than {TOLERANCE:g}) on the probe texts; nothing was written.')
