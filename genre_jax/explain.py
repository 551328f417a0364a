"""Explains a run's (or an ensemble's) genres for synopses: which words raised or lowered each.

  python -m genre_jax.explain --workdir runs/cnn "A retired hitman is pulled back in..."
  python -m genre_jax.explain --workdir runs/cnn --input synopses.txt --json
  python -m genre_jax.explain --workdir runs/cnn --genre Western,Comedy --html why.html "..."

For each synopsis and genre (default: the predicted genres, at least the most probable one):
the calibrated probability and the words with the strongest positive and negative attributions
(integrated gradients of the calibrated logit, `genre_jax/attribution.py`). `--json` prints one
object per synopsis with every word's attribution, the logit and the baseline logit (their
difference is the attributions' sum, up to `completeness_error`); `--html` writes one
self-contained page with the synopses highlighted, one row per genre.
"""

import json
import pathlib

from absl import flags

from genre_jax import cli
from genre_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Workdir of a trained run or of an ensemble.')
flags.DEFINE_string('input', None, 'A UTF-8 text file with one synopsis per line.')
flags.DEFINE_bool('json', False, 'Print one JSON object per synopsis instead of text.')
flags.DEFINE_string('html', None, 'Also write the explanations to this HTML file.')
flags.DEFINE_multi_string('genre', None, 'Genres to explain (repeat the flag or separate them '
                          'with commas); default: the predicted genres.')
flags.DEFINE_integer('steps', None, 'Integration steps (default: attribution.DEFAULT_STEPS).',
                     lower_bound=1)
flags.DEFINE_integer('top_words', 3, 'Words shown for and against each genre.', lower_bound=1)
flags.mark_flag_as_required('workdir')


def _html_path(path: str) -> pathlib.Path:
  """The --html file, refused before any work if it cannot be written there."""
  out = pathlib.Path(path).expanduser()
  if out.is_dir():
    raise errors.GenreJaxError(f'--html {path} is a directory; give a file name.')
  if not out.parent.is_dir():
    raise errors.GenreJaxError(f'--html {path}: the directory {out.parent} does not exist.')
  return out


def _summary(record: dict, top: int) -> str:
  """The terminal lines of one record: each genre, its probability, its strongest words."""
  shown = record['text'] if len(record['text']) <= 80 else record['text'][:77] + '...'
  lines = [shown]
  words = record['words']
  for name, g in record['genres'].items():
    order = sorted(range(len(words)), key=lambda i: -g['attributions'][i])
    best = [i for i in order[:top] if g['attributions'][i] > 0]
    worst = [i for i in order[::-1][:top] if g['attributions'][i] < 0]
    fmt = lambda ids: ', '.join(f'{words[i]} {g["attributions"][i]:+.2f}' for i in ids) or '-'
    lines.append(f'  {name:<16} {g["probability"]:.2f}   for: {fmt(best)}   against: '
                 f'{fmt(worst)}')
  return '\n'.join(lines)


@errors.run_cli
def main(argv):
  cli.start(argv, takes_arguments=True)
  from genre_jax import attribution, explain_html, inference, workdir
  texts = inference.read_texts(argv[1:], FLAGS.input)
  html_path = _html_path(FLAGS.html) if FLAGS.html else None
  if FLAGS.steps is not None and FLAGS.steps > attribution.MAX_STEPS:
    raise errors.GenreJaxError(f'--steps {FLAGS.steps} is above {attribution.MAX_STEPS}.')
  run = inference.load_run(FLAGS.workdir)
  attribution.resolve_genres(run.labels.classes, FLAGS.genre, what='--genre')
  records = attribution.explain(run, texts, FLAGS.genre, FLAGS.steps)
  if html_path is not None:
    try:
      workdir.write_text(html_path, explain_html.page(records))
    except OSError as e:
      raise errors.GenreJaxError(f'--html {html_path} cannot be written ({e.strerror}).'
                                 ) from None
  for record in records:
    print(json.dumps(record) if FLAGS.json else _summary(record, FLAGS.top_words))


if __name__ == '__main__':
  cli.run(main)
