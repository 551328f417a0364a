"""Every seed and tuned config trains one full epoch on the real default data set (slow).

  GENRE_JAX_MIRROR=../shared/data python -m pytest -m slow tests/test_real_data.py

Excluded from the default test run (about 10 minutes on 2 CPU cores).
"""

import numpy as np
import pytest

import configs
from tests.conftest import mirror_or_skip

CONFIGS = ['seed_lstm', 'seed_cnn', 'seed_cnn_lstm', 'lstm', 'cnn', 'cnn_lstm']


@pytest.mark.slow
@pytest.mark.parametrize('name', CONFIGS)
def test_config_trains_one_epoch_on_tmdb(name, tmp_path):
  mirror_or_skip()
  from genre_jax import trainer
  config = configs.load(name)
  config.num_epochs = 1
  config.progress_bar = False
  report = trainer.train_and_evaluate(config, str(tmp_path))
  assert report['data']['split_sizes'] == {'train': 7973, 'validation': 1007, 'test': 1005}
  assert np.isfinite(report['test']['loss'])
  assert 0.0 < report['test']['micro_f1'] <= 1.0
