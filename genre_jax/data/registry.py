"""Registered data sets: where each file comes from, how to check it and how to parse it.

A named data set is a `DatasetSpec`. Its file lives at the same relative path (`relpath`) in the
download cache and in a local mirror (see `download.fetch`). Data sets without a public address
(`url=None`) must be supplied by the user as a file path.
"""

import dataclasses

from genre_jax import errors

# Parsers for these formats live in `parsers.py`; `tmdb_csv` and `allmovie_json` fix their
# columns, `csv` and `jsonl` take user-named columns.
FORMATS = ('tmdb_csv', 'allmovie_json', 'csv', 'jsonl')


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A named data set.

  Attributes:
    name: registry key, e.g. 'tmdb_10k'.
    format: one of `FORMATS`.
    relpath: path of the file relative to the cache or mirror directory.
    url: public download address, or None when the user must supply the file.
    sha256: hex SHA-256 of the file, or None (not checked).
    size: file size in bytes (informational).
    card: a short human-readable description (origin, columns, size, licence).
  """
  name: str
  format: str
  relpath: str
  url: str | None = None
  sha256: str | None = None
  size: int | None = None
  card: str = ''


REGISTRY = {
    spec.name: spec for spec in [
        DatasetSpec(
            name='tmdb_10k',
            format='tmdb_csv',
            relpath='tmdb-top10k/top10K-TMDB-movies.csv',
            url=('https://raw.githubusercontent.com/vartika51/recommender-system/'
                 '4ac72314699c3507bb1c4136409f636d845acf36/top10K-TMDB-movies.csv'),
            sha256='8063d84a6a4e5287ab1a52f9d2d01b0f1eded24511e789b5a98b93063de0e657',
            size=3_515_411,
            card=('10,000 popular movies from The Movie Database (copy of the Kaggle set "Top '
                  '10000 popular movies (TMDB)"). Text: `overview` (English synopsis); genres: '
                  '`genre`, comma-separated, 18 genres. 9,985 usable rows, 2.57 genres per movie. '
                  'TMDB terms apply: non-commercial use with attribution ("This product uses the '
                  'TMDB API but is not endorsed or certified by TMDB").'),
        ),
        DatasetSpec(
            name='allmovie',
            format='allmovie_json',
            relpath='allmovie/movies_dataset_from_allmovie.json',
            card=('AllMovie export `movies_dataset_from_allmovie.json` (JSON array or JSON lines; '
                  'fields name, genre, released_year, poster, language, director, domain, '
                  'duration, synopsis, trailer, cast, url, id). Text: `synopsis`; genres: `genre` '
                  '(a list or one comma-separated string). No public address: download it '
                  'yourself and pass its path (--path FILE, or config.data.path).'),
        ),
    ]
}


def get_spec(name: str) -> DatasetSpec:
  """Returns the registered data set `name`; raises `DataError` listing the known names."""
  if name not in REGISTRY:
    raise errors.DataError(
        f'unknown data set {name!r}; registered data sets: {", ".join(sorted(REGISTRY))} '
        f'(or give a file with --path FILE --format {{{",".join(FORMATS)}}}).')
  return REGISTRY[name]
