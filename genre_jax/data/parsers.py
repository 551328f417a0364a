"""Readers that turn a data file into the common record shape.

`load_records` reads any supported format and returns `(records, report)`:
  records: DataFrame with columns id (str), title (str), text (str, stripped), genres (tuple[str],
    stripped, de-duplicated, order kept; names equal up to case are one genre, spelt as most often
    in the file; records with the same genres share one tuple), in file order.
  report: dict(source, format, n_rows, kept, dropped_no_text, dropped_no_genre,
    duplicate_genres_removed, merged_genre_spellings ({kept: [merged spellings]}), truncated).
Rows without text or without any genre are dropped and counted; anything else wrong with the
file (missing, not UTF-8, malformed, missing columns, duplicated ids, nothing left) raises a
`DataError` whose message names the file and the place.
"""

import codecs
import collections
import contextlib
import dataclasses
import json
import math
import os
from pathlib import Path

import pandas as pd

from genre_jax import errors
from genre_jax.data import registry


@dataclasses.dataclass(frozen=True)
class Columns:
  """Names of the source columns (CSV) or fields (JSON) that make up a record."""
  text: str
  genres: str
  id: str | None = None  # None: the 1-based row number.
  title: str | None = None  # None: ''.


# Format -> (reader kind, default columns). Column arguments to `load_records` override these.
_FORMATS = {
    'tmdb_csv': ('csv', Columns(text='overview', genres='genre', id='id', title='title')),
    'allmovie_json': ('json', Columns(text='synopsis', genres='genre', id='id', title='name')),
    'csv': ('csv', Columns(text='text', genres='genres')),
    'jsonl': ('json', Columns(text='text', genres='genres')),
}
assert set(_FORMATS) == set(registry.FORMATS)

_MAX_LISTED = 5  # Examples named in an error message.
_CSV_BLOCK_ROWS = 200_000  # Rows parsed at a time (their unused columns then dropped).


def load_records(path: str | os.PathLike, format: str, *, text_column: str | None = None,
                 genre_column: str | None = None, id_column: str | None = None,
                 title_column: str | None = None, genre_separator: str = ',',
                 max_examples: int | None = None) -> tuple[pd.DataFrame, dict]:
  """Reads a data file into records.

  Args:
    path: the file.
    format: one of `registry.FORMATS`. `tmdb_csv` and `allmovie_json` know their columns;
      `csv` and `jsonl` default to text column 'text' and genre column 'genres'. `jsonl` (and
      `allmovie_json`) accept both JSON lines and one JSON array of objects.
    text_column, genre_column, id_column, title_column: override the format's column names.
    genre_separator: splits a genre string such as 'Drama,Crime'; list-valued genres are used
      as they are.
    max_examples: keep only the first N records that survive cleaning (counted as `truncated`).

  Returns:
    (records, report) as described in the module docstring.

  Raises:
    DataError: see the module docstring.
  """
  if format not in _FORMATS:
    raise errors.DataError(f'unknown data format {format!r}; choose one of '
                           f'{", ".join(registry.FORMATS)}.')
  kind, default = _FORMATS[format]
  columns = Columns(text=text_column or default.text, genres=genre_column or default.genres,
                    id=id_column or default.id, title=title_column or default.title)
  path = Path(path)
  _check_readable(path)
  frame = _parse_csv(path, columns) if kind == 'csv' else _parse_json(path)
  records, report = _clean(frame, columns, genre_separator, source=str(path))
  report = {'source': str(path), 'format': format, **report}
  if max_examples is not None:
    if max_examples < 1:
      raise errors.DataError(f'max_examples must be at least 1, got {max_examples}.')
    report['truncated'] = max(0, len(records) - max_examples)
    records = records.iloc[:max_examples].reset_index(drop=True)
    report['kept'] = len(records)
  return records, report


def _check_readable(path: Path) -> None:
  if not path.exists():
    raise errors.DataError(f'data file not found: {path} (check the path; named data sets are '
                           'listed by `python -m genre_jax.data --list`).')


@contextlib.contextmanager
def _reading(path: Path):
  """Turns the errors of reading `path` (not readable, not UTF-8) into `DataError`s."""
  try:
    yield
  except UnicodeDecodeError:
    raise _not_utf8(path) from None
  except OSError as e:
    raise errors.DataError(f'cannot read data file {path}: {e.strerror or e}.') from None


def _not_utf8(path: Path) -> errors.DataError:
  """The error for a file that is not UTF-8, naming its first bad byte, offset and line: the file
  is decoded again in blocks (readers report offsets within their own buffers)."""
  decoder = codecs.getincrementaldecoder('utf-8')()
  offset = newlines = 0  # Bytes and line breaks before `block`.
  with open(path, 'rb') as f:
    while True:
      block, pending = f.read(1 << 20), decoder.getstate()[0]
      try:
        decoder.decode(block, final=not block)
      except UnicodeDecodeError as e:
        data = pending + block  # `pending`: the start of a character cut by the last block.
        line = newlines + data[:e.start].count(b'\n') + 1
        return errors.DataError(
            f'{path} is not valid UTF-8: byte {data[e.start]:#04x} at offset '
            f'{offset - len(pending) + e.start} (line {line}) cannot be decoded ({e.reason}). '
            f'Convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > '
            f'fixed.{path.suffix.lstrip(".") or "txt"}`.')
      if not block:
        return errors.DataError(f'{path} is not valid UTF-8.')
      offset, newlines = offset + len(block), newlines + block.count(b'\n')


