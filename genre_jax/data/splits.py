"""Deterministic, multi-label stratified train / validation / test splits.

Iterative stratification (Sechidis et al., 2011; `iterative-stratification` package) keeps
each genre's share close to its overall share in every split. The split depends only on the genre
lists, the sizes and the seed (numpy's legacy `RandomState`, whose stream is fixed across
versions and machines). A run saves its split as record ids (`split_to_ids`) so that it survives
reordering of the data file.
"""

from collections.abc import Sequence

from iterstrat import ml_stratifiers
import numpy as np
from sklearn import preprocessing

from genre_jax import errors

SPLITS = ('train', 'validation', 'test')


def split_indices(genres: Sequence[Sequence[str]], sizes: Sequence[float] = (0.8, 0.1, 0.1),
                  seed: int = 0) -> dict[str, np.ndarray]:
  """Splits records into train / validation / test, stratified on their genres.

  Args:
    genres: n genre lists, one per record.
    sizes: fractions of train, validation and test (non-negative, summing to 1, train > 0).
    seed: the split's random seed.

  Returns:
    dict split name -> sorted [n_split] int64 indices into the records; disjoint and covering
    range(n). Sizes match the fractions up to rounding and stratification (within about 1%).
  """
  sizes = [float(s) for s in sizes]
  if len(sizes) != 3 or min(sizes) < 0 or sizes[0] <= 0 or abs(sum(sizes) - 1) > 1e-6:
    raise errors.DataError(f'split sizes must be three fractions (train, validation, test), '
                           f'train > 0, summing to 1; got {tuple(sizes)}.')
  # Sparse, then bool: the dense int64 matrix would be 8 bytes per record and genre.
  y = preprocessing.MultiLabelBinarizer(sparse_output=True).fit_transform(genres)
  y = y.astype(bool).toarray()
  used = [k for k, size in enumerate(sizes) if size > 0]
  # As MultilabelStratifiedShuffleSplit does, but with all three parts in one pass.
  rng = np.random.RandomState(seed)
  order = np.arange(len(y))
  rng.shuffle(order)
  folds = ml_stratifiers.IterativeStratification(
      labels=y[order], r=np.array([sizes[k] for k in used]), random_state=rng)
  part = np.empty(len(y), np.int64)
  part[order] = np.array(used)[folds]
  split = {name: np.flatnonzero(part == k).astype(np.int64) for k, name in enumerate(SPLITS)}
  empty = [name for k, name in enumerate(SPLITS) if sizes[k] > 0 and not len(split[name])]
  if empty:
    raise errors.DataError(f'too few records ({len(y)}) for split sizes {tuple(sizes)}: the '
                           f'{" and ".join(empty)} split would be empty.')
  return split


def split_to_ids(split: dict[str, np.ndarray], ids: Sequence[str]) -> dict[str, list[str]]:
  """Split indices -> record ids (JSON-able, for saving with a run)."""
  return {name: [ids[i] for i in indices] for name, indices in split.items()}


def split_from_ids(split_ids: dict[str, Sequence[str]],
                   ids: Sequence[str]) -> dict[str, np.ndarray]:
  """Record ids saved by `split_to_ids` -> sorted int64 indices into the records with `ids`.

  Raises:
    DataError: if a split name is unknown or a saved id is not among the records (the data
      changed since the run was saved).
  """
  position = {id_: i for i, id_ in enumerate(ids)}
  split = {}
  for name in SPLITS:
    saved = split_ids.get(name, [])
    missing = [id_ for id_ in saved if id_ not in position]
    if missing:
      raise errors.DataError(
          f'the saved {name} split names {len(missing)} record ids that are not in the data '
          f'(e.g. {", ".join(map(repr, missing[:5]))}); the data changed since the run was '
          'saved. Use the same data file and settings, or recompute the split.')
    split[name] = np.sort(np.array([position[id_] for id_ in saved], np.int64))
  unknown = set(split_ids) - set(SPLITS)
  if unknown:
    raise errors.DataError(f'unknown split names {sorted(unknown)}; expected {list(SPLITS)}.')
  return split
