"""The transfer set of distillation: perturbed copies of the training synopses.

  spec = transfer.Perturbation.from_config(config.distill)
  copies = transfer.perturbed_copies(train.ids, train.texts, k, spec, seed=config.seed)

Each copy is one training synopsis with its words perturbed as in Tang et al. 2019
("Distilling task-specific knowledge from BERT into simple neural networks"): with probability
`window_prob` only a random window of `window_min`-100% of its words is kept, then each word is
dropped with probability `word_dropout` (at least one stays), replaced by the teacher's mask token
with probability `mask_rate`, and `swap_rate` x (number of words) random pairs of words swap
places (binomially many). Words are the synopsis's whitespace-separated pieces, punctuation
attached, so both the teacher's and the student's tokenizers read a copy as they read a synopsis.

Copies are made from the texts they are given (the training split's only, in `distill`) and
labelled by the teacher; each copy's random stream is seeded by `(seed, copy number, the record
id's CRC-32)`, so the copies of a record do not depend on the order or the number of the others.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
import zlib

import numpy as np

MASK_TOKEN = '[MASK]'  # BERT's mask token; the word tokenizer reads it as the word "mask".


@dataclasses.dataclass(frozen=True)
class Perturbation:
  """The rates of `perturb` (see the module docstring); all probabilities in [0, 1)."""
  word_dropout: float = 0.1
  window_prob: float = 0.25
  window_min: float = 0.6
  swap_rate: float = 0.1
  mask_rate: float = 0.0

  @classmethod
  def from_config(cls, distill_config) -> Perturbation:
    """The `config.distill` section's rates."""
    return cls(**{f.name: float(distill_config[f.name]) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class Copies:
  """Perturbed copies of n texts, K each, copy-major (all first copies, then all second ...).

  Attributes:
    source: [n * K] int64, the row of the text each copy was made from.
    copy: [n * K] int32, 1 ... K: which copy of its source it is.
    texts: n * K perturbed texts.
  """
  source: np.ndarray
  copy: np.ndarray
  texts: list[str]


def perturb(words: Sequence[str], rng: np.random.Generator, spec: Perturbation) -> list[str]:
  """One perturbed copy of `words` (a non-empty list), drawn from `rng`; never empty."""
  words = list(words)
  n = len(words)
  if n > 1 and rng.random() < spec.window_prob:
    size = int(rng.integers(max(1, math.ceil(spec.window_min * n)), n + 1))
    start = int(rng.integers(0, n - size + 1))
    words = words[start:start + size]
  if spec.word_dropout > 0:
    keep = rng.random(len(words)) >= spec.word_dropout
    words = ([w for w, k in zip(words, keep) if k] if keep.any() else
             [words[int(rng.integers(len(words)))]])
  if spec.mask_rate > 0:
    masked = rng.random(len(words)) < spec.mask_rate
    words = [MASK_TOKEN if m else w for w, m in zip(words, masked)]
  if len(words) > 1 and spec.swap_rate > 0:
    for _ in range(int(rng.binomial(len(words), spec.swap_rate))):
      i, j = rng.integers(0, len(words), size=2)
      words[i], words[j] = words[j], words[i]
  return words


def perturbed_copies(ids: Sequence[str], texts: Sequence[str], copies: int, spec: Perturbation,
                     seed: int) -> Copies:
  """`copies` perturbed copies of each text (see the module docstring).

  Args:
    ids: n record ids (they seed each record's copies).
    texts: n synopses.
    copies: K >= 0.
    spec: the perturbation rates.
    seed: the run's seed (non-negative).

  Returns:
    `Copies` of n * K rows, copy-major.
  """
  keys = [zlib.crc32(str(i).encode('utf-8')) for i in ids]
  words = [t.split() or [t] for t in texts]
  out = []
  for k in range(1, copies + 1):
    for key, w in zip(keys, words):
      out.append(' '.join(perturb(w, np.random.default_rng([seed, k, key]), spec)))
  n = len(texts)
  return Copies(source=np.tile(np.arange(n, dtype=np.int64), copies),
                copy=np.repeat(np.arange(1, copies + 1, dtype=np.int32), n), texts=out)
