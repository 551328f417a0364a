"""A run's checkpoints and the protocol that commits an epoch in one atomic step.

A run's workdir holds:
  checkpoints/STEP/  parameters + optimizer state [+ moving average] after the epoch ending at STEP
  best/STEP/         parameters of the best epoch so far (what evaluate and predict use)
  commit.json        THE commit point: the checkpoints/ and best/ steps that are current, with the
                     SHA-256 of each of their files, and the epoch they belong to
  metrics.jsonl      one line per committed epoch, rewritten from the committed history
  split.json         the data split (record ids per split), written once when the run starts
Each checkpoint is an orbax directory with the arrays (`state`) and a JSON item `meta`: config,
tokenizer, label set, the split's SHA-256, epoch, step, metric history, early-stopping state.

`commit_epoch` writes an epoch in this order (each point is named in `faults.POINTS`):
  1. best/STEP when the epoch improved, 2. checkpoints/STEP (orbax writes each to a temporary
  directory and renames it), 3. commit.json (a temporary file, then a rename): the commit,
  4. metrics.jsonl, 5. deletes the steps commit.json no longer names.
A writer that opens the workdir calls `recover`, which deletes whatever commit.json does not name,
so a kill or a full disk at any instant leaves the last committed epoch, and rerunning the command
redoes only the unfinished one. Readers open only the steps commit.json names, after checking
their checksums: a truncated or garbled file is named instead of failing inside tensorstore. The
checkpoints/ step before the newest is kept too: if the newest is corrupt, training resumes from
the one before, saying so. Arrays are restored with the current mesh's (replicated) shardings, so
a run moves freely between machines with different device counts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from genre_jax import faults
from genre_jax import parallel
from genre_jax import workdir as workdir_lib
from genre_jax.errors import GenreJaxError

LATEST, BEST = 'checkpoints', 'best'
COMMIT_FILE, METRICS_FILE, SPLIT_FILE = 'commit.json', 'metrics.jsonl', 'split.json'
FORMAT = 1


@functools.lru_cache(maxsize=1)
def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def _digest(directory: pathlib.Path) -> dict[str, str]:
  """{path relative to `directory`: SHA-256} of every file below it."""
  out = {}
  for path in sorted(p for p in directory.rglob('*') if p.is_file()):
    with open(path, 'rb') as f:
      out[str(path.relative_to(directory))] = hashlib.file_digest(f, 'sha256').hexdigest()
  return out


def _steps(directory: pathlib.Path) -> list[int]:
  """The finished orbax step directories in `directory`, oldest first."""
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir()
                if p.name.isdigit() and (p / '_CHECKPOINT_METADATA').exists())


def _arrays(model: nnx.Module, optimizer=None, ema=None) -> dict[str, Any]:
  state = {'params': nnx.state(model, nnx.Param)}
  if optimizer is not None:
    state['optimizer'] = nnx.state(optimizer)
  if ema is not None:
    state['ema'] = nnx.state(ema, nnx.Param)
  return state


class RunCheckpoints:
  """The committed checkpoints of one run's workdir (see the module docstring)."""

  def __init__(self, workdir: str | pathlib.Path):
    self.workdir = pathlib.Path(workdir)
    self._record: dict[str, Any] | None = None
    self._checked: set[pathlib.Path] = set()  # Step directories whose checksums matched.

  # ---- Reading ---------------------------------------------------------------------------------

  @property
  def record(self) -> dict[str, Any] | None:
    """commit.json: {'epoch', 'latest', 'previous', 'best'}, each entry {'step', 'files'}."""
    if self._record is None:
      self._record = self._read_record()
    return self._record

  def _read_record(self) -> dict[str, Any] | None:
    path = self.workdir / COMMIT_FILE
    if not path.exists():  # No epoch committed yet, or a workdir from before commit.json.
      return None if (self.workdir / workdir_lib.MARKER).exists() else self._legacy_record()
    try:
      record = json.loads(path.read_text())
      assert record['format'] <= FORMAT and (record['latest'] or record['best'])
    except (ValueError, KeyError, TypeError, AssertionError) as e:
      raise GenreJaxError(f'{path} is unreadable or not a commit record ({e!r}); the workdir '
                          'cannot tell which checkpoint is current. Restore the file from a '
                          'backup or start afresh with a new --workdir.') from None
    return record

  def _legacy_record(self) -> dict[str, Any] | None:
    """Workdirs without commit.json: the newest finished steps (best not newer than latest)."""
    latest = _steps(self.workdir / LATEST)
    if not latest:
      best = _steps(self.workdir / BEST)
      return None if not best else {'format': FORMAT, 'epoch': None, 'latest': None,
                                    'previous': None, 'best': {'step': best[-1], 'files': None}}
    best = [s for s in _steps(self.workdir / BEST) if s <= latest[-1]]
    return {'format': FORMAT, 'epoch': None, 'latest': {'step': latest[-1], 'files': None},
            'previous': None,
            'best': {'step': best[-1], 'files': None} if best else None}

  def exists(self, kind: str = LATEST) -> bool:
    return self.record is not None and self.record.get('latest' if kind == LATEST else 'best')

  def _entry(self, kind: str) -> dict[str, Any]:
    if not self.exists(kind):
      raise GenreJaxError(self._missing(kind))
    return self.record['latest' if kind == LATEST else 'best']

  def _verified(self, kind: str, entry: dict[str, Any]) -> pathlib.Path:
    """The step directory of `entry`, after checking every file against its checksum."""
    directory = self.workdir / kind / str(entry['step'])
    if directory in self._checked:  # Read again in one process (meta, then arrays): hash once.
      return directory
    if not directory.is_dir():
      raise GenreJaxError(f'the committed checkpoint {directory} is missing (deleted by hand?).'
                          + self._hint(kind))
    for name, digest in (entry.get('files') or {}).items():
      path = directory / name
      if not path.is_file():
        raise GenreJaxError(f'checkpoint file {path} is missing.' + self._hint(kind))
      with open(path, 'rb') as f:
        if hashlib.file_digest(f, 'sha256').hexdigest() != digest:
          raise GenreJaxError(f'checkpoint file {path} is corrupt (its checksum differs from the '
                              'one recorded when it was written).' + self._hint(kind))
    self._checked.add(directory)
    return directory

  def _hint(self, kind: str) -> str:
    if kind == BEST:
      return (' The best epoch cannot be used; retrain (a new --workdir) or restore the workdir '
              'from a backup.')
    return (' Training cannot resume from it; evaluate and predict still use best/ if it is '
            'intact. Start afresh with a new --workdir.')

  def _restore(self, kind: str, directory: pathlib.Path, args: dict[str, Any]) -> dict[str, Any]:
    try:
      return _checkpointer().restore(directory.absolute(), args=ocp.args.Composite(**args))
    except GenreJaxError:
      raise
    except Exception as e:  # Workdirs without checksums: a damaged file surfaces here.
      first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
      raise GenreJaxError(f'checkpoint {directory} cannot be read ({first}).'
                          + self._hint(kind)) from None

  def read_meta(self, kind: str = LATEST, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON metadata of the committed checkpoint of `kind` (or of `entry`); no arrays."""
    directory = self._verified(kind, entry or self._entry(kind))
    return self._restore(kind, directory, {'meta': ocp.args.JsonRestore()})['meta']

  def restore(self, kind: str, mesh: Mesh, model: nnx.Module,
              optimizer: nnx.Optimizer | None = None, *,
              ema: nnx.Module | None = None) -> dict[str, Any]:
    """Restores the committed arrays of `kind` into `model` (and `optimizer`, `ema`), replicated
    over `mesh` whatever the device count they were saved from; returns the metadata."""
    directory = self._verified(kind, self._entry(kind))
    replicated = NamedSharding(mesh, PartitionSpec())
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          _arrays(model, optimizer, ema))
    restored = self._restore(kind, directory, {'state': ocp.args.StandardRestore(target),
                                               'meta': ocp.args.JsonRestore()})
    nnx.update(model, restored['state']['params'])
    if optimizer is not None:
      nnx.update(optimizer, restored['state']['optimizer'])
    if ema is not None:
      nnx.update(ema, restored['state']['ema'])
    return restored['meta']

  def _missing(self, kind: str) -> str:
    if not self.workdir.exists():
      return f'workdir {self.workdir} does not exist.'
    what = 'best' if kind == BEST else 'latest'
    return (f'workdir {self.workdir} holds no {what} checkpoint ({self.workdir / kind} is missing '
            'or empty). Train first: python -m genre_jax.train --config CONFIG --workdir '
            f'{self.workdir}')

  # ---- Writing (under the workdir's lock) --------------------------------------------------------

  def recover(self) -> dict[str, Any] | None:
    """Deletes everything newer than (or left over from before) the last commit, rewrites
    metrics.jsonl from it, and returns its metadata (None for a fresh workdir).

    When the newest checkpoints/ step is corrupt and the one before is intact, the commit is
    rolled back to that one (the unfinished epoch is then trained again). In a multi-process run
    the lead process writes while the others wait; every process reads (orbax reads together)."""
    record = self.record
    if parallel.is_lead():
      workdir_lib.remove_temporaries(self.workdir)
      if record is not None and record['latest'] is None:
        raise GenreJaxError(f'workdir {self.workdir} holds a best checkpoint but no training '
                            'checkpoint to resume from; train in a new --workdir.')
      self._collect()
    parallel.barrier('genre_jax.checkpoint.recover')
    if record is None:
      return None
    try:
      meta, record = self.read_meta(LATEST), dict(record)
    except GenreJaxError as e:
      meta = self._previous_meta(record, e)
      print(f'warning: {e} Resuming from the previous epoch\'s checkpoint '
            f'{self.workdir / LATEST / str(meta["step"])}.', flush=True)
      record = {**record, 'latest': record['previous'], 'previous': None}
    if parallel.is_lead():
      current = {**self._with_digests(record), 'epoch': meta['epoch']}
      if current != self.record:  # A rollback, or a workdir from before commit.json.
        self._write_record(current)
      self._collect()
      self._write_metrics(meta['history'])
    parallel.barrier('genre_jax.checkpoint.recovered')
    self._record = None
    return meta

  def _previous_meta(self, record: dict[str, Any], error: GenreJaxError) -> dict[str, Any]:
    """The metadata of the checkpoint before the newest, or `error` when it is unusable too."""
    if not record.get('previous'):
      raise error
    try:
      return self.read_meta(LATEST, record['previous'])
    except GenreJaxError:
      raise error from None

  def _with_digests(self, record: dict[str, Any]) -> dict[str, Any]:
    """`record` with the checksums a workdir from before commit.json lacks."""
    out = dict(record)
    for key, kind in (('latest', LATEST), ('previous', LATEST), ('best', BEST)):
      if record.get(key) and record[key].get('files') is None:
        out[key] = {'step': record[key]['step'],
                    'files': _digest(self.workdir / kind / str(record[key]['step']))}
    return out

  def commit_epoch(self, meta: dict[str, Any], model: nnx.Module, optimizer: nnx.Optimizer, *,
                   ema: nnx.Module | None = None, best: nnx.Module | None = None) -> None:
    """Makes the epoch in `meta` current in one step (see the module docstring).

    Args:
      meta: the run's metadata after the epoch (its 'step', 'epoch' and 'history').
      model, optimizer, ema: the training state to resume from.
      best: the parameters to keep as the best epoch, or None when the epoch did not improve.
    """
    faults.reached('epoch_begin_commit')
    step, record = meta['step'], self.record or {}
    new = {'format': FORMAT, 'epoch': meta['epoch'], 'previous': record.get('latest'),
           'best': record.get('best')}
    if best is not None:
      new['best'] = self._save(BEST, step, _arrays(best), meta)
      faults.reached('epoch_best_saved')
    new['latest'] = self._save(LATEST, step, _arrays(model, optimizer, ema), meta)
    faults.reached('epoch_latest_saved')
    if parallel.is_lead():  # The others have written their part of each orbax checkpoint.
      self._write_record(new, before_rename=lambda: faults.reached('commit_tmp_written'))
      faults.reached('epoch_committed')
      self._write_metrics(meta['history'])
      faults.reached('epoch_metrics_written')
      self._collect()
      faults.reached('epoch_collected')
    parallel.barrier('genre_jax.checkpoint.commit_epoch')
    self._record = None  # Every process reads the new commit from the file.

  def write_split(self, split_ids: dict[str, list[str]]) -> str:
    """Writes split.json (lead process; once, when the run starts); returns its SHA-256."""
    text = json.dumps(split_ids)
    if parallel.is_lead():
      workdir_lib.write_text(self.workdir / SPLIT_FILE, text)
    return hashlib.sha256(text.encode()).hexdigest()

  def read_split(self, meta: dict[str, Any]) -> dict[str, list[str]]:
    """The run's split: split.json, checked against `meta['split_sha256']` (runs written before
    split.json carry the split in `meta['split']`)."""
    if 'split' in meta:
      return meta['split']
    path = self.workdir / SPLIT_FILE
    try:
      text = path.read_text()
    except OSError as e:
      raise GenreJaxError(f'{path} cannot be read ({e.strerror or e}); the run cannot tell '
                          'which records it was trained on.') from None
    if hashlib.sha256(text.encode()).hexdigest() != meta.get('split_sha256'):
      raise GenreJaxError(f'{path} is corrupt (its checksum differs from the one in the '
                          'checkpoint); restore it from a backup.')
    return json.loads(text)

  def write_best_only(self, step: int) -> None:
    """Commits a copied best/STEP as the only checkpoint (an ensemble member's copy)."""
    files = _digest(self.workdir / BEST / str(step))
    self._write_record({'format': FORMAT, 'epoch': None, 'latest': None, 'previous': None,
                        'best': {'step': step, 'files': files}})

  def _save(self, kind: str, step: int, arrays: dict[str, Any],
            meta: dict[str, Any]) -> dict[str, Any]:
    directory = self.workdir / kind / str(step)
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
      _checkpointer().save(directory.absolute(), args=ocp.args.Composite(
          state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)
    except BaseException:  # E.g. a full disk: stop orbax's threads before the error surfaces.
      _checkpointer().close()
      _checkpointer.cache_clear()
      raise
    return {'step': step, 'files': _digest(directory) if parallel.is_lead() else None}

  def _write_record(self, record: dict[str, Any], **kwargs) -> None:
    workdir_lib.write_json(self.workdir / COMMIT_FILE, record, **kwargs)
    self._record = record

  def _write_metrics(self, history: list[dict[str, Any]]) -> None:
    workdir_lib.write_text(self.workdir / METRICS_FILE,
                           ''.join(json.dumps(row) + '\n' for row in history))

  def _collect(self) -> None:
    """Deletes every entry of checkpoints/ and best/ that commit.json does not name."""
    record = self.record or {}
    keep = {LATEST: {e['step'] for e in (record.get('latest'), record.get('previous')) if e},
            BEST: {record['best']['step']} if record.get('best') else set()}
    for kind, steps in keep.items():
      directory = self.workdir / kind
      if not directory.is_dir():
        continue
      for path in directory.iterdir():
        if not (path.name.isdigit() and int(path.name) in steps):
          shutil.rmtree(path) if path.is_dir() else path.unlink()
