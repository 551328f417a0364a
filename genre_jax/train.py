"""Trains a genre classifier.

  python -m genre_jax.train --config configs/cnn.py --workdir runs/cnn
  python -m genre_jax.train --config configs/cnn.py --workdir runs/cnn3 --config.num_epochs=3

Rerunning the same command resumes from the workdir's latest checkpoint.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from genre_jax import errors
from genre_jax import host

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the report.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-host runs).')
config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


@errors.run_cli
def main(argv):
  logging.set_verbosity(logging.FATAL)  # orbax would log each failure again.
  if len(argv) > 1:
    raise errors.GenreJaxError(f'unexpected arguments: {" ".join(argv[1:])}')
  from genre_jax import inference, parallel, trainer  # After flag parsing: fast --help.
  host.keep_freed_memory()  # Before the first large allocation (see host.py).
  inference.enable_compilation_cache()
  if FLAGS.distributed:
    parallel.initialize_distributed()
  trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
