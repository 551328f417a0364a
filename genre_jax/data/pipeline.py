"""From a data config to arrays the trainer consumes: load, split, tokenise, encode labels.

  prepared = pipeline.prepare(config.data)
  for batch in batching.batches(prepared.train, 32, shuffle=True, seed=0, epoch=0, ...): ...

`data_config` is the `config.data` section of configs/default.py (fields name, path, format,
text_column, genre_column, id_column, title_column, mirror, max_examples, split_seed, split_sizes,
vocab_size, min_count, max_length, bucket_by_length, num_buckets; optional genre_separator and
token_cache, a directory that keeps tokenisation between runs, see `token_cache`).
Texts are tokenised a chunk at a time straight into the `[n, L]` arrays, whose ids are stored as
the smallest dtype that holds the vocabulary (`text.token_dtype`: uint16 up to 65,536 ids).
"""

import collections
from collections.abc import Callable, Sequence
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from genre_jax import errors
from genre_jax import host
from genre_jax.data import batching
from genre_jax.data import download
from genre_jax.data import parsers
from genre_jax.data import registry
from genre_jax.data import splits
from genre_jax.data import text
from genre_jax.data import token_cache
from genre_jax.data import workers

SplitArrays = batching.SplitArrays  # Re-exported: the arrays of one split.


@dataclasses.dataclass
class PreparedData:
  """Everything the trainer needs from the data.

  Attributes:
    records: the kept records (id, title, text, genres).
    report: what was read and dropped (see `parsers.load_records`), plus split_seed,
      split_sizes, vocab_size and unknown_genres (split -> genre -> count not in the training
      label set).
    split: split name -> sorted int64 indices into `records`.
    tokenizer: a fitted tokenizer (`WordTokenizer` by default).
    labels: the `LabelEncoder` fitted on the training split.
    arrays: split name -> `SplitArrays` (also available as `.train`, `.validation`, `.test`) of
      the splits `prepare` was asked to encode (all three by default).
  """
  records: pd.DataFrame
  report: dict
  split: dict[str, np.ndarray]
  tokenizer: object
  labels: text.LabelEncoder
  arrays: dict[str, SplitArrays]

  @property
  def train(self) -> SplitArrays:
    return self.arrays['train']

  @property
  def validation(self) -> SplitArrays:
    return self.arrays['validation']

  @property
  def test(self) -> SplitArrays:
    return self.arrays['test']

  @property
  def split_ids(self) -> dict[str, list[str]]:
    """The split as record ids, to save with a run and pass back as `prepare(..., split=)`."""
    return splits.split_to_ids(self.split, list(self.records['id']))


def source(data_config) -> tuple[Path, str]:
  """Resolves the data file and its format: a user path, else a registered data set."""
  if data_config.path:
    format = data_config.format
    spec = registry.REGISTRY.get(data_config.name)
    if format is None and spec is not None and spec.url is None:
      format = spec.format  # E.g. --dataset allmovie --path FILE.
    if format is None:
      raise errors.DataError(f'give the format of {data_config.path}: --format (config.data.'
                             f'format) one of {", ".join(registry.FORMATS)}.')
    return Path(data_config.path).expanduser(), format
  spec = registry.get_spec(data_config.name)
  return download.fetch(spec, mirror=data_config.mirror), spec.format


def load(data_config) -> tuple[pd.DataFrame, dict]:
  """Reads the records selected by `data_config` (see `parsers.load_records`), then hands the
  memory the reading freed back to the system (`host.release_freed_memory`)."""
  path, format = source(data_config)
  columns = {}
  if format in ('csv', 'jsonl'):  # The named formats know their columns.
    columns = dict(text_column=data_config.text_column, genre_column=data_config.genre_column,
                   id_column=data_config.id_column, title_column=data_config.title_column)
  loaded = parsers.load_records(path, format, max_examples=data_config.max_examples,
                                genre_separator=getattr(data_config, 'genre_separator', ','),
                                **columns)
  host.release_freed_memory()  # The parser's buffers, freed between the texts it made.
  return loaded


@host.cyclic_gc_paused()
def prepare(data_config, tokenizer_factory: Callable[[Sequence[str]], object] | None = None,
            split: dict[str, Sequence[str]] | None = None,
            encode: Sequence[str] = splits.SPLITS) -> PreparedData:
  """Loads, splits and encodes the data.

  Args:
    data_config: the `config.data` section (see the module docstring).
    tokenizer_factory: `train_texts -> tokenizer`; default `WordTokenizer.fit` with
      `vocab_size` and `min_count` from `data_config`.
    split: a saved split (split name -> record ids, from `PreparedData.split_ids`) to reuse
      instead of computing one.
    encode: the splits to encode into `arrays` (e.g. `('test',)` to score the test split); the
      tokenizer and the label set still come from the training split.

  Returns:
    The `PreparedData`; its tokenizer and label set are fitted on the training split only.
  """
  unknown_names = sorted(set(encode) - set(splits.SPLITS))
  if unknown_names:
    raise errors.DataError(f'unknown split names {unknown_names}; expected {list(splits.SPLITS)}.')
  records, report = load(data_config)
  if split is None:
    split = splits.split_indices(records['genres'], data_config.split_sizes,
                                 data_config.split_seed)
  else:
    split = splits.split_from_ids(split, list(records['id']))
  cache = getattr(data_config, 'token_cache', None)
  train_texts = _column(records, 'text', split['train'])
  digests = {'train': token_cache.digest(train_texts)} if cache is not None else {}
  labels = fit_labels(_column(records, 'genres', split['train']), report['source'])
  arrays, unknown = {}, {}
  with workers.pool(len(records)) as pool:
    tokenizer = fit_tokenizer(data_config, train_texts, tokenizer_factory, digests.get('train'),
                              pool)
    for name in encode:
      texts = train_texts if name == 'train' else None
      arrays[name], unknown[name] = encode_split(records, split[name], tokenizer, labels,
                                                 data_config, texts, digests.get(name), pool)
  for part in arrays.values():
    part.reference_lengths = arrays['train'].lengths if 'train' in arrays else None
  report.update(split_seed=data_config.split_seed, split_sizes=list(data_config.split_sizes),
                vocab_size=tokenizer.vocab_size,
                unknown_genres={k: v for k, v in unknown.items() if v},
                not_in_split=len(records) - sum(len(v) for v in split.values()))
  return PreparedData(records, report, split, tokenizer, labels, arrays)


