"""python -m genre_jax.explain on a tiny trained run: JSON, HTML, terminal output and mistakes."""

import json

import pytest

from genre_jax import trainer
from tests.conftest import run_module, tiny_config

TEXTS = ['a haunted house full of ghost screams and blood', 'Love, a wedding kiss & laughs.']


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, synthetic_jsonl):
  path = tmp_path_factory.mktemp('explain') / 'run'
  trainer.train_and_evaluate(tiny_config(synthetic_jsonl), str(path))
  return path


def test_json_and_html(workdir, tmp_path):
  page = tmp_path / 'why.html'
  proc = run_module('genre_jax.explain', '--workdir', workdir, '--json', '--html', page, *TEXTS)
  records = [json.loads(line) for line in proc.stdout.strip().splitlines()]
  predicted = run_module('genre_jax.predict', '--workdir', workdir, '--json', *TEXTS)
  predicted = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
  assert [r['text'] for r in records] == TEXTS
  for r, p in zip(records, predicted):
    assert r['words'] == r['text'].split() and r['calibration'] == 'temperature'
    # The predicted genres (at least the most probable), with predict's probabilities.
    want = p['genres'] or dict(list(p['top'].items())[:1])
    assert list(r['genres']) == list(want)
    for name, g in r['genres'].items():
      assert set(g) == {'probability', 'logit', 'baseline_logit', 'attributions',
                        'completeness_error'}
      assert g['probability'] == pytest.approx(want[name], abs=1e-4)
      assert len(g['attributions']) == len(r['words'])
      delta = g['logit'] - g['baseline_logit']
      assert abs(sum(g['attributions']) - delta) == pytest.approx(
          g['completeness_error'] * abs(delta), abs=1e-6)
  html = page.read_text()
  assert html.startswith('<!DOCTYPE html>') and html.rstrip().endswith('</html>')
  for absent in ('<script', 'http://', 'https://', 'src=', '<link', '@import'):
    assert absent not in html  # Self-contained: nothing fetched, nothing run.
  assert html.count('class="genre"') == sum(len(r['genres']) for r in records)
  assert 'Love, a wedding kiss &amp; laughs.' in html and 'haunted' in html
  assert [p.name for p in tmp_path.iterdir()] == ['why.html']  # No temporary file left.


def test_terminal_output_with_chosen_genres(workdir):
  proc = run_module('genre_jax.explain', '--workdir', workdir, '--genre', 'horror',
                    '--genre=Romance,Comedy', '--top_words', '2', TEXTS[0])
  lines = proc.stdout.strip().splitlines()
  assert lines[0] == TEXTS[0]
  assert [line.split()[0] for line in lines[1:]] == ['Horror', 'Romance', 'Comedy']
  horror = lines[1]
  assert 'for:' in horror and 'against:' in horror
  assert len(horror.split('for:')[1].split('against:')[0].split(',')) <= 2


@pytest.mark.parametrize('args, message', [
    (['--genre', 'Horror,Westrn', 'a ghost'], "--genre: unknown genre 'Westrn'"),
    (['--input', 'EMPTY'], 'no synopsis given'),
    (['--html', 'MISSING/why.html', 'a ghost'], '--html'),
    (['--workdir', 'NOWHERE', 'a ghost'], 'NOWHERE'),
])
def test_mistakes_are_one_line_and_status_2(workdir, tmp_path, args, message):
  (tmp_path / 'empty.txt').write_text('\n \n')
  paths = {'EMPTY': 'empty.txt', 'MISSING': 'no', 'NOWHERE': 'nowhere'}

  def fill(s):
    for name, path in paths.items():
      s = s.replace(name, str(tmp_path / path))
    return s

  proc = run_module('genre_jax.explain', '--workdir', workdir, *map(fill, args), check=False)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.startswith('error: ') and len(proc.stderr.strip().splitlines()) == 1
  assert fill(message) in proc.stderr
  assert proc.stdout == '' and sorted(p.name for p in tmp_path.iterdir()) == ['empty.txt']