def _parse_csv(path: Path, columns: Columns) -> pd.DataFrame:
  """Parses a CSV file (quoted fields may contain line breaks); every cell is a str or NaN.

  pandas reads the file itself (no copy of its text in Python), in blocks of rows of which only
  the record columns are kept (all of them when one is missing, for the error message).
  """
  wanted = {c for c in dataclasses.astuple(columns) if c is not None}
  try:
    with (_reading(path), pd.read_csv(path, dtype=str, encoding='utf-8-sig',
                                      chunksize=_CSV_BLOCK_ROWS) as reader):
      blocks = [b[[c for c in b.columns if c in wanted]] if wanted <= set(b.columns) else b
                for b in reader]
  except pd.errors.EmptyDataError:
    return pd.DataFrame()
  except (pd.errors.ParserError, ValueError) as e:
    raise errors.DataError(f'{path} is not a well-formed CSV file: {str(e).strip()}') from None
  return pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame()


def _parse_json(path: Path) -> pd.DataFrame:
  """Parses a JSON array of objects or JSON lines (one object per line, blank lines skipped)."""
  with _reading(path), open(path, encoding='utf-8-sig', newline='\n') as f:
    if _first_character(f) == '[':
      try:
        rows = json.load(f)
      except json.JSONDecodeError as e:
        raise errors.DataError(f'{path} is not valid JSON: {e.msg} at line {e.lineno}, column '
                               f'{e.colno}.') from None
      where = lambda i: f'element {i + 1} of the JSON array'
    else:
      rows, lines = _json_lines(f, path)
      where = lambda i: f'line {lines[i]}'
  for i, row in enumerate(rows):
    if not isinstance(row, dict):
      raise errors.DataError(f'{path} {where(i)} is a JSON {type(row).__name__}, expected an '
                             'object with named fields.')
  return pd.DataFrame(rows, dtype=object)


def _first_character(f) -> str:
  """The first non-blank character of the text file `f` ('' if none); rewinds `f`."""
  while block := f.read(1 << 16):
    if block.strip():
      break
  f.seek(0)
  return block.lstrip()[:1]


