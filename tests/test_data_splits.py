"""Tests for genre_jax.data.splits: determinism, coverage, sizes and stratification."""

import collections

import numpy as np
import pytest

from genre_jax import errors
from genre_jax.data import download
from genre_jax.data import parsers
from genre_jax.data import registry
from genre_jax.data import splits


def toy_genres(n=500, seed=0):
  rng = np.random.default_rng(seed)
  names = ['Drama', 'Comedy', 'Action', 'War', 'Music']
  p = np.array([0.5, 0.4, 0.25, 0.05, 0.03])
  rows = [[g for g, on in zip(names, rng.random(5) < p) if on] or ['Drama'] for _ in range(n)]
  return rows


def check_partition(split, n):
  assert list(split) == ['train', 'validation', 'test']
  joined = np.concatenate(list(split.values()))
  assert sorted(joined.tolist()) == list(range(n))  # Disjoint and covering.
  for indices in split.values():
    assert indices.dtype == np.int64 and np.all(np.diff(indices) > 0)


def test_deterministic_partition_with_sizes():
  genres = toy_genres()
  split = splits.split_indices(genres, (0.8, 0.1, 0.1), seed=3)
  check_partition(split, len(genres))
  again = splits.split_indices(genres, (0.8, 0.1, 0.1), seed=3)
  assert all(np.array_equal(split[k], again[k]) for k in split)
  other = splits.split_indices(genres, (0.8, 0.1, 0.1), seed=4)
  assert not np.array_equal(split['test'], other['test'])
  for name, size in zip(splits.SPLITS, (0.8, 0.1, 0.1)):
    assert abs(len(split[name]) / len(genres) - size) <= 0.01


def test_zero_size_split_and_bad_sizes():
  genres = toy_genres(50)
  split = splits.split_indices(genres, (0.5, 0.5, 0.0))
  check_partition(split, 50)
  assert len(split['test']) == 0
  with pytest.raises(errors.DataError, match='sizes'):
    splits.split_indices(genres, (0.8, 0.3, 0.1))
  with pytest.raises(errors.DataError, match='too few records'):
    splits.split_indices(genres[:2], (0.8, 0.1, 0.1))


def test_ids_round_trip():
  genres = toy_genres(40)
  ids = [f'id{i}' for i in range(40)]
  split = splits.split_indices(genres)
  saved = splits.split_to_ids(split, ids)
  assert saved['test'] == [ids[i] for i in split['test']]
  # Record order changes do not matter: ids are mapped to the new positions.
  reordered = ids[::-1]
  back = splits.split_from_ids(saved, reordered)
  assert all(sorted(reordered[i] for i in back[k]) == sorted(saved[k]) for k in saved)
  with pytest.raises(errors.DataError, match="not in the data .*'id0'"):
    splits.split_from_ids(saved, ids[1:])


def test_stratified_on_real_data():
  mirror = download.resolve_mirror()
  if mirror is None:
    pytest.skip(f'real-data test: set {download.MIRROR_ENV} to the data mirror (../shared/data)')
  path = download.fetch(registry.get_spec('tmdb_10k'), mirror=mirror)
  records, _ = parsers.load_records(path, 'tmdb_csv')
  split = splits.split_indices(records['genres'], seed=0)
  check_partition(split, len(records))
  total = collections.Counter(g for row in records['genres'] for g in row)
  for name, size in zip(splits.SPLITS, (0.8, 0.1, 0.1)):
    assert abs(len(split[name]) / len(records) - size) <= 0.01
    counts = collections.Counter(g for i in split[name] for g in records['genres'][i])
    for genre, n in total.items():
      share, overall = counts[genre] / len(split[name]), n / len(records)
      assert abs(share - overall) <= 0.01 + 0.1 * overall, (name, genre, share, overall)
