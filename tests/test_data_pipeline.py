"""Tests for genre_jax.data.pipeline and the `python -m genre_jax.data` CLI."""

import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

import configs
from genre_jax import errors
from genre_jax.data import download
from genre_jax.data import pipeline

REPO = Path(__file__).resolve().parents[1]
GENRES = ['Drama', 'Comedy', 'Action', 'Horror']


def write_csv(path, n=60):
  """A generic CSV: plot / tags (pipe-separated) / key columns."""
  rows = ['key,plot,tags']
  for i in range(n):
    tags = '|'.join(g for k, g in enumerate(GENRES) if (i >> k) & 1 or k == i % 4)
    rows.append(f'm{i},"movie {i} is about {GENRES[i % 4].lower()} and word{i % 7}",{tags}')
  rows.append('empty,,Drama')
  path.write_text('\n'.join(rows) + '\n')
  return path


def data_config(path, **overrides):
  config = configs.load('default').data
  config.update(dict(dict(path=str(path), format='csv', text_column='plot', genre_column='tags',
                          id_column='key', vocab_size=30, max_length=6), **overrides))
  config.genre_separator = '|'
  return config


def test_prepare_tiny_csv(tmp_path):
  config = data_config(write_csv(tmp_path / 'm.csv'))
  prepared = pipeline.prepare(config)
  assert prepared.report['kept'] == 60 and prepared.report['dropped_no_text'] == 1
  assert prepared.labels.classes == sorted(GENRES)
  assert sum(len(prepared.arrays[k]) for k in ('train', 'validation', 'test')) == 60
  for name, part in prepared.arrays.items():
    n = len(part)
    assert part.tokens.shape == (n, 6) and part.tokens.dtype == np.uint8  # 30 ids.
    assert part.lengths.shape == (n,) and part.lengths.min() >= 1
    assert part.labels.shape == (n, 4) and part.labels.dtype == np.float32
    assert part.ids == [prepared.records['id'][i] for i in prepared.split[name]]
    np.testing.assert_array_equal(part.reference_lengths, prepared.train.lengths)
  s = pipeline.summary(prepared)
  json.dumps(s)
  assert s['records']['kept'] == 60 and s['records']['dropped']['no_text'] == 1
  assert s['num_genres'] == 4 and s['splits']['train'] == len(prepared.train)
  assert 1 <= s['label_cardinality'] <= 4


def test_prepare_reuses_saved_split_and_custom_tokenizer(tmp_path):
  config = data_config(write_csv(tmp_path / 'm.csv'))
  first = pipeline.prepare(config)
  config.split_seed = 123  # Ignored: the saved split wins.
  seen = []

  def factory(train_texts):
    seen.append(len(train_texts))
    return pipeline.text.WordTokenizer.fit(train_texts, 10)

  again = pipeline.prepare(config, tokenizer_factory=factory, split=first.split_ids)
  assert all(np.array_equal(first.split[k], again.split[k]) for k in first.split)
  assert seen == [len(first.train)] and again.tokenizer.vocab_size == 10


def test_max_examples_and_path_without_format(tmp_path):
  path = write_csv(tmp_path / 'm.csv')
  records, report = pipeline.load(data_config(path, max_examples=40))
  assert len(records) == 40 and report['truncated'] == 20
  with pytest.raises(errors.DataError, match='give the format'):
    pipeline.load(data_config(path, format=None))


def test_allmovie_by_name_needs_a_path(tmp_path, monkeypatch):
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path))
  monkeypatch.delenv(download.MIRROR_ENV, raising=False)
  config = configs.load('default').data
  config.name = 'allmovie'
  with pytest.raises(errors.DataError, match='no public address.*--dataset allmovie --path data/'):
    pipeline.load(config)
  config.path = str(tmp_path / 'allmovie.jsonl')  # The format comes from the data set.
  (tmp_path / 'allmovie.jsonl').write_text(json.dumps(
      dict(name='A', genre='Drama, Crime', synopsis='Text.', id=7, url='u')) + '\n')
  records, report = pipeline.load(config)
  assert report['format'] == 'allmovie_json'
  assert records.to_dict('records') == [dict(id='7', title='A', text='Text.',
                                             genres=('Drama', 'Crime'))]


