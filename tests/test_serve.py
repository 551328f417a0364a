"""The HTTP API, its batching and its page (`python -m genre_jax.serve`): every bad input through
Starlette's TestClient, a load test and the page in headless Chromium against real servers on
127.0.0.1 (CPU, seconds)."""

import asyncio
import json
import os
import pathlib
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from genre_jax import exporting
from genre_jax import inference
from genre_jax import server
from genre_jax import serving
from genre_jax import trainer
from tests.conftest import REPO, run_module, synthetic_records, tiny_config

LIMITS = server.Limits(max_body_bytes=4096, max_texts=4, max_chars=200, max_explain_texts=2)
SYNOPSES = [r['text'] for r in synthetic_records(200, seed=7)]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, synthetic_jsonl):
  path = tmp_path_factory.mktemp('serve') / 'cnn'
  trainer.train_and_evaluate(tiny_config(synthetic_jsonl), str(path))
  return path


@pytest.fixture(scope='module')
def export_dir(workdir):
  out = workdir.parent / 'export'
  exporting.write(inference.load_run(workdir), out, platforms=('cpu',))
  return out


@pytest.fixture(scope='module')
def model(export_dir):
  return serving.load(export_dir, max_batch=8)


@pytest.fixture(scope='module')
def client(model):
  with TestClient(server.create_app(model, limits=LIMITS),
                  raise_server_exceptions=False) as c:
    yield c


# ---- The API in process --------------------------------------------------------------------------

def test_predict_returns_records_probabilities_and_threshold(client, model):
  texts = SYNOPSES[:3]
  r = client.post('/v1/predict', json={'texts': texts, 'top_k': 2})
  assert r.status_code == 200 and r.headers['content-type'] == 'application/json'
  body = r.json()
  assert body['labels'] == model.labels
  want = model.predict(texts, top_k=2)
  probs = model.probabilities(texts)
  for got, record, p in zip(body['predictions'], want, probs):
    assert {k: got[k] for k in record} == record
    np.testing.assert_allclose([got['probabilities'][g] for g in model.labels], p, atol=1e-4)
    assert got['threshold'] == pytest.approx(model.threshold)
  r = client.post('/v1/predict', content=json.dumps({'texts': ['a'] * 4}).encode(),
                  headers={'Content-Type': 'application/json; charset=utf-8'})
  assert r.status_code == 200 and len(r.json()['predictions']) == 4


def test_healthz_and_page(client, model):
  health = client.get('/healthz').json()
  assert health['status'] == 'ok' and health['labels'] == model.labels
  assert health['explain'] is False and health['limits']['max_texts'] == 4
  page = client.get('/')
  assert page.status_code == 200 and 'text/html' in page.headers['content-type']
  for name in ('app.js', 'style.css'):
    assert client.get(f'/static/{name}').status_code == 200
  static = pathlib.Path(server.STATIC)
  for f in static.iterdir():  # Nothing fetched from the network: no absolute URLs.
    text = f.read_text()
    assert 'http://' not in text and 'https://' not in text and 'src="//' not in text, f


def _nested(depth):
  return '[' * depth + ']' * depth


