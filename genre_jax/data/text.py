"""Word tokenizer (vocabulary built on the training split) and multi-label genre encoder.

Both are plain Python/numpy objects that serialise to JSON-able dicts, so a run directory can
rebuild exactly the ids and label columns it was trained with.
"""

import collections
from collections.abc import Callable, Iterable, Sequence
import functools
import hashlib
import itertools
import json
import re
import threading
import warnings

import numpy as np

from genre_jax import errors
from genre_jax.data import workers

PAD, OOV = '<pad>', '<oov>'
CHUNK_SIZE = workers.CHUNK_SIZE  # Texts encoded, labelled or hashed at a time.

# kind -> class with a `from_dict` classmethod; see `register_tokenizer`.
TOKENIZERS: dict[str, type] = {}


def register_tokenizer(kind: str) -> Callable[[type], type]:
  """Class decorator: makes `tokenizer_from_dict` rebuild tokenizers whose dict has this kind."""

  def register(cls):
    TOKENIZERS[kind] = cls
    return cls

  return register


# Tokenizer kinds registered by modules with optional dependencies, imported on first use.
_LAZY_TOKENIZERS = {'hf': 'genre_jax.pretrained'}


def tokenizer_from_dict(d: dict):
  """Rebuilds any registered tokenizer from its `to_dict()`."""
  kind = d.get('kind')
  if kind not in TOKENIZERS and kind in _LAZY_TOKENIZERS:
    import importlib
    importlib.import_module(_LAZY_TOKENIZERS[kind])
  if kind not in TOKENIZERS:
    raise errors.GenreJaxError(f'unknown tokenizer kind {kind!r}; known kinds: '
                               f'{", ".join(sorted(set(TOKENIZERS) | set(_LAZY_TOKENIZERS)))}.')
  return TOKENIZERS[kind].from_dict(d)


