"""User-facing errors and the wrapper that turns them into a one-line CLI failure.

Every error a user can fix (a missing file, a bad column name, an unknown model) is raised as a
`GenreJaxError` with a message that says what is wrong and how to fix it. Command-line entry
points wrap their `main` with `run_cli`, which prints `error: <message>` to stderr and exits with
status 2 instead of showing a traceback. Programming errors (anything else) still show a traceback.
"""

import functools
import sys


class GenreJaxError(Exception):
  """An error caused by the user's input or environment, with an actionable message."""


class DataError(GenreJaxError):
  """A problem with a data set: missing, unreadable, malformed, or empty after cleaning."""


EXIT_USER_ERROR = 2


def run_cli(main_fn):
  """Decorates a CLI `main` so that a `GenreJaxError` ends the program cleanly.

  Usage:
    @errors.run_cli
    def main(argv): ...

  Args:
    main_fn: the entry point; called with the same arguments as the wrapper.

  Returns:
    A wrapper that returns `main_fn`'s result, or prints `error: <message>` to stderr and exits
    with status 2 when `main_fn` raises a `GenreJaxError`.
  """

  @functools.wraps(main_fn)
  def wrapper(*args, **kwargs):
    try:
      return main_fn(*args, **kwargs)
    except GenreJaxError as e:
      sys.stdout.flush()
      print(f'error: {e}', file=sys.stderr)
      sys.exit(EXIT_USER_ERROR)

  return wrapper
