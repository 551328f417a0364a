"""Exports (`python -m genre_jax.export`, `genre_jax.serving`): the run's probabilities and ids
from jax alone, for every architecture and an ensemble; refusals of bad artifacts (CPU, seconds)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import configs
from genre_jax import ensembling
from genre_jax import exporting
from genre_jax import inference
from genre_jax import records
from genre_jax import serving
from genre_jax import trainer
from genre_jax.data import text as text_lib
from genre_jax.errors import GenreJaxError
from tests.conftest import REPO, run_module, tiny_config

TEXTS = ['a haunted house full of ghost screams and blood', 'love and a wedding kiss',
         'alien robot fight on a spaceship', 'x', '',
         'funny prank ' * 30, 'The space ships! A dark night in the old town, crew lost.']
# Texts on which a hand-made tokenizer could part from the run's: Unicode normalisation and case,
# punctuation of every kind, control characters, truncation.
TRICKY = [
    '', ' ', '\t\n\r', '?!...', 'Hello, World!', "don't won't y'all", 'e-mail re-entry',
    'ﬁnale ﬂight', 'ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ', 'Café naïve résumé', 'CAFÉ NAÏVE', 'İstanbul ıi',
    'STRASSE straße ß', 'ΣΊΣΥΦΟΣ σίσυφος', '東京 に 行く', 'emoji 🎬🍿 movie', 'zero\u200bwidth',
    'a\u00a0b\u2003c', 'tab\tnew\nline', 'nul\x00byte\x7fdel', '1,000,000 $5', 'x²³ ½ ⅓',
    '“quoted” ‘single’ «guillemets»', 'under_score snake_case', 'ÅNGSTRÖM Å Å',
    'spaceship ' * 40, 'A ghost haunts an old house.' * 10, 'Ελληνικά ΑΒΓ', 'ǅungla ǆ',
    'ｶﾀｶﾅ カタカナ', 'x\u0301 combining', '\u2028line\u2029sep', 'the THE The tHe']


@pytest.fixture(scope='module')
def tiny_bert(tmp_path_factory):
  pytest.importorskip('safetensors')
  from safetensors.numpy import save_file
  from tests import test_pretrained
  path = tmp_path_factory.mktemp('tiny_bert')
  (path / 'config.json').write_text(json.dumps(test_pretrained.TINY))
  save_file(test_pretrained.tiny_weights(), str(path / 'model.safetensors'))
  (path / 'tokenizer.json').write_text(test_pretrained.tiny_tokenizer_json())
  return path


def _pretrained_config(data, tiny_bert):
  config = configs.load('minilm')
  config.update_from_flattened_dict({
      'model.pretrained_path': str(tiny_bert), 'data.path': str(data), 'data.format': 'jsonl',
      'data.max_length': 24, 'num_epochs': 1, 'batch_size': 8, 'eval_batch_size': 16,
      'train_eval_examples': 0, 'progress_bar': False, 'num_examples_to_show': 0})
  return config


@pytest.fixture(scope='module')
def workdirs(tmp_path_factory, synthetic_jsonl, tiny_bert):
  """Trained tiny runs of every architecture (the LSTM with its own vocabulary and max_length,
  the CNN->LSTM with per-genre temperatures) and a weighted ensemble of the CNN and the LSTM."""
  root = tmp_path_factory.mktemp('runs')
  configs_ = {'cnn': tiny_config(synthetic_jsonl),
              'lstm': tiny_config(synthetic_jsonl, seed=1),
              'cnn_lstm': tiny_config(synthetic_jsonl),
              'pretrained': _pretrained_config(synthetic_jsonl, tiny_bert)}
  configs_['lstm'].model.name = 'lstm'
  configs_['lstm'].data.update(vocab_size=30, max_length=12)
  configs_['cnn_lstm'].model.name = 'cnn_lstm'
  configs_['cnn_lstm'].calibration.per_genre = True
  out = {}
  for name, config in configs_.items():
    out[name] = root / name
    trainer.train_and_evaluate(config, str(out[name]))
  out['ensemble'] = root / 'ensemble'
  ensembling.build(out['ensemble'], [str(out['cnn']), str(out['lstm'])], per_genre=True,
                   weights='tuned')
  return out


@pytest.fixture(scope='module')
def exports(workdirs, tmp_path_factory):
  root = tmp_path_factory.mktemp('exports')
  return {name: (exporting.write(inference.load_run(w), root / name, platforms=('cpu',)),
                 root / name) for name, w in workdirs.items()}


@pytest.mark.parametrize('name', ['cnn', 'lstm', 'cnn_lstm', 'pretrained', 'ensemble'])
def test_probabilities_and_records_are_the_runs(name, workdirs, exports):
  run = inference.load_run(workdirs[name])
  model = serving.load(exports[name][1], max_batch=16)
  assert model.labels == list(run.labels.classes)
  np.testing.assert_allclose(model.probabilities(TEXTS), run.probs(TEXTS), rtol=0, atol=1e-5)
  many = [t + f' {i}' for i in range(5) for t in TEXTS]  # 35 texts: several batches.
  np.testing.assert_allclose(model.probabilities(many), run.probs(many), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(model.threshold, run.threshold)
  assert model.calibration.to_dict() == run.calibration.to_dict()
  want = records.prediction_records(TEXTS, run.probs(TEXTS), list(run.labels.classes),
                                    run.thresholds, run.calibration.method)
  got = model.predict(TEXTS)
  assert [r['text'] for r in got] == TEXTS and [set(r) for r in got] == [set(r) for r in want]
  for g, w in zip(got, want):
    assert list(g['genres']) == list(w['genres']) or g['genres'].keys() == w['genres'].keys()
    for key in ('genres', 'top'):
      np.testing.assert_allclose(list(g[key].values()), list(w[key].values()), atol=1.5e-4)


def test_ensemble_and_per_genre_settings_are_kept(exports, workdirs):
  manifest, _ = exports['ensemble']
  ens = inference.load_run(workdirs['ensemble'])
  assert manifest['kind'] == 'ensemble' and len(manifest['members']) == 2
  np.testing.assert_allclose(manifest['weights'], ens.weights)
  assert manifest['thresholds']['per_genre'] is not None
  assert [m['max_length'] for m in manifest['members']] == [16, 12]
  assert exports['cnn_lstm'][0]['calibration']['per_genre']


def test_manifest_lists_versions_sources_and_checksums(exports, workdirs):
  manifest, path = exports['cnn']
  assert manifest == json.loads((path / serving.MANIFEST).read_text())
  assert (manifest['format'], manifest['format_version']) == (serving.FORMAT,
                                                              serving.FORMAT_VERSION)
  import jax
  assert manifest['jax_version'] == jax.__version__ and manifest['genre_jax_version']
  assert manifest['source_workdir'] == str(workdirs['cnn'].resolve())
  assert manifest['labels'] == list(inference.load_run(workdirs['cnn']).labels.classes)
  assert set(manifest['files']) == {f'member-0/{f}' for f in (serving.SCORER, serving.PARAMS,
                                                              serving.TOKENIZER)}
  for name, digest in manifest['files'].items():
    assert serving.sha256(path / name) == digest
  assert manifest['members'][0]['widths'] == [16]  # Tiny: max_length 16.
  assert exporting.widths(128) == [16, 32, 64, 128] and exporting.widths(100) == [16, 32, 64, 100]


def _encoder(tokenizer, max_length):
  json_text, empty_id = exporting.tokenizer_json(tokenizer, max_length)
  return serving.Encoder(json_text, max_length, tokenizer.pad_id, empty_id)


@pytest.mark.parametrize('lowercase', [True, False])
def test_word_tokenizer_ids_are_identical_on_tricky_texts(lowercase):
  tokenizer = text_lib.WordTokenizer.fit(TRICKY[:20] + ['the ghost'], vocab_size=60,
                                         lowercase=lowercase)
  for max_length in (4, 16, 64):
    got = _encoder(tokenizer, max_length).encode(TRICKY)
    want = tokenizer.encode(TRICKY, max_length)
    for g, w in zip(got, want):
      np.testing.assert_array_equal(g, w)


def test_wordpiece_tokenizer_ids_are_identical_on_tricky_texts(workdirs):
  tokenizers = [inference.load_run(workdirs['pretrained']).tokenizer]
  try:
    from genre_jax import pretrained
    tokenizers.append(pretrained.HFTokenizer.from_dir(pretrained.checkpoint_dir()))
  except GenreJaxError:
    pass  # MiniLM's weights are not installed: the tiny WordPiece vocabulary only.
  for tokenizer in tokenizers:
    for max_length in (5, 24, 128):
      got = _encoder(tokenizer, max_length).encode(TRICKY)
      want = tokenizer.encode(TRICKY, max_length)
      for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_serving_needs_neither_flax_nor_model_code(exports, workdirs):
  """A fresh process where flax cannot be imported scores the exports, as the runs do."""
  script = (
      "import json, sys\n"
      "sys.modules['flax'] = None\n"  # Any import of flax now raises ImportError.
      "from genre_jax import serving\n"
      "out = {p: serving.load(p).probabilities(json.loads(sys.argv[1])).tolist()"
      " for p in sys.argv[2:]}\n"
      "banned = [m for m, v in sys.modules.items() if v is not None and ("
      "m.split('.')[0] in ('flax', 'optax', 'orbax') or m in ('genre_jax.models',"
      " 'genre_jax.inference', 'genre_jax.pretrained', 'genre_jax.layers',"
      " 'genre_jax.exporting'))]\n"
      "print(json.dumps({'probs': out, 'banned': banned}))\n")
  names = ['ensemble', 'pretrained']
  proc = subprocess.run([sys.executable, '-c', script, json.dumps(TEXTS),
                         *(str(exports[n][1]) for n in names)], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['banned'] == []
  for n in names:
    np.testing.assert_allclose(result['probs'][str(exports[n][1])],
                               inference.load_run(workdirs[n]).probs(TEXTS), atol=1e-5)


def test_export_command_matches_predict_json(workdirs, tmp_path):
  out = tmp_path / 'cnn'
  proc = run_module('genre_jax.export', '--workdir', workdirs['cnn'], '--out', out)
  assert 'exported run' in proc.stdout
  manifest = serving.read_manifest(out)
  assert manifest['members'][0]['platforms'] == ['cpu', 'cuda', 'tpu']
  proc = run_module('genre_jax.predict', '--workdir', workdirs['cnn'], '--json', *TEXTS[:4])
  lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
  got = serving.load(out).predict(TEXTS[:4])
  assert [set(r) for r in got] == [set(r) for r in lines]
  for g, w in zip(got, lines):
    assert g['text'] == w['text'] and g['calibration'] == w['calibration']
    assert set(g['genres']) == set(w['genres'])
    np.testing.assert_allclose(list(g['top'].values()), list(w['top'].values()), atol=1.5e-4)


def test_export_refuses_bad_paths_and_platforms(workdirs, tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'notes.txt').write_text('keep me')
  run = inference.load_run(workdirs['cnn'])
  for out, words in ((a_file, 'is a file'), (other, 'holds no export')):
    with pytest.raises(GenreJaxError, match=words):
      exporting.write(run, out, platforms=('cpu',))
  with pytest.raises(GenreJaxError, match='quantum'):
    exporting.write(run, tmp_path / 'y', platforms=('cpu', 'quantum'))
  assert a_file.read_text() == 'x' and [p.name for p in other.iterdir()] == ['notes.txt']
  assert not (tmp_path / 'y').exists()
  cases = [(['--workdir', workdirs['cnn'], '--out', other], 'holds no export'),
           (['--workdir', tmp_path / 'missing', '--out', tmp_path / 'x'], 'missing'),
           (['--workdir', workdirs['cnn']], 'out')]
  for args, words in cases:  # The command: one line, status 2.
    proc = run_module('genre_jax.export', *args, check=False)
    assert proc.returncode == 2, (args, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:') and words in lines[0], proc.stderr
  assert not (tmp_path / 'x').exists()


def test_export_replaces_an_export_and_writes_nothing_on_failure(workdirs, tmp_path,
                                                                 monkeypatch):
  run = inference.load_run(workdirs['cnn'])
  out = tmp_path / 'out'
  exporting.write(run, out, platforms=('cpu',))
  first = serving.read_manifest(out)
  exporting.write(inference.load_run(workdirs['lstm']), out, platforms=('cpu',))
  assert serving.read_manifest(out)['source_workdir'] != first['source_workdir']

  def broken(run, directory):
    raise GenreJaxError('probe failed')

  monkeypatch.setattr(exporting, 'verify', broken)
  with pytest.raises(GenreJaxError, match='probe failed'):
    exporting.write(run, out, platforms=('cpu',))
  with pytest.raises(GenreJaxError):
    exporting.write(run, tmp_path / 'fresh', platforms=('cpu',))
  assert serving.read_manifest(out)['members'][0]['model'] == 'lstm'  # The earlier one stays.
  assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith('.lock')) == ['out']


def test_load_refuses_altered_missing_or_newer_artifacts(exports, tmp_path):
  source = exports['cnn'][1]

  def copy(name):
    shutil.copytree(source, tmp_path / name)
    return tmp_path / name

  corrupted = copy('corrupted')
  data = bytearray((corrupted / 'member-0' / serving.PARAMS).read_bytes())
  data[len(data) // 2] ^= 1
  (corrupted / 'member-0' / serving.PARAMS).write_bytes(bytes(data))
  missing = copy('missing')
  (missing / 'member-0' / serving.TOKENIZER).unlink()
  newer = copy('newer')
  manifest = json.loads((newer / serving.MANIFEST).read_text())
  (newer / serving.MANIFEST).write_text(json.dumps({**manifest, 'format_version': 99}))
  broken = copy('broken')
  (broken / serving.MANIFEST).write_text('{"format": ')
  cases = [(corrupted, 'corrupted'), (missing, 'is missing'), (newer, 'version 99'),
           (broken, 'not a valid export manifest'), (tmp_path / 'absent', 'does not exist'),
           (tmp_path, 'not an export directory')]
  for path, words in cases:
    with pytest.raises(GenreJaxError, match=words) as e:
      serving.load(path)
    assert '\n' not in str(e.value)
