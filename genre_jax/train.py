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
flags.DEFINE_bool('distributed', False, 'Join a multi-process run (every process runs the same '
                  'command); the cluster (Slurm, Open MPI, Kubernetes, TPU VMs) is detected, or '
                  'give the next three flags.')
flags.DEFINE_string('coordinator_address', None, '--distributed on plain hosts: HOST:PORT of '
                    'process 0.')
flags.DEFINE_integer('num_processes', None, '--distributed on plain hosts: how many processes.',
                     lower_bound=1)
flags.DEFINE_integer('process_id', None, '--distributed on plain hosts: this process (0 ... N-1).',
                     lower_bound=0)
config_flags.DEFINE_config_file('config', None, 'Configuration file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


@errors.run_cli
def main(argv):
  cli.start(argv)
  from genre_jax import parallel, trainer  # After flag parsing: fast --help.
  if FLAGS.distributed:
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
  trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main)