# (method, path, headers, body, expected status, words in the error)
JSON = {'Content-Type': 'application/json'}
BAD = [
    ('POST', '/v1/predict', {}, b'{"texts": ["a"]}', 415, 'Content-Type'),
    ('POST', '/v1/predict', {'Content-Type': 'text/plain'}, b'{"texts": ["a"]}', 415, 'text/plain'),
    ('POST', '/v1/predict', {'Content-Type': 'application/x-www-form-urlencoded'}, b'texts=a', 415,
     'application/json'),
    ('POST', '/v1/predict', JSON, b'not json', 400, 'not valid JSON'),
    ('POST', '/v1/predict', JSON, b'', 400, 'not valid JSON'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["a"]', 400, 'not valid JSON'),
    ('POST', '/v1/predict', JSON, b'\xff\xfe\x00', 400, 'UTF-8'),
    ('POST', '/v1/predict', JSON, _nested(2000).encode(), 400, 'JSON'),
    ('POST', '/v1/predict', JSON, b'[1, 2]', 400, 'JSON object'),
    ('POST', '/v1/predict', JSON, b'"a synopsis"', 400, 'JSON object'),
    ('POST', '/v1/predict', JSON, b'null', 400, 'JSON object'),
    ('POST', '/v1/predict', JSON, b'NaN', 400, 'JSON object'),
    ('POST', '/v1/predict', JSON, b'{}', 400, 'missing field "texts"'),
    ('POST', '/v1/predict', JSON, b'{"text": ["a"]}', 400, "unknown field(s) 'text'"),
    ('POST', '/v1/predict', JSON, b'{"texts": ["a"], "extra": 1}', 400, "'extra'"),
    ('POST', '/v1/predict', JSON, b'{"texts": "a synopsis"}', 400, 'list of strings'),
    ('POST', '/v1/predict', JSON, b'{"texts": null}', 400, 'list of strings, not null'),
    ('POST', '/v1/predict', JSON, b'{"texts": {"a": 1}}', 400, 'not an object'),
    ('POST', '/v1/predict', JSON, b'{"texts": []}', 400, 'empty'),
    ('POST', '/v1/predict', JSON, b'{"texts": [1]}', 400, 'texts[0] must be a string'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["ok", ["a"]]}', 400, 'texts[1] must be a string'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["ok", null]}', 400, 'texts[1]'),
    ('POST', '/v1/predict', JSON, b'{"texts": [""]}', 400, 'texts[0] is empty'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["ok", " \\n\\t "]}', 400, 'texts[1] is empty'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["\\ud800 lone"]}', 400, 'surrogate'),
    ('POST', '/v1/predict', JSON, json.dumps({'texts': ['a'] * 5}).encode(), 413, 'limit is 4'),
    ('POST', '/v1/predict', JSON, json.dumps({'texts': ['x' * 201]}).encode(), 413,
     '201 characters'),
    ('POST', '/v1/predict', JSON, json.dumps({'texts': ['x' * 5000]}).encode(), 413,
     'limit is 4096'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["a"], "top_k": 0}', 400, '"top_k"'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["a"], "top_k": "3"}', 400, '"top_k"'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["a"], "top_k": true}', 400, '"top_k"'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["a"], "top_k": 2.5}', 400, '"top_k"'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["a"], "top_k": 1e400}', 400, '"top_k"'),
    ('POST', '/v1/predict', JSON, b'{"texts": ["a"], "top_k": 99}', 400, 'from 1 to 6'),
    ('GET', '/v1/predict', {}, None, 405, 'use POST'),
    ('PUT', '/v1/predict', JSON, b'{"texts": ["a"]}', 405, 'PUT is not allowed'),
    ('DELETE', '/healthz', {}, None, 405, 'DELETE'),
    ('POST', '/', JSON, b'{}', 405, 'POST'),
    ('GET', '/v2/predict', {}, None, 404, 'no such route'),
    ('POST', '/predict', JSON, b'{"texts": ["a"]}', 404, '/predict'),
    ('GET', '/static/missing.js', {}, None, 404, 'no such route'),
    ('GET', '/static/../serve.py', {}, None, 404, ''),
    ('POST', '/v1/explain', JSON, b'{"texts": ["a"]}', 501, '--workdir'),
]


@pytest.mark.parametrize('method,path,headers,body,status,words', BAD,
                         ids=[f'{i}-{b[0]}-{b[1]}-{b[4]}' for i, b in enumerate(BAD)])
def test_bad_requests_get_a_json_error_naming_the_problem(client, method, path, headers, body,
                                                          status, words):
  r = client.request(method, path, content=body, headers=headers)
  assert r.status_code == status, r.text
  assert r.headers['content-type'] == 'application/json'
  assert words in r.json()['error']


def test_a_chunked_body_over_the_limit_is_refused(client):
  chunks = iter([b'{"texts": ["', b'x' * 3000, b'x' * 3000, b'"]}'])
  r = client.post('/v1/predict', content=chunks, headers=JSON)
  assert r.status_code == 413 and 'limit' in r.json()['error']


def test_random_garbage_never_gets_a_server_error(client):
  rng = np.random.default_rng(0)
  pieces = [b'{', b'}', b'[', b']', b'"texts"', b':', b',', b'"a"', b'1', b'null', b'true',
            b'"\\u0000"', b'"\\ud83c"', b' ', b'\xc3', b'"', b'-1e999', b'{"texts": [']
  for _ in range(300):
    body = b''.join(rng.choice(pieces, size=int(rng.integers(1, 12))))
    r = client.post('/v1/predict', content=body, headers=JSON)
    assert r.status_code in (200, 400, 413), (body, r.text)
    assert ('error' in r.json()) == (r.status_code != 200)


@pytest.fixture(scope='module')
def explaining_client(workdir):
  run = inference.load_run(workdir)
  app = server.create_app(exporting.in_memory(run, max_batch=8), run=run, limits=LIMITS)
  with TestClient(app, raise_server_exceptions=False) as c:
    yield c, run


