"""What a configuration may be, and what may change when a run resumes."""

import json

import pytest

from genre_jax import run_config
from genre_jax import trainer
from genre_jax.errors import GenreJaxError
from tests.conftest import config_args, run_module, tiny_config


@pytest.mark.parametrize('field, value, needle', [
    ('model.dropout', 1.5, r'config.model.dropout must be in \[0, 1\), got 1.5'),
    ('model.dropout', -0.1, 'config.model.dropout'),
    ('model.embed_dropout', 1.0, 'config.model.embed_dropout'),
    ('model.word_dropout', 1.0, 'config.model.word_dropout'),
    ('data.max_length', 0, 'config.data.max_length must be at least 1, got 0'),
    ('data.vocab_size', 1, 'config.data.vocab_size'),
    ('model.conv_kernel_sizes', (3, 0), 'conv_kernel_sizes'),
    ('warmup_epochs', -1.0, 'config.warmup_epochs must not be negative'),
    ('ema_decay', 1.0, 'ema_decay'),
])
def test_check_config_names_the_field(field, value, needle):
  config = tiny_config(**{field: value})
  with pytest.raises(GenreJaxError, match=needle):
    run_config.check_config(config)


def test_check_config_accepts_the_shipped_tiny_config():
  run_config.check_config(tiny_config())


@pytest.fixture(scope='module')
def one_epoch(synthetic_jsonl, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('resume')
  trainer.train_and_evaluate(tiny_config(synthetic_jsonl), str(workdir))
  return workdir


@pytest.mark.parametrize('overrides, listed', [
    ({'learning_rate': 0.5}, ['learning_rate: 0.01 in the run, 0.5 now']),
    ({'seed': 3}, ['seed: 0 in the run, 3 now']),
    ({'optimizer': 'sgd', 'batch_size': 8}, ["optimizer: 'adamw' in the run, 'sgd' now",
                                             'batch_size: 4 in the run, 8 now']),
    ({'model.name': 'lstm'}, ["model.name: 'cnn' in the run, 'lstm' now"]),
    ({'lr_schedule': 'cosine', 'num_epochs': 2}, ["lr_schedule: 'constant' in the run"]),
])
def test_resume_refuses_a_changed_configuration(synthetic_jsonl, one_epoch, overrides, listed):
  before = (one_epoch / 'report.json').read_text()
  with pytest.raises(GenreJaxError) as e:
    trainer.train_and_evaluate(tiny_config(synthetic_jsonl, **overrides), str(one_epoch))
  for text in listed:
    assert text in str(e.value)
  assert (one_epoch / 'report.json').read_text() == before


def test_num_epochs_may_change_on_resume_but_not_under_a_cosine_schedule():
  saved = tiny_config().to_dict()
  run_config.check_resumable(saved, tiny_config(num_epochs=5, progress_bar=True), 'w')
  cosine = tiny_config(lr_schedule='cosine').to_dict()
  with pytest.raises(GenreJaxError, match='num_epochs: 1 in the run, 5 now'):
    run_config.check_resumable(cosine, tiny_config(lr_schedule='cosine', num_epochs=5), 'w')


def test_extending_a_run_trains_the_new_epochs(synthetic_jsonl, tmp_path):
  trainer.train_and_evaluate(tiny_config(synthetic_jsonl), str(tmp_path))
  report = trainer.train_and_evaluate(tiny_config(synthetic_jsonl, num_epochs=2), str(tmp_path))
  assert report['epochs_run'] == 2
  assert json.loads((tmp_path / 'config.json').read_text())['num_epochs'] == 2


@pytest.mark.parametrize('args, needle', [
    (['--config.num_epoch=3'], 'Did you mean "num_epochs"'),
    (['--config.model.dropuot=0.1'], 'dropout'),
    (['--config.model.dropout=1.5'], 'config.model.dropout must be in [0, 1)'),
    (['--config.data.max_length=0'], 'config.data.max_length must be at least 1'),
])
def test_config_mistakes_are_one_line_before_any_work(synthetic_jsonl, tmp_path, args, needle):
  proc = run_module('genre_jax.train', *config_args(synthetic_jsonl, *args), '--workdir',
                    tmp_path / 'w', check=False)
  assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
  assert needle in proc.stderr
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('content, needle', [
    (None, 'No such file'),
    ('def get_config(:\n', 'syntax error at line 1'),
])
def test_missing_or_broken_config_file_is_one_line(tmp_path, content, needle):
  path = tmp_path / 'config.py'
  if content is not None:
    path.write_text(content)
  proc = run_module('genre_jax.train', '--config', path, '--workdir', tmp_path / 'w',
                    check=False)
  assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
  assert needle in proc.stderr and str(path.name) in proc.stderr
  assert not (tmp_path / 'w').exists()
