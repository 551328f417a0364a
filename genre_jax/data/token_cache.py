"""An optional on-disk cache of tokenisation: a second run on the same texts skips it.

  digest = token_cache.digest(texts)
  tokenizer = token_cache.fitted(directory, digest, params, fit)   # fit(texts) on a miss
  tokens, lengths = token_cache.encode(directory, tokenizer, texts, max_length, digest)

`directory` is `config.data.token_cache` (None: no cache, everything is computed). An entry's name
is a SHA-256 of all its contents depend on: the texts themselves (so a changed data file, column,
split or `max_examples` gives another key, and a file rewritten with the same texts reuses it),
the tokenizer (`to_dict()`) or the fit's parameters, `max_length`, and the versions of this format
and of `tokenizers`. Entries:

  vocab-KEY.json     a fitted tokenizer's `to_dict()`.
  tokens-KEY/        tokens.npy [n, L] of `text.token_dtype(vocab_size)` (uint16 for a
                     vocabulary of up to 65,536 ids) and lengths.npy [n] int32, read back as
                     read-only memory maps (the page cache holds them, shared between
                     processes). An entry whose arrays have other shapes or dtypes is computed
                     again.

Each entry is written under a temporary name, flushed to disk, then renamed into place (atomic
on POSIX), so a reader sees a whole entry or none; one that cannot be read is computed again.
"""

from collections.abc import Callable, Sequence
import contextlib
import hashlib
import json
import os
from pathlib import Path
import shutil
import tempfile

import numpy as np

from genre_jax import errors
from genre_jax.data import text

FORMAT_VERSION = 1


def digest(texts: Sequence[str]) -> str:
  """SHA-256 of n texts (their lengths, then their UTF-8 bytes, a chunk at a time)."""
  h = hashlib.sha256(f'{len(texts)}\n'.encode())
  for start in range(0, len(texts), text.CHUNK_SIZE):
    chunk = texts[start:start + text.CHUNK_SIZE]
    h.update(np.fromiter(map(len, chunk), np.int64, len(chunk)).tobytes())
    h.update('\0'.join(chunk).encode('utf-8', 'surrogatepass'))
  return h.hexdigest()


def fitted(directory: str | os.PathLike | None, texts_digest: str, params: dict,
           fit: Callable[[], object]):
  """The tokenizer that `fit()` makes from texts with `texts_digest` and `params` (JSON-able),
  read from the cache when it holds one."""
  if directory is None:
    return fit()
  path = Path(directory) / f'vocab-{_key(texts_digest, params)}.json'
  try:
    return text.tokenizer_from_dict(json.loads(path.read_text()))
  except (OSError, ValueError, KeyError, errors.GenreJaxError):
    pass  # None yet, or unreadable: fitted (again).
  tokenizer = fit()
  with _atomic(path) as tmp:
    tmp.write_text(json.dumps(tokenizer.to_dict()))
    _fsync(tmp)
  return tokenizer


def encode(directory: str | os.PathLike | None, tokenizer, texts: Sequence[str],
           max_length: int, texts_digest: str | None = None,
           pool=None) -> tuple[np.ndarray, np.ndarray]:
  """`tokenizer.encode(texts, max_length)` a chunk at a time (in the worker processes of `pool`,
  see `text.encode_into`), from or into the cache.

  Returns:
    tokens [n, L] of `text.token_dtype(tokenizer.vocab_size)` and lengths [n] int32 (read-only
    memory maps when cached).
  """
  texts = list(texts) if not isinstance(texts, list) else texts
  n, dtype = len(texts), text.token_dtype(tokenizer.vocab_size)
  if directory is None:
    tokens, lengths = np.zeros((n, max_length), dtype), np.ones(n, np.int32)
    text.encode_into(tokenizer, texts, tokens, lengths, pool)
    return tokens, lengths
  params = {'tokenizer': tokenizer.to_dict(), 'max_length': max_length}
  entry = Path(directory) / f'tokens-{_key(texts_digest or digest(texts), params)}'
  cached = _read(entry, (n, max_length), dtype)
  if cached is not None:
    return cached
  with _atomic(entry) as tmp:
    tmp.mkdir()
    tokens = np.lib.format.open_memmap(tmp / 'tokens.npy', 'w+', dtype, (n, max_length))
    lengths = np.lib.format.open_memmap(tmp / 'lengths.npy', 'w+', np.int32, (n,))
    text.encode_into(tokenizer, texts, tokens, lengths, pool)
    for array in (tokens, lengths):
      array.flush()
      _fsync(Path(array.filename))
    del tokens, lengths
  return _read(entry, (n, max_length), dtype)


def _key(texts_digest: str, params: dict) -> str:
  import tokenizers
  blob = json.dumps({'format': FORMAT_VERSION, 'tokenizers': tokenizers.__version__,
                     'texts': texts_digest, **params}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _read(entry: Path, shape: tuple[int, int],
          dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
  """The arrays of a complete entry: tokens of `shape` [n, L] and `dtype`, lengths [n] int32;
  None when the entry is missing, unreadable or holds other shapes or dtypes."""
  try:
    tokens = np.load(entry / 'tokens.npy', mmap_mode='r')
    lengths = np.load(entry / 'lengths.npy', mmap_mode='r')
  except (OSError, ValueError, EOFError):
    return None
  if (tokens.shape, tokens.dtype, lengths.shape, lengths.dtype) != (
      shape, dtype, shape[:1], np.dtype(np.int32)):
    return None
  return tokens, lengths


@contextlib.contextmanager
def _atomic(path: Path):
  """Yields a temporary path next to `path`, renamed to `path` when the block succeeds (replacing
  an unreadable entry; a complete one written meanwhile by another process is kept)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', dir=path.parent)) / path.name
  try:
    yield tmp
    if path.is_dir():
      shutil.rmtree(path, ignore_errors=True)  # Unreadable (else it would have been used).
    try:
      os.replace(tmp, path)
    except OSError:  # A directory that another process has just put in place.
      pass
    _fsync(path.parent)
  finally:
    shutil.rmtree(tmp.parent, ignore_errors=True)


def _fsync(path: Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
