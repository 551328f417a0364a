"""The HTTP server's latency, throughput and start time (`python -m genre_jax.serve --export`).

  python -m benchmarks.serve [--cnn DIR] [--minilm DIR]   # the tuned CNN and the fine-tuned MiniLM
  python -m benchmarks.serve --models cnn --duration 5 --out /tmp/serve.json   # smoke run

For each model: its workdir is copied (a copy without calibration.json gets it from the training
command rerun on the finished copy, which fits the calibration without training), exported with
`python -m genre_jax.export --platforms=cpu`, then served from the export on 127.0.0.1 (with the
flags in MODELS: MiniLM's batches stop at 8):

- start: seconds from launching `python -m genre_jax.serve` to its `ready` line and to the first
  answer of GET /healthz, once with an empty compilation cache (the start that fills it) and
  `--starts` times with the warm cache (median reported), and the CPU seconds the server had
  used by then (less sensitive than the wall time to other jobs on the machine);
- latency: one client sending one synopsis per request, one after the other, for --duration
  seconds (p50 / p90 / p99 of the request round trip);
- throughput: 64 concurrent clients (connections), one synopsis per request, for --duration
  seconds: synopses/s, the latency percentiles under that load, and every error (connection,
  timeout, or a status other than 200).

The requests cycle through the first --texts synopses of the run's test split. The load
generator is wrk (`apt-get install wrk`: C, one thread, so that the clients take little of the
two cores from the server); its latencies are per request, measured by wrk. The 1-minute load
average is recorded before each measurement (the figures are only meaningful on a quiet machine).
Writes --out (JSON) and prints the markdown section (`benchmarks.report.serve_section`).
"""

import argparse
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
# name: (source workdir, config file the workdir was trained with, server flags). MiniLM's batches
# stop at 8 synopses: on two cores larger ones score no more synopses per second (and each batch
# size is one more program to compile or load at start).
MODELS = {
    'cnn': ('runs/experiments/cnn/seed0', 'configs/cnn.py', []),
    'minilm': ('runs/experiments/minilm/seed0', 'configs/minilm.py', ['--max_batch', '8']),
}
TARGETS = {'cnn_p50_ms': 10.0, 'cnn_synopses_per_second': 2000.0, 'minilm_p50_ms': 60.0,
           'ready_seconds_warm_cache': 5.0, 'errors': 0}
CLIENTS = 64
WRK_SCRIPT = '''
local bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/v1/predict", {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "connect_errors": %%d, ' ..
    '"read_errors": %%d, "write_errors": %%d, "status_errors": %%d, "timeouts": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "mean_us": %%.1f, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end
'''


def log(msg: str) -> None:
  print(f'[serve] {msg}', file=sys.stderr, flush=True)


def run(*args, **kwargs) -> subprocess.CompletedProcess:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', **kwargs.pop('env', {})}
  proc = subprocess.run([str(a) for a in args], cwd=REPO, env=env, capture_output=True,
                        text=True, **kwargs)
  if proc.returncode != 0:
    raise RuntimeError(f'{" ".join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}')
  return proc


def load_average() -> float:
  return os.getloadavg()[0]


def prepare(name: str, source: str, config: str, work: pathlib.Path) -> dict:
  """Copies, calibrates if needed and exports one model; returns its paths and the export's
  size."""
  workdir, export = work / name / 'workdir', work / name / 'export'
  if not (workdir / 'calibration.json').exists():
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(source, workdir)
    if not (workdir / 'calibration.json').exists():
      log(f'{name}: fitting the calibration ({config} on the finished copy)')
      run(sys.executable, '-m', 'genre_jax.train', '--config', config, '--workdir', workdir,
          '--config.progress_bar=False')
  log(f'{name}: exporting')
  start = time.perf_counter()
  run(sys.executable, '-m', 'genre_jax.export', '--workdir', workdir, '--out', export,
      '--platforms=cpu')
  manifest = json.loads((export / 'manifest.json').read_text())
  return {'name': name, 'source': source, 'config': config, 'workdir': str(workdir),
          'export': str(export), 'export_seconds': round(time.perf_counter() - start, 2),
          'export_bytes': sum(f.stat().st_size for f in export.rglob('*') if f.is_file()),
          'widths': manifest['members'][0]['widths'], 'model': manifest['members'][0]['model'],
          'labels': len(manifest['labels'])}


def test_synopses(workdir: str, n: int) -> list[str]:
  """The first n synopses of the run's test split."""
  code = ('import json, sys; from genre_jax import inference; '
          'data = inference.load_run(sys.argv[1]).load_data(encode=("test",)); '
          'print(json.dumps(data.arrays["test"].texts[:int(sys.argv[2])]))')
  return json.loads(run(sys.executable, '-c', code, workdir, n).stdout.strip().splitlines()[-1])


class Server:
  """`python -m genre_jax.serve --export DIR --port 0` with its start times."""

  def __init__(self, export: str, flags: list[str], cache: pathlib.Path, timeout: float = 900):
    start = time.perf_counter()
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'genre_jax.serve', '--export', export, '--port', '0', *flags],
        cwd=REPO,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'GENRE_JAX_JAX_CACHE': str(cache)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self.lines = []
    ready = threading.Event()

    def read():
      for line in self.proc.stdout:
        self.lines.append(line.rstrip())
        if line.startswith('ready: '):
          ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout):
      self.stop()
      raise RuntimeError(f'the server did not get ready: {self.lines}')
    self.ready_seconds = time.perf_counter() - start
    self.url = next(l for l in self.lines if l.startswith('ready: ')).split()[1]
    with urllib.request.urlopen(self.url + '/healthz', timeout=60) as r:
      self.health = json.loads(r.read())
    self.healthz_seconds = time.perf_counter() - start
    self.cpu_seconds = cpu_seconds(self.proc.pid)


  def stop(self) -> None:
    self.proc.terminate()
    try:
      self.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      self.proc.kill()


