"""A workdir: what it holds (a marker), who may write it (a lock), and writing its files safely.

  WORKDIR/workdir.json   {"kind": "run" | "ensemble", "format": 1}, written when the workdir is made
  WORKDIR/.lock          flock held (through `filelock`) by the one process writing the workdir
  WORKDIR/.lock.owner    that process's pid and host, for the message a second writer gets

`open_for_writing(path, kind)` is how `train` and `ensemble` enter a workdir: it refuses a path
that is a file, an unwritable directory, a workdir of the other kind, or one another process is
writing, and holds the lock until the block ends. The kernel releases a flock when its process
dies, so a lock left by a killed process is simply taken over. Readers (evaluate, predict) take
no lock: every file they read is replaced atomically (`write_text`, orbax's renamed directories).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import shutil
import socket
import time
from typing import Any, Iterator

import filelock
import numpy as np

from genre_jax.errors import DiskFullError
from genre_jax.errors import GenreJaxError

MARKER, LOCK, OWNER = 'workdir.json', '.lock', '.lock.owner'
FORMAT = 1
RUN, ENSEMBLE = 'run', 'ensemble'
_COMMANDS = {RUN: 'python -m genre_jax.train', ENSEMBLE: 'python -m genre_jax.ensemble'}


def kind(path: str | os.PathLike) -> str | None:
  """'run', 'ensemble', or None for a path that holds neither (absent or empty).

  Workdirs written before the marker existed are recognised by their contents.
  """
  path = pathlib.Path(path)
  marker = path / MARKER
  if marker.is_file():
    try:
      spec = json.loads(marker.read_text())
      found, version = spec['kind'], spec['format']
    except (ValueError, KeyError, TypeError) as e:
      raise GenreJaxError(f'{marker} is not a valid workdir marker ({e}); it should read '
                          f'{{"kind": "run" or "ensemble", "format": {FORMAT}}}.') from None
    if found not in _COMMANDS:
      raise GenreJaxError(f'{marker}: unknown workdir kind {found!r}.')
    if version > FORMAT:
      raise GenreJaxError(f'{path} was written by a newer genre_jax (workdir format {version}, '
                          f'this one reads {FORMAT}); upgrade genre_jax.')
    return found
  if (path / 'ensemble.json').exists():
    return ENSEMBLE
  if (path / 'checkpoints').exists() or (path / 'best').exists():
    return RUN
  return None


def check_kind(path: str | os.PathLike, expected: str) -> None:
  """Refuses a workdir that holds the other kind of thing."""
  found = kind(path)
  if found is not None and found != expected:
    raise GenreJaxError(
        f'{path} is {"an" if found == ENSEMBLE else "a"} {found} workdir; {_COMMANDS[expected]} '
        f'writes {expected} workdirs only. Give it a new --workdir (use {_COMMANDS[found]} on this '
        'one).')


def write_marker(path: pathlib.Path, what: str) -> None:
  if not (path / MARKER).exists():
    write_text(path / MARKER, json.dumps({'kind': what, 'format': FORMAT}) + '\n')


def _check_directory(path: pathlib.Path) -> bool:
  """Makes `path` if needed (returns whether it was made) and checks that it can be written."""
  if path.exists() and not path.is_dir():
    raise GenreJaxError(f'--workdir {path} is a file, not a directory; give a directory path.')
  made = not path.exists()
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.write-test-{os.getpid()}'
    probe.write_bytes(b'')
    probe.unlink()
  except OSError as e:
    raise GenreJaxError(f'--workdir {path} cannot be written ({e.strerror or e}); choose a '
                        'writable directory.') from None
  return made


def _owner(path: pathlib.Path) -> str:
  """The lock holder as 'pid N on host H' (the holder writes it just after locking: wait a
  moment for it, and for a dead holder's entry to be replaced)."""
  for _ in range(40):
    try:
      info = json.loads((path / OWNER).read_text())
      if info['host'] != socket.gethostname() or _alive(info['pid']):
        return f'pid {info["pid"]} on host {info["host"]}'
    except (OSError, ValueError, KeyError, TypeError):
      pass
    time.sleep(0.05)
  return 'another process'


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return True


@contextlib.contextmanager
def open_for_writing(path: str | os.PathLike, what: str, *,
                     lead: bool = True) -> Iterator[pathlib.Path]:
  """Holds the workdir's lock for the block; refuses what `check_kind` and the lock refuse.

  A workdir this call created is removed again if the block fails before writing anything
  but the lock files, so a run that never started leaves nothing behind. In a multi-process run
  only the lead process (`lead=True`) checks and locks; the others write only their part of
  each orbax checkpoint.
  """
  path = pathlib.Path(path)
  if not lead:
    yield path
    return
  made = _check_directory(path)
  check_kind(path, what)  # Before locking: another kind's workdir gets nothing written.
  lock = filelock.FileLock(path / LOCK, timeout=0, preserve_lock_file=True)
  try:
    lock.acquire()
  except filelock.Timeout:
    raise GenreJaxError(f'workdir {path} is being written by {_owner(path)}; wait for it to '
                        'finish, stop it, or use another --workdir.') from None
  try:
    try:
      write_text(path / OWNER, json.dumps({'pid': os.getpid(), 'host': socket.gethostname()}))
    except OSError as e:
      raise GenreJaxError(f'--workdir {path} cannot be written ({e.strerror or e}).') from None
    yield path
  except BaseException:
    if made and {p.name for p in path.iterdir()} <= {LOCK, OWNER}:
      shutil.rmtree(path, ignore_errors=True)
    raise
  finally:
    lock.release()


def write_text(path: pathlib.Path, text: str, *, before_rename=None) -> None:
  """Replaces `path` atomically: a temporary file beside it, flushed to disk, then renamed.

  Args:
    before_rename: optional callable run between the two (fault injection in tests).
  """
  _write_atomically(path, text, 'w', before_rename)


def write_bytes(path: pathlib.Path, data: bytes, *, before_rename=None) -> None:
  """`write_text` of bytes: `path` replaced atomically by `data`."""
  _write_atomically(path, data, 'wb', before_rename)


def _write_atomically(path: pathlib.Path, data: str | bytes, mode: str, before_rename) -> None:
  tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
  with open(tmp, mode) as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  if before_rename is not None:
    before_rename()
  os.replace(tmp, path)
  fsync_directory(path.parent)


def write_json(path: pathlib.Path, obj: Any, **kwargs) -> None:
  """`write_text` of `obj` as indented JSON (numpy scalars and arrays as numbers and lists)."""
  write_text(path, json.dumps(obj, indent=1, default=_json_default), **kwargs)


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f'not JSON serialisable: {type(x)}')


def fsync_directory(path: pathlib.Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def remove_temporaries(path: pathlib.Path) -> None:
  """Deletes temporary files that a killed `write_text` left in `path`."""
  for tmp in path.glob('.*.tmp-*'):
    tmp.unlink(missing_ok=True)


def _is_disk_full(e: BaseException | None) -> bool:
  while e is not None:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if 'No space left on device' in str(e) or 'Disk quota exceeded' in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


@contextlib.contextmanager
def disk_full_is_an_error(path: str | os.PathLike) -> Iterator[None]:
  """Turns a full disk anywhere in the block (orbax and tensorstore included) into one line."""
  try:
    yield
  except GenreJaxError:
    raise
  except Exception as e:
    if not _is_disk_full(e):
      raise
    try:
      free = f'{shutil.disk_usage(path).free / 2**20:.1f} MiB free'
    except OSError:
      free = 'free space unknown'
    raise DiskFullError(
        f'no space left on the device of workdir {path} ({free}); nothing of the unfinished '
        'epoch was kept. Free some space and rerun the same command: it resumes from the last '
        'finished epoch.') from None