def fit_tokenizer(data_config, train_texts: list[str],
                  tokenizer_factory: Callable[[Sequence[str]], object] | None,
                  train_digest: str | None = None, pool=None):
  """The tokenizer of `prepare`: `tokenizer_factory(train_texts)`, else a `WordTokenizer` fitted
  on them (read from `data_config.token_cache` when set; `train_digest`: their digest; `pool`:
  the worker processes that count the words, see `workers`)."""
  if tokenizer_factory is not None:
    return tokenizer_factory(train_texts)
  fit = lambda: text.WordTokenizer.fit(train_texts, data_config.vocab_size,
                                       data_config.min_count, pool=pool)
  params = {'kind': 'word', 'vocab_size': data_config.vocab_size,
            'min_count': data_config.min_count}
  return token_cache.fitted(getattr(data_config, 'token_cache', None),
                            train_digest or token_cache.digest(train_texts), params, fit)


def fit_labels(train_genres: Sequence[Sequence[str]], source: str) -> text.LabelEncoder:
  """The label set of the training split (at least two genres)."""
  labels = text.LabelEncoder.fit(train_genres)
  if len(labels.classes) < 2:
    raise errors.DataError(
        f'{source}: the training split has {len(labels.classes)} genre(s) '
        f'({", ".join(labels.classes)}); a multi-label classifier needs at least two (with one, '
        'every prediction is trivially right). Check the genre column and separator.')
  return labels


def texts_and_labels(prepared: PreparedData, name: str) -> tuple[list[str], np.ndarray]:
  """The texts of split `name` and their [m, G] float32 labels, not tokenised (for a scorer that
  tokenises raw texts itself); genres outside the label set are ignored."""
  rows = prepared.split[name]
  labels, _ = prepared.labels.transform(_column(prepared.records, 'genres', rows))
  return _column(prepared.records, 'text', rows), labels


def _column(records: pd.DataFrame, name: str, rows: np.ndarray) -> list:
  """The values of column `name` at `rows` ([m] int64 indices into `records`), as a list of the
  records' own objects (no copy of the other columns)."""
  return list(records[name].iloc[rows])


def encode_split(records: pd.DataFrame, rows: np.ndarray, tokenizer, labels: text.LabelEncoder,
                 data_config, texts: list[str] | None = None, texts_digest: str | None = None,
                 pool=None) -> tuple[SplitArrays, dict[str, int]]:
  """Encodes one split, the records at `rows` ([m] int64), texts chunk by chunk (in the worker
  processes of `pool`, see `workers`) or from the token cache; `texts`: their texts when already
  listed, `texts_digest`: their digest.

  Returns:
    Its `SplitArrays` and the counts of its genres not in `labels` (see `LabelEncoder.transform`).
  """
  texts = _column(records, 'text', rows) if texts is None else texts
  cache = getattr(data_config, 'token_cache', None)
  tokens, lengths = token_cache.encode(cache, tokenizer, texts, data_config.max_length,
                                       texts_digest, pool)
  y, unknown = labels.transform(_column(records, 'genres', rows))
  return SplitArrays(_column(records, 'id', rows), texts, tokens, lengths, y), unknown


def summary(prepared: PreparedData) -> dict:
  """JSON-able statistics of prepared data (printed by `python -m genre_jax.data`).

  Returns:
    dict with source, format, records (rows, kept, dropped by reason), num_genres, genres
    (name -> count, most frequent first), label_cardinality (mean genres per record),
    single_genre_share, text_length_words (whitespace words: p5 p25 p50 p75 p95 max mean),
    vocab_size, num_labels, splits (name -> size) and unknown_genres.
  """
  records, report = prepared.records, prepared.report
  counts = collections.Counter(g for row in records['genres'] for g in row)
  n_genres = records['genres'].map(len).to_numpy()
  words = records['text'].str.split().map(len).to_numpy()
  percentiles = dict(zip(['p5', 'p25', 'p50', 'p75', 'p95'],
                         np.percentile(words, [5, 25, 50, 75, 95]).round(1).tolist()))
  return {
      'source': report['source'],
      'format': report['format'],
      'records': {
          'rows': report['n_rows'],
          'kept': report['kept'],
          'dropped': {'no_text': report['dropped_no_text'],
                      'no_genre': report['dropped_no_genre'],
                      'max_examples': report['truncated']},
          'duplicate_genres_removed': report['duplicate_genres_removed'],
          'merged_genre_spellings': report.get('merged_genre_spellings', {}),
      },
      'num_genres': len(counts),
      'genres': dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
      'label_cardinality': round(float(n_genres.mean()), 4),
      'single_genre_share': round(float((n_genres == 1).mean()), 4),
      'text_length_words': {**percentiles, 'max': int(words.max()),
                            'mean': round(float(words.mean()), 2)},
      'vocab_size': prepared.tokenizer.vocab_size,
      'num_labels': prepared.labels.num_labels,
      'split_seed': report['split_seed'],
      'splits': {name: len(indices) for name, indices in prepared.split.items()},
      'unknown_genres': report['unknown_genres'],
  }