def run_cli(*args, env=None):
  env = dict(os.environ, **(env or {}))
  return subprocess.run([sys.executable, '-m', 'genre_jax.data', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)


def test_cli_user_csv(tmp_path):
  path = write_csv(tmp_path / 'm.csv')
  out = run_cli('--path', str(path), '--format', 'csv', '--text_column', 'plot', '--genre_column',
                'tags', '--id_column', 'key', '--genre_separator', '|', '--seed', '1')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert lines[1].startswith('records: 61 rows, 60 kept, 1 dropped (1 without text')
  summary = json.loads(lines[-1])
  assert summary['records']['kept'] == 60 and summary['split_seed'] == 1


def test_cli_errors_exit_2_without_traceback(tmp_path):
  (tmp_path / 'bad.jsonl').write_text('{"text": "a", "genres": "x"}\n{oops}\n')
  bad = run_cli('--path', str(tmp_path / 'bad.jsonl'), '--format', 'jsonl')
  assert bad.returncode == 2
  assert bad.stderr.startswith(f'error: {tmp_path / "bad.jsonl"} line 2 is not')

  (tmp_path / 'good.jsonl').write_text('{"text": "a", "genres": "x"}\n')
  columns = run_cli('--path', str(tmp_path / 'good.jsonl'), '--format', 'jsonl',
                    '--text_column', 'plot')
  assert columns.returncode == 2 and '--text_column' in columns.stderr
  assert '--text-column' not in columns.stderr

  typo = run_cli('--path', str(tmp_path / 'bad.jsonl'), '--text-column', 'plot')
  assert typo.returncode == 2 and typo.stderr.count('\n') == 1, typo.stderr

  missing = run_cli('--path', str(tmp_path / 'nope.csv'), '--format', 'csv')
  assert missing.returncode == 2 and missing.stderr.startswith('error: data file not found')
  assert 'Traceback' not in missing.stderr and missing.stderr.count('\n') == 1

  (tmp_path / 'dup.csv').write_text('id,text,genres\n1,a,x\n1,b,y\n')
  dup = run_cli('--path', str(tmp_path / 'dup.csv'), '--format', 'csv', '--id_column', 'id')
  assert dup.returncode == 2 and "'1' (rows 1, 2)" in dup.stderr and 'Traceback' not in dup.stderr


def test_cli_list():
  out = run_cli('--list').stdout
  assert 'tmdb_10k' in out and 'allmovie' in out
  assert {d['name'] for d in json.loads(out.splitlines()[-1])} >= {'tmdb_10k', 'allmovie'}


def test_cli_real_tmdb():
  mirror = download.resolve_mirror()
  if mirror is None:
    pytest.skip(f'real-data test: set {download.MIRROR_ENV} to the data mirror (../shared/data)')
  out = run_cli('--dataset', 'tmdb_10k', env={download.MIRROR_ENV: str(mirror)})
  assert out.returncode == 0, out.stderr
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary['records'] == {'rows': 10000, 'kept': 9985, 'duplicate_genres_removed': 0,
                                'merged_genre_spellings': {},
                                'dropped': {'no_text': 13, 'no_genre': 2, 'max_examples': 0}}
  assert summary['num_genres'] == 18 and abs(summary['label_cardinality'] - 2.57) < 0.005
  assert summary['genres']['Drama'] == 4542 and summary['genres']['TV Movie'] == 133
  assert sum(summary['splits'].values()) == 9985


# ---- Encoding only some splits; the token cache -----------------------------------------------


def assert_same_split_arrays(a, b):
  assert a.ids == b.ids and a.texts == b.texts
  for field in ('tokens', 'lengths', 'labels'):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def count_encodes(monkeypatch):
  """Counts the texts that `WordTokenizer` splits from now on."""
  seen = []
  tokenize = pipeline.text.WordTokenizer.tokenize
  monkeypatch.setattr(pipeline.text.WordTokenizer, 'tokenize',
                      lambda self, t: seen.append(t) or tokenize(self, t))
  return seen


def test_encoding_only_the_test_split(tmp_path, monkeypatch):
  config = data_config(write_csv(tmp_path / 'm.csv'))
  full = pipeline.prepare(config)
  seen = count_encodes(monkeypatch)
  only = pipeline.prepare(config, tokenizer_factory=lambda texts: full.tokenizer,
                          split=full.split_ids, encode=('test',))
  assert list(only.arrays) == ['test'] and len(seen) == len(full.test)
  assert_same_split_arrays(only.test, full.test)
  assert only.labels.classes == full.labels.classes
  assert only.test.reference_lengths is None
  fitted = pipeline.prepare(config, encode=('test',))  # Tokenizer still fitted on train.
  assert fitted.tokenizer.vocab == full.tokenizer.vocab
  assert_same_split_arrays(fitted.test, full.test)
  with pytest.raises(errors.DataError, match='unknown split names'):
    pipeline.prepare(config, encode=('tset',))


def test_token_cache_is_reused_and_follows_the_texts_and_tokenizer(tmp_path, monkeypatch):
  path = write_csv(tmp_path / 'm.csv')
  cache = tmp_path / 'cache'
  config = data_config(path, token_cache=str(cache))
  plain = pipeline.prepare(data_config(path))
  first = pipeline.prepare(config)
  entries = sorted(p.name for p in cache.iterdir())
  assert len(entries) == 4 and not [e for e in entries if e.startswith('.')]  # Vocab + splits.
  seen = count_encodes(monkeypatch)
  again = pipeline.prepare(config)
  assert seen == [] and sorted(p.name for p in cache.iterdir()) == entries
  for name in ('train', 'validation', 'test'):
    assert_same_split_arrays(first.arrays[name], plain.arrays[name])
    assert_same_split_arrays(again.arrays[name], plain.arrays[name])
    assert not again.arrays[name].tokens.flags.writeable  # Memory-mapped from the cache.
  assert again.tokenizer.vocab == plain.tokenizer.vocab

  # A new max_length or vocabulary: new entries; the old ones stay valid.
  pipeline.prepare(data_config(path, token_cache=str(cache), max_length=5))
  assert len(seen) == len(plain.records) and len(list(cache.iterdir())) == 7
  pipeline.prepare(data_config(path, token_cache=str(cache), vocab_size=12))
  assert len(list(cache.iterdir())) == 11

  # A changed file: the splits whose texts changed are encoded again, with the new texts.
  lines = path.read_text().splitlines()
  test_id = plain.test.ids[0]
  path.write_text('\n'.join(line.replace(',"movie', ',"film', 1) if line.startswith(f'{test_id},')
                            else line for line in lines) + '\n')
  del seen[:]
  changed = pipeline.prepare(config)
  assert changed.test.texts[0].startswith('film') and len(seen) == len(plain.test)
  assert_same_split_arrays(changed.test, pipeline.prepare(data_config(path)).test)


def test_token_cache_recomputes_an_entry_of_another_dtype(tmp_path, monkeypatch):
  path = write_csv(tmp_path / 'm.csv')
  config = data_config(path, token_cache=str(tmp_path / 'cache'))
  pipeline.prepare(config)
  plain = pipeline.prepare(data_config(path))
  entries = sorted((tmp_path / 'cache').glob('tokens-*'))
  for entry in entries:  # Same ids, written as int32.
    np.save(entry / 'tokens.npy', np.load(entry / 'tokens.npy').astype(np.int32))
  seen = count_encodes(monkeypatch)
  again = pipeline.prepare(config)
  assert len(seen) == len(plain.records)  # Every split encoded again, ...
  for name in ('train', 'validation', 'test'):
    assert again.arrays[name].tokens.dtype == np.uint8  # ... and stored as uint8 (30 ids).
    assert_same_split_arrays(again.arrays[name], plain.arrays[name])
  assert sorted((tmp_path / 'cache').glob('tokens-*')) == entries
  assert {np.load(e / 'tokens.npy', mmap_mode='r').dtype for e in entries} == {np.dtype(np.uint8)}


def test_token_cache_recomputes_a_damaged_entry(tmp_path):
  path = write_csv(tmp_path / 'm.csv')
  config = data_config(path, token_cache=str(tmp_path / 'cache'))
  pipeline.prepare(config)
  first = pipeline.prepare(data_config(path))
  for i, entry in enumerate(sorted((tmp_path / 'cache').glob('tokens-*'))):
    damaged = (entry / 'tokens.npy').read_bytes()[:100 * i]  # Empty, cut in the header, ...
    (entry / 'tokens.npy').write_bytes(damaged)
  for vocab in (tmp_path / 'cache').glob('vocab-*'):
    vocab.write_text('{"kind": "word"')
  again = pipeline.prepare(config)
  for name in ('train', 'validation', 'test'):
    assert_same_split_arrays(again.arrays[name], first.arrays[name])
  assert again.tokenizer.vocab == first.tokenizer.vocab
