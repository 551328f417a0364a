"""Inspect a data set: what was kept and dropped, genres, lengths, split sizes.

  python -m genre_jax.data --list
  python -m genre_jax.data --dataset tmdb_10k
  python -m genre_jax.data --dataset allmovie --path data/movies_dataset_from_allmovie.json
  python -m genre_jax.data --path my.csv --format csv --text-column plot --genre-column tags

Prints human-readable lines, then a JSON summary as the last line of stdout. Errors in the data
are printed as one `error: ...` paragraph on stderr, with exit status 2.
"""

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path
import textwrap

from genre_jax import errors
from genre_jax.data import pipeline
from genre_jax.data import registry

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / 'configs' / 'default.py'


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m genre_jax.data', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--list', action='store_true', help='list the registered data sets')
  parser.add_argument('--dataset', help='registered data set (default: config.data.name)')
  parser.add_argument('--path', help='a data file of your own')
  parser.add_argument('--format', choices=registry.FORMATS, help='format of --path')
  parser.add_argument('--text-column', help='csv / jsonl: column with the synopsis')
  parser.add_argument('--genre-column', help='csv / jsonl: column with the genres')
  parser.add_argument('--id-column', help='csv / jsonl: column with unique ids (default: row)')
  parser.add_argument('--title-column', help='csv / jsonl: column with titles (optional)')
  parser.add_argument('--genre-separator', help="separator of genre strings (default ',')")
  parser.add_argument('--seed', type=int, help='split seed (default: config.data.split_seed)')
  parser.add_argument('--max-examples', type=int, help='use only the first N kept records')
  parser.add_argument('--mirror', help='mirror directory (default: $GENRE_JAX_MIRROR)')
  parser.add_argument('--config', default=str(DEFAULT_CONFIG),
                      help='config file whose `data` section gives the defaults')
  return parser.parse_args(argv)


def load_config(path: str | Path = DEFAULT_CONFIG):
  """Runs `get_config()` of a config file (configs/default.py by default)."""
  path = Path(path)
  if not path.is_file():
    raise errors.GenreJaxError(f'config file not found: {path} (give one with --config).')
  module_spec = importlib.util.spec_from_file_location('_genre_jax_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config()


def load_data_config(args: argparse.Namespace):
  """`config.data` of the config file, with the command-line options applied."""
  data = load_config(args.config).data
  overrides = dict(name=args.dataset, path=args.path, format=args.format,
                   text_column=args.text_column, genre_column=args.genre_column,
                   id_column=args.id_column, title_column=args.title_column,
                   split_seed=args.seed, max_examples=args.max_examples, mirror=args.mirror)
  for key, value in overrides.items():
    if value is not None:
      data[key] = value
  if args.genre_separator is not None:
    data.genre_separator = args.genre_separator
  return data


def print_registry() -> None:
  for spec in registry.REGISTRY.values():
    print(f'{spec.name}  (format {spec.format})')
    print(f'  address: {spec.url or "none: supply the file with --path FILE"}')
    print(f'  file: <cache or mirror>/{spec.relpath}' + (f'  sha256 {spec.sha256}'
                                                       if spec.sha256 else ''))
    print(textwrap.fill(spec.card, width=100, initial_indent='  ', subsequent_indent='  '))
  print(json.dumps([dataclasses.asdict(spec) for spec in registry.REGISTRY.values()]))


def print_summary(s: dict) -> None:
  r = s['records']
  dropped = sum(r['dropped'].values())
  print(f"data: {s['source']} (format {s['format']})")
  print(f"records: {r['rows']:,} rows, {r['kept']:,} kept, {dropped:,} dropped "
        f"({r['dropped']['no_text']} without text, {r['dropped']['no_genre']} without any genre, "
        f"{r['dropped']['max_examples']} beyond max_examples)")
  if r.get('merged_genre_spellings'):
    print('genre spellings merged (differing only in case): ' + '; '.join(
        f'{", ".join(v)} -> {k}' for k, v in r['merged_genre_spellings'].items()))
  print(f"genres ({s['num_genres']}): " + ', '.join(f'{g} {n}' for g, n in s['genres'].items()))
  print(f"label cardinality: {s['label_cardinality']:.2f} genres per record "
        f"({s['single_genre_share']:.1%} single-genre)")
  print('text length (words): ' + ', '.join(f'{k} {v}' for k, v in s['text_length_words'].items()))
  print(f"split (seed {s['split_seed']}): " + ', '.join(f'{k} {v:,}'
                                                      for k, v in s['splits'].items()))
  print(f"vocabulary: {s['vocab_size']:,} ids (training split); {s['num_labels']} labels")
  for name, unknown in s['unknown_genres'].items():
    print(f'genres of the {name} split unseen in training (ignored): {unknown}')
  print(json.dumps(s))


@errors.run_cli
def main(argv=None) -> None:
  args = parse_args(argv)
  if args.list:
    print_registry()
    return
  print_summary(pipeline.summary(pipeline.prepare(load_data_config(args))))


if __name__ == '__main__':
  main()
