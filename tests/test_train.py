"""End-to-end tests of train / evaluate / predict on a tiny synthetic data set (CPU, seconds)."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from genre_jax import evaluation
from genre_jax import inference
from genre_jax import models
from genre_jax import optim
from genre_jax import parallel
from genre_jax import train_step
from genre_jax import trainer
from genre_jax.data import text as text_lib
from genre_jax.errors import GenreJaxError
from tests.conftest import config_args, run_module, synthetic_records, tiny_config


@pytest.fixture(scope='module')
def trained(tmp_path_factory, synthetic_jsonl):
  """One tiny run trained through the command line (shared by the evaluate / predict tests)."""
  workdir = tmp_path_factory.mktemp('run')
  proc = run_module('genre_jax.train', *config_args(
      synthetic_jsonl, '--config.num_epochs=10', '--config.learning_rate=0.02',
      '--config.model.embed_dim=16', '--config.model.conv_filters=16',
      '--config.model.dense_size=16'),
                    '--workdir', workdir)
  return workdir, proc


def test_train_writes_checkpoints_metrics_report(trained):
  workdir, proc = trained
  report = json.loads((workdir / 'report.json').read_text())
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert len(rows) == report['epochs_run'] >= 1
  assert {'train_loss', 'val_loss', 'val_micro_f1', 'val_threshold'} <= set(rows[0])
  # The training curve: training examples re-scored in evaluation mode after each epoch.
  assert {'train_micro_f1', 'train_eval_loss'} <= set(rows[0])
  assert rows[-1]['train_micro_f1'] > rows[0]['train_micro_f1']
  assert rows[-1]['train_eval_loss'] < rows[0]['train_eval_loss']
  assert (workdir / 'checkpoints').is_dir() and (workdir / 'best').is_dir()
  thr = json.loads((workdir / 'thresholds.json').read_text())
  assert 0.0 < thr['global'] < 1.0 and thr['tuned']
  for key in ('micro_f1', 'macro_f1', 'micro_precision', 'micro_recall', 'map'):
    assert 0.0 <= report['test'][key] <= 1.0
  # The synthetic genres are keyword-determined: even the tiny model learns them.
  assert report['test']['micro_f1'] > 0.6
  assert 'test (threshold' in proc.stdout and '->' in proc.stdout  # Human summary + examples.


def test_evaluate_reports_json_last_line(trained, synthetic_jsonl):
  workdir, _ = trained
  proc = run_module('genre_jax.evaluate', '--workdir', workdir)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  for key in ('n', 'micro_f1', 'macro_f1', 'samples_f1', 'micro_precision', 'micro_recall',
              'hamming_loss', 'map', 'threshold'):
    assert key in result, key
  report = json.loads((workdir / 'report.json').read_text())
  assert result['n'] == report['data']['split_sizes']['test']
  assert result['micro_f1'] == pytest.approx(report['test']['micro_f1'], abs=1e-6)


def test_evaluate_tokenises_only_the_test_split_once(trained, monkeypatch):
  workdir, _ = trained
  encoded = []
  encode = text_lib.WordTokenizer.encode
  monkeypatch.setattr(text_lib.WordTokenizer, 'encode',
                      lambda self, texts, *a, **k: encoded.append(len(texts)) or encode(
                          self, texts, *a, **k))
  result = evaluation.evaluate_test_split(inference.load_run(workdir))
  report = json.loads((workdir / 'report.json').read_text())
  assert sum(encoded) == report['data']['split_sizes']['test'] == result['summary']['n']
  assert result['summary']['micro_f1'] == pytest.approx(report['test']['micro_f1'], abs=1e-6)


def test_evaluate_other_file_reports_unknown_genres(trained, tmp_path):
  workdir, _ = trained
  path = tmp_path / 'other.jsonl'
  path.write_text('\n'.join(json.dumps(r) for r in [
      {'id': 'a', 'text': 'alien robot planet', 'genres': ['Science Fiction', 'Documentary']},
      {'id': 'b', 'text': 'funny joke laugh', 'genres': ['Comedy']},
      {'id': 'c', 'text': 'a film about bees', 'genres': ['Documentary']},
  ]) + '\n')
  proc = run_module('genre_jax.evaluate', '--workdir', workdir, '--path', path, '--format',
                    'jsonl')
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['n'] == 2
  assert result['unknown_genres'] == {'Documentary': 2}
  assert result['dropped_no_known_genre'] == 1


def test_predict_text_and_json(trained, tmp_path):
  workdir, _ = trained
  proc = run_module('genre_jax.predict', '--workdir', workdir, '--json',
                    'a haunted house full of ghost screams and blood', 'love and a wedding kiss')
  lines = [json.loads(l) for l in proc.stdout.strip().splitlines()]
  assert len(lines) == 2
  assert 'Horror' in lines[0]['top'] and 'Romance' in lines[1]['top']
  assert all(0.0 <= p <= 1.0 for p in lines[0]['top'].values())
  inp = tmp_path / 'in.txt'
  inp.write_text('alien spaceship\nfunny prank\n')
  proc = run_module('genre_jax.predict', '--workdir', workdir, '--input', inp)
  assert proc.stdout.count('->') == 2


def test_predict_empty_text_is_clear_error(trained):
  workdir, _ = trained
  proc = run_module('genre_jax.predict', '--workdir', workdir, '   ', check=False)
  assert proc.returncode == 2
  assert 'empty' in proc.stderr and 'Traceback' not in proc.stderr


def test_evaluate_and_predict_without_checkpoint(tmp_path):
  for module, args in (('genre_jax.evaluate', []), ('genre_jax.predict', ['some text'])):
    proc = run_module(module, '--workdir', tmp_path / 'empty', *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert 'checkpoint' in proc.stderr or 'does not exist' in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.parametrize('override, needle', [
    ('--config.num_epoch=3', 'num_epoch'),          # Typo: absl / ml_collections 'did you mean'.
    ('--config.num_epochs=three', 'num_epochs'),    # Wrong type.
    ('--config.model.name=transformer', 'transformer'),  # Unknown architecture.
    ('--config.optimizer=adagrad', 'adagrad'),
    ('--config.ema_decay=1.0', 'ema_decay'),
    ('--config.layer_decay=1.5', 'layer_decay'),
    ('--config.layer_decay=0.8', 'layer_decay'),  # The CNN has no layers to decay over.
])
def test_config_errors_fail_before_work(synthetic_jsonl, tmp_path, override, needle):
  proc = run_module('genre_jax.train', *config_args(synthetic_jsonl, override), '--workdir',
                    tmp_path / 'w', check=False)
  assert proc.returncode != 0
  assert needle in proc.stderr
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def _params(workdir):
  run = inference.load_run(workdir)
  return jax.tree.leaves(nnx.state(run.model, nnx.Param))


@pytest.mark.parametrize('extra', [[], ['--config.ema_decay=0.9']], ids=['plain', 'ema'])
def test_sigkill_mid_epoch_then_resume_is_identical(synthetic_jsonl, tmp_path, extra):
  args = config_args(synthetic_jsonl, '--config.num_epochs=3', '--config.early_stopping_patience=0',
                     *extra)
  run_module('genre_jax.train', *args, '--workdir', tmp_path / 'straight')
  # 192 training rows / batch 4 = 48 steps per epoch: step 70 is in the middle of epoch 2.
  proc = run_module('genre_jax.train', *args, '--workdir', tmp_path / 'killed',
                    env={'GENRE_JAX_FAULT': 'train_step:70'}, check=False)
  assert proc.returncode == -signal.SIGKILL
  assert len((tmp_path / 'killed' / 'metrics.jsonl').read_text().splitlines()) == 1
  proc = run_module('genre_jax.train', *args, '--workdir', tmp_path / 'killed')
  assert 'resumed from' in proc.stdout and 'epoch 1' in proc.stdout
  a = json.loads((tmp_path / 'straight' / 'report.json').read_text())
  b = json.loads((tmp_path / 'killed' / 'report.json').read_text())
  assert a['test'] == b['test'] and a['thresholds'] == b['thresholds']
  rows_a = (tmp_path / 'straight' / 'metrics.jsonl').read_text().splitlines()
  rows_b = (tmp_path / 'killed' / 'metrics.jsonl').read_text().splitlines()
  strip = lambda rows: [{k: v for k, v in json.loads(r).items()
                         if k not in ('epoch_seconds', 'examples_per_second')} for r in rows]
  assert strip(rows_a) == strip(rows_b)
  for x, y in zip(_params(tmp_path / 'straight'), _params(tmp_path / 'killed')):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_workdir_of_other_architecture_is_refused(synthetic_jsonl, tmp_path):
  config = tiny_config(synthetic_jsonl, num_epochs=1)
  trainer.train_and_evaluate(config, str(tmp_path))
  other = tiny_config(synthetic_jsonl, num_epochs=1)
  other.model.name = 'lstm'
  with pytest.raises(GenreJaxError, match="model.name: 'cnn' in the run, 'lstm' now"):
    trainer.train_and_evaluate(other, str(tmp_path))


def test_nan_loss_stops_with_step_and_checkpoint(synthetic_jsonl, tmp_path):
  config = tiny_config(synthetic_jsonl, num_epochs=2, optimizer='sgd', learning_rate=1e30,
                       momentum=0.0)
  with pytest.raises(GenreJaxError, match=r'step \d+.*[Ll]ast good checkpoint'):
    trainer.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize('name', sorted(optim.OPTIMIZERS))
def test_every_optimizer_trains(synthetic_jsonl, tmp_path, name):
  config = tiny_config(synthetic_jsonl, num_epochs=1, optimizer=name)
  config.data.max_examples = 40
  report = trainer.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(report['test']['loss'])


def _tiny_model_and_batches(steps):
  from genre_jax.data import text as text_lib
  config = tiny_config(batch_size=8)
  records = synthetic_records(8 * steps)
  tok = text_lib.WordTokenizer.fit([r['text'] for r in records], vocab_size=100)
  labels = text_lib.LabelEncoder.fit([r['genres'] for r in records])
  tokens, lengths = tok.encode([r['text'] for r in records], 16)
  y, _ = labels.transform([r['genres'] for r in records])
  batches = [{'tokens': tokens[8 * i:8 * i + 8], 'lengths': lengths[8 * i:8 * i + 8],
              'labels': y[8 * i:8 * i + 8], 'mask': np.ones(8, np.float32)} for i in range(steps)]
  model = models.build_model(config, tok, len(labels.classes))
  model.train()
  return model, nnx.Optimizer(model, optim.make_optimizer(config, steps), wrt=nnx.Param), batches


def test_ema_train_step_averages_the_parameters_and_leaves_training_unchanged():
  decay, steps = 0.9, 4
  leaves = lambda m: [np.asarray(x) for x in jax.tree.leaves(nnx.state(m, nnx.Param))]
  model, optimizer, batches = _tiny_model_and_batches(steps)
  ema = train_step.moving_average_copy(model)
  expected = leaves(model)
  plain_model, plain_optimizer, _ = _tiny_model_and_batches(steps)
  step = train_step.TrainStep(model, optimizer, nnx.Param, ema=ema, ema_decay=decay)
  plain = train_step.TrainStep(plain_model, plain_optimizer, nnx.Param)
  for t, batch in enumerate(batches, start=1):
    assert float(step(batch, None)) == float(plain(batch, None))
    step.sync()
    d = min(decay, (1 + t) / (10 + t))  # trainer.ema_decay_at
    expected = [d * e + (1 - d) * p for e, p in zip(expected, leaves(model))]
  plain.sync()
  for e, got in zip(expected, leaves(ema)):
    np.testing.assert_allclose(got, e, rtol=1e-5, atol=1e-6)
  for a, b in zip(leaves(model), leaves(plain_model)):  # The average does not feed back.
    np.testing.assert_array_equal(a, b)
  assert any(not np.allclose(a, b) for a, b in zip(leaves(model), leaves(ema)))


def test_ema_run_keeps_the_average_and_refuses_a_changed_decay(synthetic_jsonl, tmp_path):
  from genre_jax import checkpoint
  config = tiny_config(synthetic_jsonl, num_epochs=1, ema_decay=0.9)
  trainer.train_and_evaluate(config, str(tmp_path))
  best = _params(tmp_path)  # What evaluate / predict load.
  model = inference.load_run(tmp_path).model
  optimizer = nnx.Optimizer(model, optim.make_optimizer(config, 1), wrt=nnx.Param)
  ema = train_step.moving_average_copy(model)
  checkpoint.RunCheckpoints(tmp_path).restore(checkpoint.LATEST, parallel.make_mesh(), model,
                                             optimizer, ema=ema)
  raw = jax.tree.leaves(nnx.state(model, nnx.Param))
  average = jax.tree.leaves(nnx.state(ema, nnx.Param))
  for a, b in zip(best, average):  # The best (only) epoch's checkpoint holds the average ...
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(not np.allclose(a, b) for a, b in zip(raw, average))  # ... not the raw weights.
  changed = tiny_config(synthetic_jsonl, num_epochs=2, ema_decay=0.5)
  with pytest.raises(GenreJaxError, match='ema_decay'):
    trainer.train_and_evaluate(changed, str(tmp_path))


def test_predict_input_splits_on_newline_only(tmp_path):
  path = tmp_path / 'in.txt'
  path.write_text('one\u2028still one\x0cand one\x85too\r\ntwo\n\n three \n', encoding='utf-8')
  assert inference.read_texts([], str(path)) == [
      'one\u2028still one\x0cand one\x85too', 'two', ' three ']


@pytest.mark.parametrize('args, needle', [
    (['--top_k=-3', 'a ghost'], '--top_k=-3'),
    (['--top_k=0', 'a ghost'], '--top_k=0'),
    (['--input', '{tmp}'], 'is a directory'),
])
def test_predict_mistakes_are_one_line(trained, tmp_path, args, needle):
  workdir, _ = trained
  args = [a.replace('{tmp}', str(tmp_path)) for a in args]
  proc = run_module('genre_jax.predict', '--workdir', workdir, *args, check=False)
  assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
  assert needle.replace('{tmp}', str(tmp_path)) in proc.stderr


def test_evaluate_output_directory_fails_after_printing_the_metrics(trained, tmp_path):
  workdir, _ = trained
  proc = run_module('genre_jax.evaluate', '--workdir', workdir, '--output', tmp_path,
                    check=False)
  assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
  assert f'--output {tmp_path}' in proc.stderr
  assert json.loads(proc.stdout.strip().splitlines()[-1])['micro_f1'] >= 0  # Printed first.
  assert list(tmp_path.iterdir()) == []  # Nothing half-written.


def test_broken_thresholds_file_is_one_line(trained, tmp_path):
  import shutil
  workdir = tmp_path / 'copy'
  shutil.copytree(trained[0], workdir)
  for broken in ('{"global": 0.4,', '{"global": "high", "at_least_one": false}'):
    (workdir / 'thresholds.json').write_text(broken)
    proc = run_module('genre_jax.predict', '--workdir', workdir, 'a ghost story', check=False)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert str(workdir / 'thresholds.json') in proc.stderr


def test_one_genre_data_set_is_refused(tmp_path):
  path = tmp_path / 'one.jsonl'
  path.write_text(''.join(json.dumps({'id': str(i), 'text': f'film {i}', 'genres': ['Drama']})
                          + '\n' for i in range(40)))
  with pytest.raises(GenreJaxError, match='at least two'):
    trainer.train_and_evaluate(tiny_config(path), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()
