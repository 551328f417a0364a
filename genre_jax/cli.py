"""What every `python -m genre_jax.*` command shares: its flags parsed by `errors.parse_flags`,
and the same start (quiet libraries, the host's memory setting, the compilation cache).

  if __name__ == '__main__':
    cli.run(main)
"""

from absl import app
from absl import logging

from genre_jax import errors
from genre_jax import host


def start(argv: list[str], *, takes_arguments: bool = False) -> None:
  """Call first in a command's `main`: refuses stray arguments (unless the command takes them),
  silences orbax's logging (its failures reach the user as one `error:` line) and prepares JAX."""
  if len(argv) > 1 and not takes_arguments:
    raise errors.GenreJaxError(f'unexpected arguments: {" ".join(argv[1:])} (flags are spelt '
                               '--name=value; see --help).')
  logging.set_verbosity(logging.FATAL)
  host.keep_freed_memory()  # Before the first large allocation (see host.py).
  from genre_jax import inference  # After flag parsing: --help and flag errors stay fast.
  inference.enable_compilation_cache()


def run(main) -> None:
  """`absl.app.run(main)` with one-line flag errors (exit status 2)."""
  app.run(main, flags_parser=errors.parse_flags)