def _json_lines(f, path: Path) -> tuple[list, list[int]]:
  """The objects of a JSON-lines file and their 1-based line numbers."""
  rows, lines = [], []
  for lineno, line in enumerate(f, start=1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      raise errors.DataError(
          f'{path} line {lineno} is not valid JSON ({e.msg} at column {e.colno}); expected one '
          'JSON object per line (JSON lines) or a single JSON array of objects.') from None
    lines.append(lineno)
  return rows, lines


def _is_missing(value) -> bool:
  return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _parse_genres(value, separator: str, where: str) -> list[str]:
  """A genre list or separator-joined string -> stripped, non-empty names (duplicates kept).

  Raises:
    DataError naming `where` (the record) for a genre that is not a string (a number, an object,
    a nested list): it would otherwise become a genre named after its Python repr.
  """
  if _is_missing(value):
    return []
  if isinstance(value, str):
    items = value.split(separator) if separator else [value]
  elif isinstance(value, (list, tuple)):
    items = [v for v in value if not _is_missing(v)]
  else:
    items = [value]
  for v in items:
    if not isinstance(v, str):
      raise errors.DataError(
          f'{where}: genre {json.dumps(v, default=str)} is of type {type(v).__name__}, not a '
          'string; genres must be strings (a list of strings, or one string joined by the genre '
          'separator).')
  return [name for name in (v.strip() for v in items) if name]


def merge_spellings(rows: list[tuple[str, ...]]
                    ) -> tuple[list[tuple[str, ...]], dict[str, list[str]]]:
  """Makes genre names that differ only in case one genre, spelt as most often in the data.

  Args:
    rows: each record's genre names (already stripped).

  Returns:
    The rows with one spelling per genre (duplicates within a row removed, order kept; equal
    rows share one tuple), and {kept spelling: [the other spellings merged into it]} (empty when
    nothing was merged).
  """
  counts = collections.Counter(g for row in rows for g in row)
  spellings = collections.defaultdict(list)
  for name in counts:  # First-seen order: ties go to the spelling seen first.
    spellings[name.casefold()].append(name)
  canonical, merged = {}, {}
  for names in spellings.values():
    kept = max(names, key=lambda n: counts[n])
    canonical.update({n: kept for n in names})
    if len(names) > 1:
      merged[kept] = sorted(n for n in names if n != kept)
  if not merged:
    return rows, {}
  shared = {}
  combos = {row: shared.setdefault(m, m) for row in set(rows)
            for m in [tuple(dict.fromkeys(canonical[g] for g in row))]}
  return [combos[row] for row in rows], merged


def _clean(frame: pd.DataFrame, columns: Columns, separator: str,
           source: str) -> tuple[pd.DataFrame, dict]:
  """Selects the record columns of `frame`, drops unusable rows and checks the ids."""
  n_rows = len(frame)
  if n_rows == 0:
    raise errors.DataError(f'{source} holds no records.')
  wanted = {'text': columns.text, 'genre': columns.genres, 'id': columns.id,
            'title': columns.title}
  missing = [name for name in wanted.values() if name is not None and name not in frame.columns]
  if missing:
    expected = ', '.join(f'{role} {name!r}' for role, name in wanted.items() if name)
    raise errors.DataError(
        f'{source} lacks column(s) {", ".join(map(repr, missing))}. Expected columns: '
        f'{expected}; found: {", ".join(map(repr, frame.columns))}. Choose the columns with '
        '--text_column, --genre_column, --id_column, --title_column and --format csv or jsonl '
        '(train: --config.data.text_column=... and so on).')

  ids = _ids(frame, columns.id, source)

  titles = (frame[columns.title] if columns.title else [''] * n_rows)
  kept = collections.defaultdict(list)
  names, combos = {}, {}  # One object per genre name and per genre tuple, shared by the rows.
  dropped_no_text = dropped_no_genre = duplicates = 0
  for row, (id_, title, text, raw_genres) in enumerate(
      zip(ids, titles, frame[columns.text], frame[columns.genres]), start=1):
    text = '' if _is_missing(text) else str(text).strip()
    if not text:
      dropped_no_text += 1
      continue
    genres = _parse_genres(raw_genres, separator,
                           f'{source} record {row} (id {id_!r}), column {columns.genres!r}')
    if not genres:
      dropped_no_genre += 1
      continue
    unique = tuple(dict.fromkeys(names.setdefault(g, g) for g in genres))
    unique = combos.setdefault(unique, unique)
    duplicates += len(genres) - len(unique)
    kept['id'].append(id_)
    kept['title'].append('' if _is_missing(title) else str(title).strip())
    kept['text'].append(text)
    kept['genres'].append(unique)
  if not kept:
    raise errors.DataError(
        f'{source}: no usable records: all {n_rows} rows were dropped ({dropped_no_text} without '
        f'text in column {columns.text!r}, {dropped_no_genre} without any genre in column '
        f'{columns.genres!r}). Check the column names and the genre separator.')
  kept['genres'], merged = merge_spellings(kept['genres'])
  records = pd.DataFrame(kept, columns=['id', 'title', 'text', 'genres'])
  report = dict(n_rows=n_rows, kept=len(records), dropped_no_text=dropped_no_text,
                dropped_no_genre=dropped_no_genre, duplicate_genres_removed=duplicates,
                merged_genre_spellings=merged, truncated=0)
  return records, report


def _ids(frame: pd.DataFrame, column: str | None, source: str) -> list[str]:
  """The records' ids: the id column's (stripped, none blank, unique) or 1-based row numbers."""
  if column is None:
    return [str(row) for row in range(1, len(frame) + 1)]
  blank = [row for row, v in enumerate(frame[column], start=1)
           if _is_missing(v) or not str(v).strip()]
  if blank:
    raise errors.DataError(f'{source}: {len(blank)} rows have no id in column {column!r} '
                           f'(rows {_listed(blank)}; rows are 1-based, header excluded).')
  ids = [str(v).strip() for v in frame[column]]
  _check_unique(ids, source)
  return ids


def _check_unique(ids: list[str], source: str) -> None:
  """Raises a `DataError` naming the duplicated ids and their 1-based rows."""
  rows = collections.defaultdict(list)
  for row, id_ in enumerate(ids, start=1):
    rows[id_].append(row)
  duplicated = {id_: r for id_, r in rows.items() if len(r) > 1}
  if duplicated:
    named = '; '.join(f'{id_!r} (rows {_listed(r)})'
                      for id_, r in list(duplicated.items())[:_MAX_LISTED])
    more = f'; and {len(duplicated) - _MAX_LISTED} more' if len(duplicated) > _MAX_LISTED else ''
    raise errors.DataError(f'{source} has {len(duplicated)} duplicated ids: {named}{more}. Ids '
                           'must be unique (rows are 1-based, header excluded); fix the file or '
                           'choose another --id_column (train: --config.data.id_column).')


def _listed(items: list) -> str:
  """'1, 2, 3' or '1, 2, 3, 4, 5, ... (12 in all)'."""
  shown = ', '.join(map(str, items[:_MAX_LISTED]))
  return shown if len(items) <= _MAX_LISTED else f'{shown}, ... ({len(items)} in all)'