def test_explain_gives_the_attributions_of_explain(explaining_client):
  from genre_jax import attribution
  client, run = explaining_client
  assert client.get('/healthz').json()['explain'] is True
  texts = ['a haunted house full of ghost screams', 'love and a wedding kiss']
  r = client.post('/v1/explain', json={'texts': texts, 'genres': ['horror', 'Romance'],
                                       'steps': 8})
  assert r.status_code == 200, r.text
  got = r.json()['explanations']
  want = attribution.explain(run, texts, genres=['horror', 'Romance'], steps=8)
  assert [list(e['genres']) for e in got] == [['Horror', 'Romance']] * 2
  for g, w in zip(got, want):
    assert g['words'] == w['words'] == g['text'].split()
    for name in g['genres']:
      np.testing.assert_allclose(g['genres'][name]['attributions'],
                                 w['genres'][name]['attributions'], atol=1e-6)
  r = client.post('/v1/explain', json={'texts': texts[:1]})  # The predicted genres.
  assert r.status_code == 200 and r.json()['explanations'][0]['genres']
  r = client.post('/v1/predict', json={'texts': texts})  # Scoring is the export's.
  np.testing.assert_allclose(
      [[p['probabilities'][g] for g in run.labels.classes] for p in r.json()['predictions']],
      run.probs(texts), atol=1e-4)


BAD_EXPLAIN = [
    (b'{"texts": ["a"], "genres": ["Opera"]}', 400, "unknown genre(s) 'Opera'"),
    (b'{"texts": ["a"], "genres": "Horror"}', 400, 'list of genre names'),
    (b'{"texts": ["a"], "genres": [1]}', 400, 'list of genre names'),
    (b'{"texts": ["a"], "steps": 0}', 400, '"steps"'),
    (b'{"texts": ["a"], "steps": 10000}', 400, '"steps"'),
    (b'{"texts": ["a"], "steps": "8"}', 400, '"steps"'),
    (b'{"texts": ["a", "b", "c"]}', 413, 'limit is 2'),
    (b'{"texts": [""]}', 400, 'texts[0] is empty'),
    (b'{"texts": ["a"], "top_k": 3}', 400, "unknown field(s) 'top_k'"),
    (b'{"genres": ["Horror"]}', 400, 'missing field "texts"'),
    (b'[]', 400, 'JSON object'),
]


@pytest.mark.parametrize('body,status,words', BAD_EXPLAIN)
def test_bad_explain_requests_get_a_json_error(explaining_client, body, status, words):
  client, _ = explaining_client
  r = client.post('/v1/explain', content=body, headers=JSON)
  assert r.status_code == status, r.text
  assert words in r.json()['error']


# ---- Batching ---------------------------------------------------------------------------------

def _fake_scorer(calls, delay=0.02, fail_on=None):
  def score(texts):
    calls.append(len(texts))
    time.sleep(delay)
    if fail_on is not None and fail_on in texts:
      raise RuntimeError('scorer broke')
    return np.array([[float(t.split()[-1])] for t in texts], np.float32)
  return score


def test_batcher_groups_concurrent_requests_and_returns_each_its_rows():
  calls = []

  async def main():
    batcher = server.Batcher(_fake_scorer(calls), max_batch=8, max_wait_s=0.005,
                             max_queued=1000)
    await batcher.start()
    sizes = [1, 2, 3, 1, 12, 2, 1] * 6  # One request (12) larger than a batch.
    starts = np.cumsum([0] + sizes)
    requests = [[f't {j}' for j in range(s, s + n)] for s, n in zip(starts, sizes)]
    results = await asyncio.gather(*(batcher.score(r) for r in requests))
    await batcher.stop()
    return requests, results

  requests, results = asyncio.run(main())
  for texts, probs in zip(requests, results):
    np.testing.assert_array_equal(probs[:, 0], [float(t.split()[1]) for t in texts])
  assert len(calls) < len(requests) / 2  # Grouped.
  assert sorted(calls)[-1] == 12 and all(c <= 8 for c in sorted(calls)[:-6])


