"""Inspect a data set: what was kept and dropped, genres, lengths, split sizes.

  python -m genre_jax.data --list
  python -m genre_jax.data --dataset tmdb_10k
  python -m genre_jax.data --dataset allmovie --path data/movies_dataset_from_allmovie.json
  python -m genre_jax.data --path my.csv --format csv --text_column plot --genre_column tags

Prints human-readable lines, then a JSON summary as the last line of stdout. Errors in the data
or the flags are printed as one `error: ...` line on stderr, with exit status 2.
"""

import dataclasses
import json
from pathlib import Path
import textwrap

from absl import flags
from ml_collections import config_flags

from genre_jax import cli
from genre_jax import errors
from genre_jax.data import pipeline
from genre_jax.data import registry

FLAGS = flags.FLAGS
flags.DEFINE_bool('list', False, 'List the registered data sets.')
flags.DEFINE_string('dataset', None, 'A registered data set (default: config.data.name).')
flags.DEFINE_string('path', None, 'A data file of your own.')
flags.DEFINE_enum('format', None, list(registry.FORMATS), 'Format of --path.')
flags.DEFINE_string('text_column', None, 'csv / jsonl: the column with the synopsis.')
flags.DEFINE_string('genre_column', None, 'csv / jsonl: the column with the genres.')
flags.DEFINE_string('id_column', None, 'csv / jsonl: the column with unique ids (default: row).')
flags.DEFINE_string('title_column', None, 'csv / jsonl: the column with titles (optional).')
flags.DEFINE_string('genre_separator', None, "Separator of genre strings (default ',').")
flags.DEFINE_integer('seed', None, 'Split seed (default: config.data.split_seed).')
flags.DEFINE_integer('max_examples', None, 'Use only the first N kept records.', lower_bound=1)
flags.DEFINE_string('mirror', None, 'Mirror directory (default: $GENRE_JAX_MIRROR).')
config_flags.DEFINE_config_file(
    'config', str(Path(__file__).resolve().parents[2] / 'configs' / 'default.py'),
    'Config file whose `data` section gives the defaults.', lock_config=False)


def data_config():
  """`config.data` of --config, with the command-line flags applied."""
  data = FLAGS.config.data
  overrides = dict(name=FLAGS.dataset, path=FLAGS.path, format=FLAGS.format,
                   text_column=FLAGS.text_column, genre_column=FLAGS.genre_column,
                   id_column=FLAGS.id_column, title_column=FLAGS.title_column,
                   genre_separator=FLAGS.genre_separator, split_seed=FLAGS.seed,
                   max_examples=FLAGS.max_examples, mirror=FLAGS.mirror)
  for key, value in overrides.items():
    if value is not None:
      data[key] = value
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
def main(argv) -> None:
  cli.start(argv)
  if FLAGS.list:
    print_registry()
    return
  print_summary(pipeline.summary(pipeline.prepare(data_config())))


if __name__ == '__main__':
  cli.run(main)
