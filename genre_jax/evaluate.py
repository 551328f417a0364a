"""Scores a trained run (or an ensemble) on its own test split or on any data file.

  python -m genre_jax.evaluate --workdir runs/cnn
  python -m genre_jax.evaluate --workdir runs/cnn --dataset allmovie --path movies.json
  python -m genre_jax.evaluate --workdir runs/cnn --path my.csv --format csv \
      --text_column plot --genre_column genres

Uses the run's best checkpoint and its thresholds (tuned on validation during training). Genres
unknown to the run are reported and ignored. The last line of stdout is one JSON object.
"""

import json
import pathlib

from absl import flags

from genre_jax import cli
from genre_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Workdir of a trained run or of an ensemble.')
flags.DEFINE_string('dataset', None, 'A registered data set (default: the run\'s own test split).')
flags.DEFINE_string('path', None, 'A data file to score instead of the run\'s test split.')
flags.DEFINE_string('format', None, 'Format of --path: tmdb_csv | allmovie_json | csv | jsonl.')
flags.DEFINE_string('text_column', 'text', 'Generic csv / jsonl: the text column.')
flags.DEFINE_string('genre_column', 'genres', 'Generic csv / jsonl: the genre column.')
flags.DEFINE_string('output', None, 'Also write the full report (per-genre metrics) to this file.')
flags.mark_flag_as_required('workdir')


@errors.run_cli
def main(argv):
  cli.start(argv)
  from genre_jax import evaluation, inference
  run = inference.load_run(FLAGS.workdir)
  if FLAGS.path or FLAGS.dataset:
    result = evaluation.evaluate_file(run, dataset=FLAGS.dataset, path=FLAGS.path,
                                      format=FLAGS.format, text_column=FLAGS.text_column,
                                      genre_column=FLAGS.genre_column)
  else:
    result = evaluation.evaluate_test_split(run)
  print(evaluation.format_result(result))
  print(json.dumps(result['summary']), flush=True)
  if FLAGS.output:  # After printing: a bad path loses no metrics.
    write_output(FLAGS.output, result)


def write_output(path: str, result) -> None:
  from genre_jax import workdir
  try:
    workdir.write_json(pathlib.Path(path), result)
  except OSError as e:
    raise errors.GenreJaxError(f'--output {path} cannot be written ({e.strerror or e}); the '
                               'metrics are printed above.') from None


if __name__ == '__main__':
  cli.run(main)