def test_batcher_failure_reaches_its_requests_and_the_next_batches_go_on():
  calls = []

  async def main():
    batcher = server.Batcher(_fake_scorer(calls, fail_on='t 13'), max_batch=4, max_wait_s=0.0,
                             max_queued=100)
    await batcher.start()
    first = await asyncio.gather(batcher.score(['t 13']), return_exceptions=True)
    second = await batcher.score(['t 5'])
    flood = await asyncio.gather(*(batcher.score(['t 1'] * 4) for _ in range(30)),
                                 return_exceptions=True)
    await batcher.stop()
    return first, second, {e.status for e in flood if isinstance(e, server.ApiError)}

  first, second, busy = asyncio.run(main())
  assert isinstance(first[0], RuntimeError) and second[0, 0] == 5.0
  assert busy == {503}  # A full queue answers 503 instead of growing.


def test_a_scorer_fault_is_a_500_with_a_json_error(model):
  class Broken:
    def __getattr__(self, name):
      return getattr(model, name)

    def probabilities(self, texts):
      raise RuntimeError('disk on fire')

  with TestClient(server.create_app(Broken(), limits=LIMITS),
                  raise_server_exceptions=False) as c:
    r = c.post('/v1/predict', json={'texts': ['a']})
  assert r.status_code == 500 and 'internal server error' in r.json()['error']


# ---- The command, against real servers -------------------------------------------------------

class LiveServer:
  """`python -m genre_jax.serve ARGS --port 0` in a subprocess; `url` once it prints ready."""

  def __init__(self, *args, timeout=240):
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'genre_jax.serve', *map(str, args), '--host', '127.0.0.1',
         '--port', '0'], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in self.proc.stdout], daemon=True).start()
    self.output, deadline = [], time.monotonic() + timeout
    while True:
      try:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
      except queue.Empty:
        self.stop()
        raise AssertionError(f'no ready line in {timeout} s: {self.output}') from None
      self.output.append(line)
      if line.startswith('ready: '):
        self.url = line.split()[1]
        return
      if self.proc.poll() is not None and lines.empty():
        raise AssertionError(f'the server ended: {self.output}')

  def stop(self):
    self.proc.terminate()
    try:
      self.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      self.proc.kill()


@pytest.fixture(scope='module')
def live(export_dir):
  srv = LiveServer('--export', export_dir, '--max_batch', 64)
  yield srv
  srv.stop()


def test_load_64_concurrent_clients_get_their_own_answers_without_errors(live, model):
  """A bounded load test: 64 clients, 2,048 one-synopsis requests, a 120 s limit, on 127.0.0.1."""
  import httpx
  want = model.probabilities(SYNOPSES)
  clients, per_client = 64, 32
  errors, done = [], []

  async def one_client(http, k):
    for i in range(per_client):
      j = (k * per_client + i) % len(SYNOPSES)
      try:
        r = await http.post('/v1/predict', json={'texts': [SYNOPSES[j]]})
        record = r.json()['predictions'][0]
        assert r.status_code == 200 and record['text'] == SYNOPSES[j]
        got = [record['probabilities'][g] for g in model.labels]
        np.testing.assert_allclose(got, want[j], atol=1e-4)
        done.append(1)
      except Exception as e:  # Counted, not raised: the test reports them all.
        errors.append(repr(e)[:200])

  async def main():
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=live.url, limits=limits, timeout=30) as http:
      start = time.perf_counter()
      await asyncio.wait_for(asyncio.gather(*(one_client(http, k) for k in range(clients))),
                             timeout=120)
      return time.perf_counter() - start

  seconds = asyncio.run(main())
  assert errors == [] and len(done) == clients * per_client
  print(f'{len(done)} requests in {seconds:.1f} s ({len(done) / seconds:.0f}/s)')


@pytest.fixture(scope='module')
def live_workdir(workdir):
  srv = LiveServer('--workdir', workdir, '--max_batch', 8)
  yield srv
  srv.stop()


def _chromium():
  """A headless Chromium driven by the system chromedriver, or a skip saying what is missing."""
  chromium = shutil.which('chromium') or shutil.which('chromium-browser')
  driver = shutil.which('chromedriver')
  if not chromium or not driver:
    pytest.skip('Chromium and chromedriver are not installed (apt-get install chromium '
                'chromium-driver; .ci/run installs them when it runs as root).')
  pytest.importorskip('selenium', reason='selenium is not installed (pip install -e ".[test]")')
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
              '--no-first-run', '--disable-extensions', '--window-size=1000,900'):
    options.add_argument(arg)
  browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
  browser.set_page_load_timeout(60)
  return browser


