"""User-facing errors and the wrapper that turns them into a one-line CLI failure.

Every error a user can fix (a missing file, a bad column name, an unknown model) is raised as a
`GenreJaxError` with a message that says what is wrong and how to fix it. Command-line entry
points wrap their `main` with `run_cli`, which prints `error: <message>` to stderr and exits with
status 2 instead of showing a traceback, and parse their flags with `parse_flags`, which does the
same for a mistyped flag or config field and a missing or broken config file. Programming errors
(anything else) still show a traceback.
"""

import functools
import os
import sys
import threading

from absl import flags


class GenreJaxError(Exception):
  """An error caused by the user's input or environment, with an actionable message."""


class DataError(GenreJaxError):
  """A problem with a data set: missing, unreadable, malformed, or empty after cleaning."""


class DiskFullError(GenreJaxError):
  """The workdir's device is full. A command ends at once on it (`os._exit`): the background
  writers of orbax and TensorBoard would only fail again, noisily, while the process shuts down."""


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
    sys.excepthook = _quiet_closed_loop(sys.excepthook)
    try:
      return main_fn(*args, **kwargs)
    except GenreJaxError as e:
      _fail(str(e), at_once=isinstance(e, DiskFullError))

  return wrapper


def _quiet_closed_loop(hook):
  """`sys.excepthook` without the "Event loop is closed" of background writer threads: when a
  write fails (a full disk), orbax closes its event loop while tensorstore's threads still post
  their callbacks to it, and each prints that traceback before the one-line error."""
  if getattr(hook, 'quiet_closed_loop', False):
    return hook

  def quiet(kind, value, tb):
    if (threading.current_thread() is not threading.main_thread()
        and isinstance(value, RuntimeError) and str(value) == 'Event loop is closed'):
      return
    hook(kind, value, tb)

  quiet.quiet_closed_loop = True
  return quiet


def _fail(message: str, at_once: bool = False) -> None:
  sys.stdout.flush()
  print(f'error: {message}', file=sys.stderr, flush=True)
  if at_once:
    os._exit(EXIT_USER_ERROR)
  sys.exit(EXIT_USER_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run(main, flags_parser=errors.parse_flags)`), with every mistake
  on the command line as one line and status 2: an unknown or mistyped flag, a config file that
  is missing or does not run, an unknown config field (with ml_collections' "did you mean")."""
  try:
    rest = flags.FLAGS(argv)
    for name in flags.FLAGS:  # A config file that failed to load raises on first use: now.
      getattr(flags.FLAGS[name].value, 'to_dict', None)
    return rest
  except (flags.Error, SyntaxError, OSError, AttributeError, KeyError, TypeError,
          ValueError) as e:
    text = ' '.join(str(e).replace('\\n', ' ').replace("\\'", "'").split())
    if len(text) > 1 and text[0] == text[-1] and text[0] in '\'"':
      text = text[1:-1]
    text = text.replace('Configuration is not available because of an earlier failure to load: '
                        'Failed loading config file config_config', 'cannot load --config:')
    text = text or type(e).__name__
    if isinstance(e, SyntaxError):
      text = f'the config file {e.filename} has a syntax error at line {e.lineno}: {e.msg}'
    _fail(f'{text} (see --help).')
