"""Predicts genres for synopses with a trained run (or an ensemble).

  python -m genre_jax.predict --workdir runs/cnn "A retired hitman is pulled back in..."
  python -m genre_jax.predict --workdir runs/cnn --input synopses.txt --json

Prints, for each text, the predicted genres with their probabilities (the run's tuned thresholds).
The probabilities are calibrated (the run's temperature, fitted on validation; `calibration` in
each JSON record says which, `none` for a workdir without calibration.json).
"""

import json

from absl import flags

from genre_jax import cli
from genre_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Workdir of a trained run or of an ensemble.')
flags.DEFINE_string('input', None, 'A UTF-8 text file with one synopsis per line.')
flags.DEFINE_bool('json', False, 'Print one JSON object per line instead of text.')
flags.DEFINE_integer('top_k', 5, 'Also show this many most probable genres.', lower_bound=1)
flags.mark_flag_as_required('workdir')


@errors.run_cli
def main(argv):
  cli.start(argv, takes_arguments=True)
  from genre_jax import inference, records
  texts = inference.read_texts(argv[1:], FLAGS.input)
  run = inference.load_run(FLAGS.workdir)
  for record in records.prediction_records(texts, run.probs(texts), list(run.labels.classes),
                                           run.thresholds, run.calibration.method, FLAGS.top_k):
    if FLAGS.json:
      print(json.dumps(record))
    else:
      text = record['text']
      shown = text if len(text) <= 80 else text[:77] + '...'
      print(f'{shown}\n  -> ' + (', '.join(f'{g} ({q:.2f})' for g, q in record['genres'].items())
                                or '(no genre above threshold)'))


if __name__ == '__main__':
  cli.run(main)
