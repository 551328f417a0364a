"""Configurations: `default.py` holds every field; each variant imports it and sets what differs."""

import importlib
import importlib.util
import pathlib

import ml_collections


def load(name: str) -> ml_collections.ConfigDict:
  """The config of `configs/NAME.py` (`load('cnn')`) or of a config file's path, as
  `--config FILE` gives it to the commands: its `get_config()`. Experiments and tests load
  configs through this; the commands through ml_collections' `config_flags`."""
  path = pathlib.Path(name)
  if path.suffix != '.py':
    return importlib.import_module(f'{__name__}.{name}').get_config()
  spec = importlib.util.spec_from_file_location(f'_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
