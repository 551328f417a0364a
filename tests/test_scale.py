"""Tests for benchmarks/scale.py: the synthetic data sets and a tiny run of the whole benchmark."""

import json
import random

from benchmarks import scale
from genre_jax.data import parsers
from tests.conftest import mirror_or_skip, run_module


def test_perturb_drops_swaps_and_misspells_deterministically():
  words = ('a young wizard must find the stolen stone before the dark lord returns to the '
           'castle of his ancestors').split() * 5
  one = scale.perturb(words, random.Random(0)).split()
  assert one == scale.perturb(words, random.Random(0)).split()
  rng = random.Random(1)
  many = [scale.perturb(words, rng).split() for _ in range(100)]
  assert all(0.7 * len(words) < len(m) < len(words) for m in many)  # Words dropped.
  assert sum(not is_subsequence(m, words) for m in many) > 90  # Neighbours swapped.
  assert any(set(m) - set(words) for m in many)  # Typos: new words.


def is_subsequence(items, sequence):
  rest = iter(sequence)
  return all(item in rest for item in items)


def test_synthetic_data_set_is_tmdb_shaped_with_fresh_ids(tmp_path):
  mirror_or_skip()
  path = scale.make_dataset(300, tmp_path)
  records, report = parsers.load_records(path, 'tmdb_csv')
  assert report['n_rows'] == 300 and list(records['id']) == [str(i) for i in range(1, 301)]
  assert scale.make_dataset(300, tmp_path) == path  # Reused.


def test_tiny_scale_run_writes_its_json(tmp_path):
  mirror_or_skip()
  out = tmp_path / 'scale.json'
  proc = run_module('benchmarks.scale', '--sizes', '1500,3000', '--train_steps', '3', '--out', out,
                    '--data_dir', tmp_path / 'data')
  results = json.loads(out.read_text())
  assert results['command'].startswith('python -m benchmarks.scale --sizes 1500,3000')
  assert results['machine']['logical_cpus'] >= 1 and results['idle_python_rss_bytes'] > 0
  small, large = results['sizes']
  assert (small['rows'], large['rows']) == (1500, 3000) and large['kept'] == 3000
  assert large['peak_rss_bytes'] > large['rss_after_imports_bytes'] > 0
  assert set(large['stage_seconds']) >= {'read', 'clean', 'split', 'vocab', 'encode', 'labels'}
  assert 'rss_growth_bytes_per_row' in large and large['train']['steps'] == 3
  assert large['train']['examples_per_second'] > 0
  assert '| 3,000 |' in proc.stdout and proc.stdout.startswith('| rows | prepare (s) |')
