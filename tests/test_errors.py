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
