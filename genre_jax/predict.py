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
  from genre_jax import inference, thresholds
  texts = inference.read_texts(argv[1:], FLAGS.input)
  run = inference.load_run(FLAGS.workdir)
  probs = run.probs(texts)
  preds = thresholds.apply(probs, run.threshold, run.thresholds['at_least_one'])
  classes = run.labels.classes
  for text, p, y in zip(texts, probs, preds):
    order = sorted(range(len(classes)), key=lambda j: -p[j])
    predicted = {classes[j]: round(float(p[j]), 4) for j in order if y[j]}
    top = {classes[j]: round(float(p[j]), 4) for j in order[:FLAGS.top_k]}
    if FLAGS.json:
      print(json.dumps({'text': text, 'genres': predicted, 'top': top,
                        'calibration': run.calibration.method}))
    else:
      shown = text if len(text) <= 80 else text[:77] + '...'
      print(f'{shown}\n  -> ' + (', '.join(f'{g} ({q:.2f})' for g, q in predicted.items())
                                or '(no genre above threshold)'))


if __name__ == '__main__':
  cli.run(main)
