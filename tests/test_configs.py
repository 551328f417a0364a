"""Every config in configs/ loads through ml_collections.config_flags and builds its model."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from genre_jax import models

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'
ALL = sorted(p.name for p in CONFIGS.glob('*.py') if p.name != '__init__.py')
MINE = ['seed_lstm.py', 'seed_cnn.py', 'seed_cnn_lstm.py', 'lstm.py', 'cnn.py', 'cnn_lstm.py',
        'tiny.py']


def _load(path, *overrides):
  """Parses `--config path [overrides]` like `python -m genre_jax.train` does."""
  argv = ['prog', f'--config={path}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def _logits_shape(model_config):
  """Builds the model for 50 tokens / 5 genres and runs it, abstractly (no compilation)."""
  def build_and_run():
    model = models.create_model(model_config, vocab_size=50, num_labels=5, pad_id=0,
                                rngs=nnx.Rngs(0))
    model.eval()
    return model, model(jnp.ones((2, 6), jnp.int32), jnp.array([6, 3], jnp.int32))

  model, logits = nnx.eval_shape(build_and_run)
  return model, logits.shape


def test_my_configs_exist():
  assert set(MINE) <= set(ALL)


@pytest.mark.parametrize('name', ALL)
def test_config_loads_and_builds(name, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Loading must not depend on the working directory.
  config = _load(CONFIGS / name)
  for key in ('seed', 'num_epochs', 'batch_size', 'learning_rate', 'optimizer', 'model.name',
              'data.name', 'data.max_examples'):
    node = config
    for part in key.split('.'):
      assert part in node, f'{name} lacks {key}'
      node = node[part]
  if config.model.name == 'pretrained':
    pytest.skip('the pretrained architecture needs a checkpoint (tested in test_pretrained.py)')
  if config.model.get('embed_init') == 'pretrained':  # The checkpoint's table, faked: 50 x 384.
    pretrained = pytest.importorskip('genre_jax.pretrained')
    monkeypatch.setattr(pretrained, 'input_embeddings',
                        lambda path=None: np.zeros((50, 384), np.float32))
  _, shape = _logits_shape(config.model)
  assert shape == (2, 5)


def test_relative_path_from_repo_root(monkeypatch):
  monkeypatch.chdir(CONFIGS.parent)
  assert _load('configs/cnn.py').model.name == 'cnn'


def test_override_model_name():
  config = _load(CONFIGS / 'cnn.py', '--config.model.name=lstm', '--config.model.lstm_hidden=7')
  model, shape = _logits_shape(config.model)
  assert isinstance(model, models.LSTMClassifier) and model.conv is None
  assert model.lstm.hidden_features == 7 and shape == (2, 5)


def test_misspelt_override_fails():
  with pytest.raises(Exception, match='lstm_hiden'):
    _load(CONFIGS / 'cnn.py', '--config.model.lstm_hiden=7')


def test_seed_settings():
  for name in ('seed_lstm', 'seed_cnn', 'seed_cnn_lstm'):
    config = _load(CONFIGS / f'{name}.py')
    assert (config.optimizer, config.learning_rate, config.momentum) == ('rmsprop', 0.1, 0.2)
    assert (config.num_epochs, config.batch_size, config.model.dropout) == (5, 32, 0.2)
    assert config.model.dense_size == 41 and config.pos_weight == 'none'
    assert config.early_stopping_patience == 0
  assert _load(CONFIGS / 'seed_lstm.py').model.lstm_hidden == 30
  cnn = _load(CONFIGS / 'seed_cnn.py').model
  assert (cnn.conv_activation, cnn.pooling) == ('tanh', 'average')
