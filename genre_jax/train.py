"""Trains a genre classifier.

  python -m genre_jax.train --config configs/cnn.py --workdir runs/cnn
  python -m genre_jax.train --config configs/cnn.py --workdir runs/cnn3 --config.num_epochs=3

Rerunning the same command resumes from the workdir's latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from genre_jax import cli
from genre_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the report.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-host runs).')
config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


@errors.run_cli
def main(argv):
  cli.start(argv)
  from genre_jax import parallel, trainer  # After flag parsing: fast --help.
  if FLAGS.distributed:
    parallel.initialize_distributed()
  trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main)