@pytest.mark.parametrize('which', ['live', 'live_workdir'])
def test_page_shows_bars_and_highlighted_words_in_chromium(which, request, model):
  """Types a synopsis into the page and waits for one bar per genre (of the calibrated
  probability's width) and, from a --workdir server, the words shaded by their attributions."""
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  srv = request.getfixturevalue(which)
  browser = _chromium()
  try:
    browser.get(srv.url + '/')
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: 'genres' in b.find_element(By.ID, 'model').text)
    text = 'A haunted house full of ghost screams, blood and a wedding kiss.'
    browser.find_element(By.ID, 'synopsis').send_keys(text)
    browser.find_element(By.ID, 'predict').click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, '#bars .row')) == len(model.labels))
    rows = browser.find_elements(By.CSS_SELECTOR, '#bars .row')
    probs = dict(zip(model.labels, model.probabilities([text])[0]))
    assert {r.get_attribute('data-genre') for r in rows} == set(model.labels)
    for row in rows:
      fraction = (row.find_element(By.CSS_SELECTOR, '.bar').size['width']
                  / row.find_element(By.CSS_SELECTOR, '.track').size['width'])
      assert fraction == pytest.approx(probs[row.get_attribute('data-genre')], abs=0.01)
    if which == 'live_workdir':
      wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, '#words .word'))
                 == len(text.split()))
      words = browser.find_elements(By.CSS_SELECTOR, '#words .word')
      assert [w.text for w in words] == text.split()
      assert browser.find_elements(By.CSS_SELECTOR, '#genre-tabs button')
      assert any('rgba' in w.get_attribute('style') for w in words)
    else:
      assert not browser.find_element(By.ID, 'explanation').is_displayed()
    wait.until(lambda b: b.find_element(By.ID, 'status').text == '')
    assert not browser.find_element(By.ID, 'error').is_displayed()
  finally:
    browser.quit()


def test_serve_mistakes_are_one_line_and_status_2(export_dir, workdir, tmp_path):
  taken = socket.create_server(('127.0.0.1', 0))
  corrupted = tmp_path / 'corrupted'
  shutil.copytree(export_dir, corrupted)
  (corrupted / 'member-0' / serving.TOKENIZER).write_text('{}')
  try:
    cases = [(['--export', export_dir, '--workdir', workdir], 'exactly one'),
             ([], 'exactly one'),
             (['--export', export_dir, '--port', taken.getsockname()[1]], 'in use'),
             (['--export', corrupted, '--port', 0], 'corrupted'),
             (['--export', export_dir, '--port', 70000], 'port')]
    for args, words in cases:
      proc = run_module('genre_jax.serve', *args, check=False)
      lines = proc.stderr.strip().splitlines()
      assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr)
      assert lines[0].startswith('error:') and words in lines[0], (args, proc.stderr)
  finally:
    taken.close()


def test_benchmark_section_renders_figures_and_verdicts():
  from benchmarks import report, serve as serve_bench

  def row(name, p50, rate, ready, errors=0, cpu=None):
    lat = {'p50_ms': p50, 'p90_ms': p50 * 2, 'p99_ms': p50 * 3, 'errors': errors,
           'load_average': 0.1}
    thr = {'synopses_per_second': rate, 'p50_ms': 20.0, 'p99_ms': 90.0, 'errors': 0,
           'load_average': 0.2}
    return {'name': name, 'model': name, 'latency': lat, 'throughput': thr,
            'start': {'warm_cache': {'median_healthz_seconds': ready, 'cpu_seconds': cpu},
                      'empty_cache': {'healthz_seconds': 30.0}}}

  results = {'command': 'python -m benchmarks.serve', 'date': '2026-01-01', 'clients': 64,
             'duration_seconds': 15, 'targets': serve_bench.TARGETS,
             'machine': {'cpu_model': 'CPU', 'usable_cpus': 2, 'memory_bytes': 2**34},
             'models': [row('cnn', 1.5, 2500.0, 3.2, cpu=[2.2, 2.0, 2.1]),
                        row('minilm', 75.0, 40.0, 6.1, errors=2)]}
  text = report.serve_section(results)
  assert '| cnn (cnn) | 1.5 / 3.0 / 4.5 | 2,500 | 20.0 / 90.0 | 0 | 3.2 (2.1) | 30.0 |' in text
  assert '| 6.1 | 30.0 |' in text  # No CPU time recorded.
  assert 'CNN p50 ≤ 10 ms for one synopsis: met (1.5 ms)' in text
  assert 'CNN ≥ 2,000 synopses/s under 64 clients: met (2,500)' in text
  assert 'MiniLM p50 ≤ 60 ms: **not met** (75.0 ms)' in text
  assert 'Zero errors: **not met** (2)' in text
  assert 'cnn met (3.2 s); minilm **not met** (6.1 s)' in text
