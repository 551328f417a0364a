"""Word tokenizer (vocabulary built on the training split) and multi-label genre encoder.

Both are plain Python/numpy objects that serialise to JSON-able dicts, so a run directory can
rebuild exactly the ids and label columns it was trained with.
"""

import collections
from collections.abc import Callable, Iterable, Sequence
import warnings

import numpy as np

from genre_jax import errors

PAD, OOV = '<pad>', '<oov>'

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

  Splitting uses the Hugging Face `tokenizers` library: NFKC normalisation and lower-casing, then
  whitespace and punctuation splitting with the punctuation removed — the same words as
  scikit-learn's analyzer with token pattern `\\b\\w+\\b` (tested), but imported in milliseconds
  and encoded in Rust, which keeps `predict` start-up short.

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
    self._tokenizer = _word_tokenizer(self.vocab, lowercase)

  @classmethod
  def fit(cls, texts: Iterable[str], vocab_size: int, min_count: int = 1,
          lowercase: bool = True) -> 'WordTokenizer':
    """Builds the vocabulary from (training) texts.

    Args:
      texts: the training texts.
      vocab_size: maximum size including <pad> and <oov> (at least 2).
      min_count: minimum frequency of a kept token.
      lowercase: lower-case before splitting.

    Returns:
      A tokenizer whose ids after 0 and 1 follow descending frequency, ties alphabetical.
    """
    if vocab_size < 2:
      raise errors.DataError(f'vocab_size must be at least 2 (<pad> and <oov>), got {vocab_size}.')
    analyze = cls([PAD, OOV], lowercase).tokenize
    counts = collections.Counter(token for text in texts for token in analyze(text))
    ranked = sorted((token for token, n in counts.items() if n >= min_count),
                    key=lambda token: (-counts[token], token))
    return cls([PAD, OOV] + ranked[:vocab_size - 2], lowercase)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def tokenize(self, text: str) -> list[str]:
    """Splits one text into word tokens."""
    t = self._tokenizer
    return [w for w, _ in t.pre_tokenizer.pre_tokenize_str(t.normalizer.normalize_str(text))]

  def encode(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps texts to padded id arrays, keeping the first `max_length` tokens of each.

    Args:
      texts: n texts.
      max_length: L, tokens per row.

    Returns:
      tokens: [n, L] int32, padded with `pad_id`.
      lengths: [n] int32 in [1, L]; a text without tokens is one <oov> token.
    """
    tokens = np.full((len(texts), max_length), self.pad_id, np.int32)
    lengths = np.ones(len(texts), np.int32)
    for row, enc in enumerate(self._tokenizer.encode_batch(list(texts))):
      ids = enc.ids[:max_length] or [self.oov_id]
      tokens[row, :len(ids)] = ids
      lengths[row] = len(ids)
    return tokens, lengths

  def to_dict(self) -> dict:
    return {'kind': 'word', 'lowercase': self.lowercase, 'vocab': self.vocab}

  @classmethod
  def from_dict(cls, d: dict) -> 'WordTokenizer':
    return cls(d['vocab'], d['lowercase'])


def _word_tokenizer(vocab: Sequence[str], lowercase: bool):
  """A `tokenizers.Tokenizer`: word-level ids over `vocab`, unknown words -> <oov>."""
  import tokenizers
  from tokenizers import models, normalizers, pre_tokenizers
  tok = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=OOV))
  tok.normalizer = normalizers.Sequence(
      [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
  tok.pre_tokenizer = pre_tokenizers.Sequence(
      [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior='removed')])
  return tok


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
      self._binarizer = preprocessing.MultiLabelBinarizer(classes=self.classes).fit([])
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
    genres = [[spelling.get(g.casefold(), g) for g in row] for row in genres]
    known = set(self.classes)
    unknown = collections.Counter(g for row in genres for g in row if g not in known)
    with warnings.catch_warnings():
      warnings.filterwarnings('ignore', message='unknown class', category=UserWarning)
      labels = self.binarizer.transform(genres)
    return np.asarray(labels, np.float32).reshape(len(genres), len(self.classes)), dict(unknown)

  def inverse_transform(self, labels: np.ndarray) -> list[list[str]]:
    """[n, G] {0, 1} (or bool) -> n genre lists in class order."""
    return [[self.classes[g] for g in np.flatnonzero(row)] for row in np.asarray(labels)]

  def to_dict(self) -> dict:
    return {'classes': self.classes}

  @classmethod
  def from_dict(cls, d: dict) -> 'LabelEncoder':
    return cls(d['classes'])
