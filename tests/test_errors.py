"""Tests for genre_jax.errors.run_cli."""

import pytest

from genre_jax import errors


def test_run_cli_prints_error_and_exits_2(capsys):

  @errors.run_cli
  def main(value):
    if value is None:
      raise errors.DataError('no value; pass one.')
    return value

  assert main(3) == 3
  with pytest.raises(SystemExit) as e:
    main(None)
  assert e.value.code == 2
  assert capsys.readouterr().err == 'error: no value; pass one.\n'


def test_run_cli_keeps_programming_errors():
  with pytest.raises(ZeroDivisionError):
    errors.run_cli(lambda: 1 / 0)()


def test_closed_event_loop_of_background_threads_is_quiet():
  """Only a background thread's "Event loop is closed" is dropped; anything else is shown."""
  import threading
  from genre_jax import errors
  shown = []
  hook = errors._quiet_closed_loop(lambda kind, value, tb: shown.append(str(value)))
  assert errors._quiet_closed_loop(hook) is hook  # Wrapped once, however many commands run.

  def background():
    hook(RuntimeError, RuntimeError('Event loop is closed'), None)
    hook(ValueError, ValueError('a real bug'), None)

  thread = threading.Thread(target=background)
  thread.start()
  thread.join()
  hook(RuntimeError, RuntimeError('Event loop is closed'), None)  # The main thread's: shown.
  assert shown == ['a real bug', 'Event loop is closed']
