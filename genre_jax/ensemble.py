"""Builds an ensemble of trained runs: the mean of their probabilities, in one workdir.

  python -m genre_jax.ensemble --workdir runs/ens --members runs/cnn runs/lstm runs/cnn_lstm
  python -m genre_jax.ensemble --workdir runs/ens --members runs/cnn,runs/minilm --per_genre
  python -m genre_jax.ensemble --workdir runs/ens --members runs/cnn runs/minilm --weights tuned

Members must share the label set, the data split and the data source (see
`genre_jax.ensembling`). Then:

  python -m genre_jax.evaluate --workdir runs/ens
  python -m genre_jax.predict --workdir runs/ens "A retired hitman is pulled back for one last job."
"""

from absl import flags

from genre_jax import cli
from genre_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for the ensemble (its members are copied in).')
flags.DEFINE_list('members', None, 'Workdirs of trained runs, separated by spaces or commas.')
flags.DEFINE_bool('per_genre', False, 'Also tune one threshold per genre on validation.')
flags.DEFINE_enum('weights', 'equal', ['equal', 'tuned'],
                  'Members\' weights: equal, or tuned on validation (a grid on the simplex).')
flags.mark_flags_as_required(['workdir', 'members'])


@errors.run_cli
def main(argv):
  cli.start(argv, takes_arguments=True)
  members = list(FLAGS.members) + list(argv[1:])  # --members a b c: b and c arrive as arguments.
  from genre_jax import ensembling  # After flag parsing: fast --help.
  ensembling.check_count(members)
  ensembling.build(FLAGS.workdir, members, per_genre=FLAGS.per_genre, weights=FLAGS.weights)


if __name__ == '__main__':
  cli.run(main)