@register_tokenizer('word')
class WordTokenizer:
  """Words mapped to ids: 0 = <pad>, 1 = <oov>, then by training frequency.

  Words are those of a Hugging Face `tokenizers` pipeline: NFKC normalisation and lower-casing,
  then whitespace and punctuation splitting with the punctuation removed — the same words as
  scikit-learn's analyzer with token pattern `\\b\\w+\\b` (tested). The normalizer runs in Rust
  (skipped for ASCII texts, which it leaves unchanged but for the case); the split is one regular
  expression whose separators are asked of the `tokenizers` pre-tokenizer itself (`_Splitter`):
  the same words, four to five times faster than the pre-tokenizer's own per-word objects.

  Attributes:
    vocab: list of tokens; `vocab[i]` is the token with id i.
    lowercase: whether texts are lower-cased before splitting.
    pad_id: 0.
    oov_id: 1.
  """
  pad_id = 0
  oov_id = 1

  def __init__(self, vocab: Sequence[str], lowercase: bool = True):
    if list(vocab[:2]) != [PAD, OOV]:
      raise ValueError(f'vocab must start with {PAD!r}, {OOV!r}.')
    self.vocab = list(vocab)
    self.lowercase = lowercase
    self._index = {w: i for i, w in enumerate(self.vocab)}
    self._normalizer = normalizer(lowercase)

  @classmethod
  def fit(cls, texts: Sequence[str], vocab_size: int, min_count: int = 1,
          lowercase: bool = True, pool=None) -> 'WordTokenizer':
    """Builds the vocabulary from (training) texts.

    Args:
      texts: the training texts.
      vocab_size: maximum size including <pad> and <oov> (at least 2).
      min_count: minimum frequency of a kept token.
      lowercase: lower-case before splitting.
      pool: worker processes that count a chunk of texts each (`workers.pool`); None: here.

    Returns:
      A tokenizer whose ids after 0 and 1 follow descending frequency, ties alphabetical.
    """
    if vocab_size < 2:
      raise errors.DataError(f'vocab_size must be at least 2 (<pad> and <oov>), got {vocab_size}.')
    counts = collections.Counter()
    for part in workers.map_chunks(pool, count_words, texts, (lowercase,)):
      counts.update(part)
    ranked = sorted((token for token, n in counts.items() if n >= min_count),
                    key=lambda token: (-counts[token], token))
    return cls([PAD, OOV] + ranked[:vocab_size - 2], lowercase)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def tokenize(self, text: str) -> list[str]:
    """Splits one text into word tokens."""
    if text.isascii():  # NFKC leaves ASCII unchanged; ASCII lower-casing is Unicode's.
      return _splitter()(text.lower() if self.lowercase else text)
    return _splitter()(self._normalizer.normalize_str(text))

  def encode(self, texts: Sequence[str], max_length: int,
             chunk_size: int = CHUNK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Maps texts to padded id arrays, keeping the first `max_length` tokens of each.

    Args:
      texts: n texts.
      max_length: L, tokens per row.
      chunk_size: texts encoded at a time (bounds the memory of the per-word Python objects).

    Returns:
      tokens: [n, L] int32, padded with `pad_id`.
      lengths: [n] int32 in [1, L]; a text without tokens is one <oov> token.
    """
    tokens = np.full((len(texts), max_length), self.pad_id, np.int32)
    lengths = np.ones(len(texts), np.int32)
    for start in range(0, len(texts), chunk_size):
      stop = min(start + chunk_size, len(texts))
      tokens[start:stop], lengths[start:stop] = self._encode_chunk(texts[start:stop], max_length)
    return tokens, lengths

  def _encode_chunk(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """`encode` of a few texts: tokens [n, L] int32, lengths [n] int32."""
    get, oov, ids, lengths = self._index.get, itertools.repeat(self.oov_id), [], []
    for text in texts:
      words = self.tokenize(text)[:max_length] or [OOV]
      ids.extend(map(get, words, oov))  # vocab id, else oov_id.
      lengths.append(len(words))
    lengths = np.asarray(lengths, np.int32)
    starts = np.cumsum(lengths) - lengths
    rows = np.repeat(np.arange(len(lengths)), lengths)
    tokens = np.full((len(lengths), max_length), self.pad_id, np.int32)
    tokens[rows, np.arange(len(ids)) - starts[rows]] = ids
    return tokens, lengths

  def to_dict(self) -> dict:
    return {'kind': 'word', 'lowercase': self.lowercase, 'vocab': self.vocab}

  @classmethod
  def from_dict(cls, d: dict) -> 'WordTokenizer':
    return cls(d['vocab'], d['lowercase'])


def token_dtype(vocab_size: int) -> np.dtype:
  """The smallest dtype that stores the token ids 0 ... vocab_size - 1: uint8, uint16, else
  int32 (the dtype of the batches the model sees, see `batching.batches`)."""
  for dtype in (np.uint8, np.uint16):
    if vocab_size - 1 <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  return np.dtype(np.int32)


def encode_into(tokenizer, texts: Sequence[str], tokens: np.ndarray, lengths: np.ndarray,
                pool=None, chunk_size: int | None = None) -> None:
  """Encodes texts chunk by chunk into preallocated arrays (of memory or of a file).

  Args:
    tokenizer: any tokenizer (`encode(texts, max_length) -> (tokens [m, L], lengths [m])`).
    texts: n texts.
    tokens: [n, L] integer ids (int32 or narrower, see `token_dtype`), filled in place.
    lengths: [n] int32, filled in place.
    pool: worker processes (`workers.pool`) that encode a chunk each when the tokenizer is a
      `WordTokenizer` (others, like the `tokenizers` library's, already use every core); None: here.
    chunk_size: texts per call of `encode` (default `workers.CHUNK_SIZE`).

  Raises:
    ValueError: if an id does not fit the dtype of `tokens`.
  """
  texts = list(texts) if not isinstance(texts, list) else texts
  if pool is not None and isinstance(tokenizer, WordTokenizer):
    d = tokenizer.to_dict()
    key = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
    fn, args = _encode_in_worker, (tokens.shape[1], key, d)
  else:
    fn, args = tokenizer.encode, (tokens.shape[1],)
  limit, start = np.iinfo(tokens.dtype).max, 0
  for chunk, chunk_lengths in workers.map_chunks(pool, fn, texts, args, chunk_size):
    if chunk.size and chunk.max() > limit:
      raise ValueError(f'token id {chunk.max()} does not fit {tokens.dtype} (the tokenizer\'s '
                       'vocab_size is too small for its ids).')
    stop = start + len(chunk_lengths)
    tokens[start:stop], lengths[start:stop] = chunk, chunk_lengths
    start = stop


def count_words(texts: Sequence[str], lowercase: bool) -> collections.Counter:
  """How often each word (as `WordTokenizer` splits them) occurs in `texts`."""
  words, counts = WordTokenizer([PAD, OOV], lowercase).tokenize, collections.Counter()
  for text in texts:
    counts.update(words(text))  # Counted in C (`collections._count_elements`).
  return counts


_WORKER_TOKENIZER: dict[str, WordTokenizer] = {}  # In a worker: key -> the last tokenizer used.


def _encode_in_worker(texts: Sequence[str], max_length: int, key: str,
                      tokenizer: dict) -> tuple[np.ndarray, np.ndarray]:
  """`WordTokenizer.encode` in a worker process; `tokenizer`: its `to_dict()`, `key` its hash."""
  if key not in _WORKER_TOKENIZER:
    _WORKER_TOKENIZER.clear()
    _WORKER_TOKENIZER[key] = WordTokenizer.from_dict(tokenizer)
  return _WORKER_TOKENIZER[key].encode(texts, max_length)


def normalizer(lowercase: bool):
  """The `tokenizers` normalizer of word tokens: NFKC, then lower-casing."""
  from tokenizers import normalizers
  return normalizers.Sequence(
      [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))


def pre_tokenizer():
  """The `tokenizers` pre-tokenizer that defines words: split on whitespace, drop punctuation."""
  from tokenizers import pre_tokenizers
  return pre_tokenizers.Sequence(
      [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior='removed')])


class _Splitter:
  """Splits normalised text into words exactly as `pre_tokenizer()` does, with one regex.

  The pre-tokenizer splits at characters that are whitespace or punctuation to it, whatever their
  neighbours, and removes them: the words are the maximal runs of the other characters. Which
  characters those are is asked of the pre-tokenizer itself, for ASCII at once and for any other
  character the first time a text holds it (so the rules and their Unicode version are the
  library's own); the regex `[^separators]+` is rebuilt when a new separator is seen.
  """

  def __init__(self):
    self._pre_tokenizer = pre_tokenizer()
    self._lock = threading.Lock()
    self._known, self._separators = frozenset(), frozenset()
    self._learn(set(map(chr, range(128))))

  def _learn(self, chars: set[str]) -> None:
    with self._lock:  # The regex is in place before its characters count as known.
      chars = chars - self._known
      kept = ''.join(w for w, _ in self._pre_tokenizer.pre_tokenize_str('x'.join(chars)))
      separators = self._separators | (chars - set(kept))
      if separators != self._separators:
        self._words = re.compile('[^' + ''.join(map(re.escape, sorted(separators))) + ']+')
        self._separators = separators
      self._known = self._known | chars

  def __call__(self, text: str) -> list[str]:
    if not text.isascii():
      new = set(text) - self._known
      if new:
        self._learn(new)
    return self._words.findall(text)


@functools.cache
def _splitter() -> _Splitter:
  return _Splitter()


class LabelEncoder:
  """Genre lists <-> multi-hot rows; the classes (sorted) are fixed by the training split.

  Attributes:
    classes: the G genre names; column g of the labels is `classes[g]`.
  """

  def __init__(self, classes: Sequence[str]):
    self.classes = sorted(classes)
    self._binarizer = None

  @property
  def binarizer(self):
    if self._binarizer is None:  # Imported on first use (predict never needs it).
      from sklearn import preprocessing
      self._binarizer = preprocessing.MultiLabelBinarizer(classes=self.classes,
                                                          sparse_output=True).fit([])
    return self._binarizer

  @classmethod
  def fit(cls, genres: Iterable[Sequence[str]]) -> 'LabelEncoder':
    """Uses every genre that occurs in `genres` (the training split's genre lists)."""
    return cls({g for row in genres for g in row})

  @property
  def num_labels(self) -> int:
    return len(self.classes)

  def transform(self, genres: Sequence[Sequence[str]]) -> tuple[np.ndarray, dict[str, int]]:
    """Encodes genre lists.

    Args:
      genres: n lists of genre names (matched to `classes` regardless of case).

    Returns:
      labels: [n, G] float32 multi-hot.
      unknown: genre -> number of occurrences dropped because the genre is not in `classes`.
    """
    spelling = {c.casefold(): c for c in self.classes}  # Case does not make another genre.
    known, unknown = set(self.classes), collections.Counter()
    labels = np.zeros((len(genres), len(self.classes)), np.float32)
    for start in range(0, len(genres), CHUNK_SIZE):  # Bounds the memory of the name lists.
      rows = [[spelling.get(g.casefold(), g) for g in row]
              for row in genres[start:start + CHUNK_SIZE]]
      unknown.update(g for row in rows for g in row if g not in known)
      with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='unknown class', category=UserWarning)
        labels[start:start + len(rows)] = self.binarizer.transform(rows).toarray()
    return labels, dict(unknown)

  def inverse_transform(self, labels: np.ndarray) -> list[list[str]]:
    """[n, G] {0, 1} (or bool) -> n genre lists in class order."""
    return [[self.classes[g] for g in np.flatnonzero(row)] for row in np.asarray(labels)]

  def to_dict(self) -> dict:
    return {'classes': self.classes}

  @classmethod
  def from_dict(cls, d: dict) -> 'LabelEncoder':
    return cls(d['classes'])