def cpu_seconds(pid: int) -> float | None:
  """The CPU time (user + system) a process has used so far, from /proc (None elsewhere)."""
  try:
    fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
  except OSError:
    return None
  return round((int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK'), 2)


def starts(export: str, flags: list[str], cache: pathlib.Path, repeats: int) -> dict:
  """Start times with an empty compilation cache, then with the cache it filled."""
  shutil.rmtree(cache, ignore_errors=True)
  out = {'load_average': load_average()}
  server = Server(export, flags, cache)
  server.stop()
  out['empty_cache'] = {'ready_seconds': round(server.ready_seconds, 2),
                        'healthz_seconds': round(server.healthz_seconds, 2),
                        'cpu_seconds': server.cpu_seconds, 'log': server.lines[:1]}
  warm = []
  for _ in range(repeats):
    server = Server(export, flags, cache)
    server.stop()
    warm.append((server.ready_seconds, server.healthz_seconds, server.cpu_seconds))
  out['warm_cache'] = {'ready_seconds': [round(r, 2) for r, _, _ in warm],
                       'healthz_seconds': [round(h, 2) for _, h, _ in warm],
                       'median_healthz_seconds': round(statistics.median(w[1] for w in warm), 2),
                       'cpu_seconds': [c for _, _, c in warm], 'log': server.lines[:1]}
  return out


def wrk(url: str, script: pathlib.Path, connections: int, seconds: float) -> dict:
  """One wrk run (one thread): its RESULT line, with synopses/s and the load average before."""
  before = load_average()
  proc = run('wrk', '-t1', f'-c{connections}', f'-d{int(seconds)}s', '--timeout', '30s', '-s',
             script, url, timeout=seconds + 120)
  line = next(l for l in proc.stdout.splitlines() if l.startswith('RESULT '))
  r = json.loads(line.removeprefix('RESULT '))
  r['errors'] = sum(r[k] for k in ('connect_errors', 'read_errors', 'write_errors',
                                   'status_errors', 'timeouts'))
  r['synopses_per_second'] = round(r['requests'] / (r['duration_us'] / 1e6), 1)
  r.update(connections=connections, load_average=before,
           **{k.replace('_us', '_ms'): round(r[k] / 1000, 3) for k in ('p50_us', 'p90_us',
                                                                      'p99_us', 'mean_us')})
  return r


def measure(model: dict, texts: list[str], work: pathlib.Path, args) -> dict:
  bodies = ','.join('[==[' + json.dumps({'texts': [t]}) + ']==]' for t in texts)
  script = work / model['name'] / 'requests.lua'
  script.write_text(WRK_SCRIPT % bodies)
  cache = work / model['name'] / 'xla_cache'
  flags = model['server_flags']
  model['start'] = starts(model['export'], flags, cache, args.starts)
  log(f'{model["name"]}: start {model["start"]}')
  server = Server(model['export'], flags, cache)
  try:
    model['shapes_compiled'] = server.lines[0]
    wrk(server.url, script, 1, 2)  # The first requests of each path, not timed.
    model['latency'] = wrk(server.url, script, 1, args.duration)
    log(f'{model["name"]}: latency p50 {model["latency"]["p50_ms"]} ms')
    model['throughput'] = wrk(server.url, script, CLIENTS, args.duration)
    log(f'{model["name"]}: {model["throughput"]["synopses_per_second"]} synopses/s')
  finally:
    server.stop()
  return model


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='cnn,minilm', help=f'of {",".join(MODELS)}')
  parser.add_argument('--cnn', default=MODELS['cnn'][0],
                      help='the tuned CNN\'s workdir (read; default: experiments.reproduce\'s)')
  parser.add_argument('--minilm', default=MODELS['minilm'][0], help='the MiniLM\'s workdir')
  parser.add_argument('--duration', type=int, default=15, help='seconds per wrk run')
  parser.add_argument('--starts', type=int, default=3, help='starts with a warm cache')
  parser.add_argument('--texts', type=int, default=500, help='test synopses cycled through')
  parser.add_argument('--work_dir', default=os.path.join(tempfile.gettempdir(),
                                                         'genre_jax_serve_bench'))
  parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'serve_results.json'))
  args = parser.parse_args(argv)
  if shutil.which('wrk') is None:
    sys.exit('error: the load generator wrk is not installed (apt-get install wrk).')
  from benchmarks import report
  from benchmarks import run as run_lib
  work = pathlib.Path(args.work_dir)
  results = {'command': ' '.join(['python -m benchmarks.serve'] + (
                 sys.argv[1:] if argv is None else list(argv))),
             'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
             'machine': {**run_lib.machine_info(),
                         'memory_bytes': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'),
                         'wrk': _wrk_version()},
             'clients': CLIENTS, 'duration_seconds': args.duration, 'targets': TARGETS,
             'models': []}
  for name in args.models.split(','):
    source = getattr(args, name)
    model = prepare(name, source, MODELS[name][1], work)
    model['server_flags'] = MODELS[name][2]
    texts = test_synopses(model['workdir'], args.texts)
    results['models'].append(measure(model, texts, work, args))
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + '\n')
  print(report.serve_section(results))


def _wrk_version() -> str:
  proc = subprocess.run(['wrk', '--version'], capture_output=True, text=True)
  return (proc.stdout or proc.stderr).strip().splitlines()[0].split(' Copyright')[0]


if __name__ == '__main__':
  main()
