"""Fetching registered data sets: local mirror, then cache, then a checked download.

Lookup order for a `DatasetSpec` with relative path `relpath`:
  1. a mirror directory (argument, else $GENRE_JAX_MIRROR): `<mirror>/<relpath>`, checksum checked;
  2. the cache (argument, else $GENRE_JAX_CACHE, else ~/.cache/genre_jax): `<cache>/<relpath>`,
     used when its checksum matches;
  3. a download from `spec.url` into a temporary file next to the cache entry, checked against
     `spec.sha256`, then moved into place atomically. A failed or wrong download leaves nothing.
"""

import hashlib
import os
from pathlib import Path
import tempfile
import urllib.request

from genre_jax import errors
from genre_jax.data import registry

MIRROR_ENV = 'GENRE_JAX_MIRROR'
CACHE_ENV = 'GENRE_JAX_CACHE'
_CHUNK = 1 << 20


def resolve_mirror(mirror: str | os.PathLike | None = None) -> Path | None:
  """The mirror directory: `mirror`, else $GENRE_JAX_MIRROR, else None."""
  mirror = mirror or os.environ.get(MIRROR_ENV)
  return Path(mirror).expanduser().resolve() if mirror else None


def resolve_cache(cache: str | os.PathLike | None = None) -> Path:
  """The cache directory: `cache`, else $GENRE_JAX_CACHE, else ~/.cache/genre_jax."""
  cache = cache or os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'genre_jax'
  return Path(cache).expanduser().resolve()


def sha256_file(path: Path) -> str:
  """Hex SHA-256 of a file."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def fetch(spec: registry.DatasetSpec, cache_dir: str | os.PathLike | None = None,
          mirror: str | os.PathLike | None = None, *, timeout: float = 60.0) -> Path:
  """Returns a local path to the checked file of `spec` (see the module docstring).

  Args:
    spec: the data set; override `url` (e.g. `dataclasses.replace(spec, url=...)`) to download
      from elsewhere.
    cache_dir: cache directory (default $GENRE_JAX_CACHE or ~/.cache/genre_jax).
    mirror: mirror directory (default $GENRE_JAX_MIRROR; none if unset).
    timeout: seconds before a stalled connection is abandoned.

  Returns:
    The path of the file in the mirror or in the cache.

  Raises:
    DataError: wrong checksum, no public address, or download failure (the message says what to
      download, where to put it, and how to use a mirror instead).
  """
  mirror = resolve_mirror(mirror)
  if mirror is not None:
    path = mirror / spec.relpath
    if path.is_file():
      _check(spec, path, f'The mirror copy {path} is damaged or a different version: replace '
             f'it with the file from {spec.url or "the original source"}.')
      return path
  target = resolve_cache(cache_dir) / spec.relpath
  if target.is_file() and (spec.sha256 is None or sha256_file(target) == spec.sha256):
    return target
  where = (f'(looked in the mirror {mirror / spec.relpath} and the cache {target})'
           if mirror else f'(looked in the cache {target})')
  if not spec.url:
    raise errors.DataError(
        f'data set {spec.name!r} has no public address and no local copy {where}. Download it '
        f'yourself and pass its path, e.g. `python -m genre_jax.data --dataset {spec.name} '
        f'--path data/{target.name}` (in a config: data.name={spec.name!r}, data.path=FILE), '
        f'or put it at {target}.')
  try:
    _download(spec, target, timeout)
  except OSError as e:  # urllib.error.URLError, TimeoutError, ConnectionError are OSErrors.
    reason = getattr(e, 'reason', None) or e
    raise errors.DataError(
        f'cannot download data set {spec.name!r} from {spec.url} ({reason}) {where}. Without '
        f'network access, download {spec.url} elsewhere and save it as {target}, or set '
        f'{MIRROR_ENV} to a directory holding {spec.relpath}.') from None
  return target


def _check(spec: registry.DatasetSpec, path: Path, advice: str) -> None:
  """Raises a `DataError` unless `path` has the SHA-256 of `spec` (when it has one)."""
  if spec.sha256 is not None and (actual := sha256_file(path)) != spec.sha256:
    raise errors.DataError(f'checksum mismatch for data set {spec.name!r} at {path}: SHA-256 is '
                           f'{actual}, expected {spec.sha256}. {advice}')


def _download(spec: registry.DatasetSpec, target: Path, timeout: float) -> None:
  """Downloads `spec.url` to `target` through a checked temporary file in the same directory."""
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{target.name}.', suffix='.part', dir=target.parent)
  try:
    with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(spec.url, timeout=timeout) as response:
      while chunk := response.read(_CHUNK):
        out.write(chunk)
    _check(spec, Path(tmp), f'Nothing was saved. The file at {spec.url} may have changed; '
           'download it yourself and check it, or use a mirror.')
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
