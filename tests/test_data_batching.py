"""Tests for genre_jax.data.batching: static shapes, coverage, bucketing and determinism."""

import numpy as np
import pytest

from genre_jax.data import batching
from genre_jax.data import pipeline

MAX_LENGTH, NUM_LABELS = 64, 3


def make_arrays(n=103, seed=0):
  rng = np.random.default_rng(seed)
  lengths = np.minimum(rng.geometric(1 / 15, n), MAX_LENGTH).astype(np.int32)
  tokens = np.where(np.arange(MAX_LENGTH) < lengths[:, None], 7, 0).astype(np.int32)
  labels = (rng.random((n, NUM_LABELS)) < 0.4).astype(np.float32)
  return pipeline.SplitArrays([str(i) for i in range(n)], [''] * n, tokens, lengths, labels)


def run_epoch(arrays, **kw):
  kw = dict(dict(shuffle=True, seed=0, epoch=0, bucket_by_length=True, num_buckets=4), **kw)
  return list(batching.batches(arrays, 16, **kw))


@pytest.mark.parametrize('bucket', [False, True])
@pytest.mark.parametrize('shuffle', [False, True])
def test_every_example_once_static_shapes(bucket, shuffle):
  arrays = make_arrays()
  widths = batching.bucket_widths(arrays.lengths, MAX_LENGTH, 4) if bucket else [MAX_LENGTH]
  seen = []
  for batch in run_epoch(arrays, bucket_by_length=bucket, shuffle=shuffle):
    assert set(batch) == {'tokens', 'lengths', 'labels', 'mask', 'index'}
    b, w = batch['tokens'].shape
    assert b == 16 and w in widths and batch['tokens'].dtype == np.int32
    assert batch['lengths'].shape == (16,) and batch['lengths'].dtype == np.int32
    assert batch['labels'].shape == (16, NUM_LABELS) and batch['labels'].dtype == np.float32
    assert batch['mask'].dtype == np.float32 and batch['index'].dtype == np.int64
    real = batch['index'] >= 0
    np.testing.assert_array_equal(batch['mask'], real)
    idx = batch['index'][real]
    np.testing.assert_array_equal(batch['tokens'][real], arrays.tokens[idx, :w])
    np.testing.assert_array_equal(batch['labels'][real], arrays.labels[idx])
    assert np.all(batch['lengths'][real] <= w) and np.all(batch['lengths'][~real] == 1)
    assert not batch['tokens'][~real].any() and not batch['labels'][~real].any()
    seen += idx.tolist()
  assert sorted(seen) == list(range(len(arrays)))  # Exactly once; the partial batch kept.


def test_narrow_tokens_give_the_same_int32_batches():
  wide = make_arrays()
  narrow = pipeline.SplitArrays(wide.ids, wide.texts, wide.tokens.astype(np.uint16),
                                wide.lengths, wide.labels)
  for a, b in zip(run_epoch(wide), run_epoch(narrow), strict=True):
    assert b['tokens'].dtype == np.int32
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_bucketing_cuts_padding():
  arrays = make_arrays()
  cells = lambda batches: sum(b['tokens'].size for b in batches)
  assert cells(run_epoch(arrays)) < 0.6 * cells(run_epoch(arrays, bucket_by_length=False))


def test_deterministic_shuffle_per_seed_and_epoch():
  arrays = make_arrays()
  order = lambda **kw: np.concatenate([b['index'] for b in run_epoch(arrays, **kw)]).tolist()
  assert order() == order()
  assert order() != order(epoch=1) and order() != order(seed=1)
  assert order(shuffle=False, bucket_by_length=False)[:len(arrays)] == list(range(len(arrays)))


def test_bucket_widths_and_reference_lengths():
  widths = batching.bucket_widths(np.array([3, 5, 9, 12, 30, 40, 61]), 64, 4)
  assert widths == sorted(set(widths)) and widths[-1] == 64 and len(widths) <= 4
  assert all(w % 8 == 0 for w in widths)
  assert batching.bucket_widths(np.array([2, 2, 3]), 64, 4) == [8, 64]
  arrays = make_arrays()
  arrays.reference_lengths = np.full(10, 30, np.int32)  # Training lengths decide the widths.
  assert {b['tokens'].shape[1] for b in run_epoch(arrays)} <= {32, 64}


def test_unpadded_final_batch():
  batches = run_epoch(make_arrays(), shuffle=False, bucket_by_length=False, pad_final=False)
  assert [len(b['index']) for b in batches] == [16] * 6 + [7]
  assert all(b['mask'].all() for b in batches)


@pytest.mark.parametrize('bucket', [False, True])
def test_each_part_holds_only_its_block_of_every_global_batch(bucket):
  arrays = make_arrays()
  whole = run_epoch(arrays, bucket_by_length=bucket)
  parts = [run_epoch(arrays, bucket_by_length=bucket, part=(p, 4)) for p in range(4)]
  assert all(len(p) == len(whole) for p in parts)
  for i, batch in enumerate(whole):
    for key, value in batch.items():
      blocks = [p[i][key] for p in parts]
      if key == 'index':  # The global batch's rows, in every part.
        assert all(np.array_equal(b, value) for b in blocks)
        continue
      assert all(len(b) == 4 for b in blocks)  # b = B / P rows each, built from those rows only.
      np.testing.assert_array_equal(np.concatenate(blocks), value)
