"""Training and inference benchmarks of genre_jax against a PyTorch reference, eager and compiled.

  python -m benchmarks.run            # full run (about 25 minutes on 2 quiet cores)
  python -m benchmarks.run --quick    # smoke run (about 3 minutes), small shapes and few repeats
  python -m benchmarks.run --configs lstm --append   # re-measure one row, keep the others

On a machine where JAX's default backend is a GPU, the results go to benchmarks/results_gpu.json
and the PyTorch reference runs on CUDA; BENCHMARKS.md always shows the CPU run and, when
benchmarks/results_gpu.json exists, the GPU run below it (`python -m benchmarks.report` rewrites
it from the two files).

Every configuration runs in its own process (`benchmarks/workers.py`), and so does each of the
three trainers: genre_jax, the PyTorch reference eager, and the same reference with
`torch.compile(model)` (default backend, inductor; a C++ compiler is needed on a CPU), all on the
same batches. Each number is a median over timed repeats after warm-up; compile times are
reported apart from the steady-state steps. Writes BENCHMARKS.md and benchmarks/results.json
(every figure in BENCHMARKS.md comes from this run or the --append runs into the same file).
PyTorch (`pip install '.[bench]'`) is optional: without it the PyTorch columns are empty.

The data set is read through `genre_jax.data.download`: from $GENRE_JAX_MIRROR where it is set,
else from the data cache ($GENRE_JAX_CACHE, else ~/.cache/genre_jax), else downloaded into it.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import report

REPO = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable
CONFIGS = ('seed_lstm', 'seed_cnn', 'seed_cnn_lstm', 'lstm', 'cnn', 'cnn_lstm')
# How genre_jax runs a train step (recorded with the results).
TRAIN_STEP = 'train_step.TrainStep: one jax.jit call on the split state of model and optimizer'
SYNOPSIS = ('A retired hitman is pulled back into the criminal underworld when a gang kills the '
            'dog his late wife left him.')

FULL = dict(warmup=3, repeats=5, step_seconds=1.0, epoch_repeats=3, max_train=None,
            configs=CONFIGS, eval_repeats=5, predict_repeats=5)
QUICK = dict(warmup=1, repeats=2, step_seconds=0.2, epoch_repeats=1, max_train=320,
             configs=('cnn',), eval_repeats=2, predict_repeats=2)


def log(msg):
  print(f'[bench {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def machine_info():
  model = platform.processor()
  try:
    for line in open('/proc/cpuinfo'):
      if line.startswith('model name'):
        model = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  versions = {'python': platform.python_version()}
  for pkg in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'torch'):
    try:
      versions[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      versions[pkg] = None
  info = {'cpu_model': model, 'logical_cpus': os.cpu_count(),
          'usable_cpus': len(os.sched_getaffinity(0)), 'platform': platform.platform(),
          'versions': versions}
  try:  # The C++ compiler torch.compile's inductor backend builds its CPU kernels with.
    cxx = subprocess.run([os.environ.get('CXX', 'c++'), '--version'], capture_output=True,
                         text=True, timeout=30)
    if cxx.returncode == 0 and cxx.stdout.strip():
      info['cxx'] = cxx.stdout.strip().splitlines()[0]
  except (OSError, subprocess.TimeoutExpired):
    info['cxx'] = None
  try:
    gpus = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version',
                           '--format=csv,noheader'], capture_output=True, text=True, timeout=30)
    if gpus.returncode == 0 and gpus.stdout.strip():
      info['gpus'] = gpus.stdout.strip().splitlines()
  except (OSError, subprocess.TimeoutExpired):
    pass
  return info


def jax_backend():
  """JAX's default backend here ('cpu', 'gpu', 'tpu'), asked in a fresh process."""
  out = subprocess.run([PY, '-c', 'import jax; print(jax.default_backend())'], cwd=REPO,
                       env=env(), capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f'cannot import jax:\n{out.stderr[-3000:]}')
  return out.stdout.strip().splitlines()[-1]


def have_torch():
  try:
    importlib.metadata.version('torch')
    return True
  except importlib.metadata.PackageNotFoundError:
    return False


def env(**extra):
  """This process's environment for the workers: the data come from where
  `genre_jax.data.download` finds them ($GENRE_JAX_MIRROR, else the cache), nothing else."""
  e = dict(os.environ, **extra)
  e['PYTHONPATH'] = str(REPO) + os.pathsep + e.get('PYTHONPATH', '')
  return e


def worker(kind, spec, timeout=1800, **extra_env):
  """Runs one benchmark worker in a fresh process; returns its JSON result."""
  t = time.time()
  proc = subprocess.run([PY, '-m', 'benchmarks.workers', kind, json.dumps(spec)], cwd=REPO,
                        env=env(**extra_env), capture_output=True, text=True, timeout=timeout)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode or not lines:
    raise RuntimeError(f'worker {kind} {spec.get("config", "")} failed:\n{proc.stderr[-3000:]}')
  log(f'{kind} {spec.get("config", "")}: {time.time() - t:.1f} s')
  return json.loads(lines[-1][len('RESULT '):])


def compiled_worker(spec, cache_dir):
  """The PyTorch reference with `torch.compile(model)` on the same batches; a compiler that fails
  (or a worker that dies) gives {'error': ...} in place of figures."""
  try:
    # An empty inductor cache: its compile time is measured cold, as genre_jax's is.
    return worker('torch_compile_train', spec, TORCHINDUCTOR_CACHE_DIR=str(cache_dir))
  except (RuntimeError, subprocess.TimeoutExpired) as e:
    log(f'torch.compile {spec["config"]}: failed')
    return {'framework': 'pytorch', 'compiled': True, 'config': spec['config'],
            'error': ' '.join(str(e).split())[-2000:]}


def prepare_data(tmp, max_train, name):
  """The training split as configuration `name` tokenises it (its vocabulary size, minimum count
  and maximum length), saved once per distinct data section for the workers of both frameworks."""
  code = f'''
import hashlib, json, pathlib, sys, numpy as np
sys.path.insert(0, {str(REPO)!r})
import configs
from genre_jax.data import pipeline
data = configs.load({name!r}).data
key = hashlib.sha1(data.to_json(sort_keys=True).encode()).hexdigest()[:10]
path = pathlib.Path({str(tmp)!r}) / f'train_{{key}}.npz'
if not path.exists():
  d = pipeline.prepare(data)
  tr = d.arrays['train']
  n = {max_train!r} or len(tr.lengths)
  np.savez(path, tokens=tr.tokens[:n], lengths=tr.lengths[:n], labels=tr.labels[:n],
           vocab_size=d.tokenizer.vocab_size, n_train=len(tr.lengths))
with np.load(path) as f:
  print(path, int(f['n_train']), len(f['lengths']), int(f['vocab_size']))
'''
  out = subprocess.run([PY, '-c', code], cwd=REPO, env=env(), capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  path, n_train, n_used, vocab = out.stdout.split()
  return pathlib.Path(path), (int(n_train), int(n_used), int(vocab))


def config_batch_size(name):
  code = f'import configs; print(configs.load({name!r}).batch_size)'
  return int(subprocess.run([PY, '-c', code], cwd=REPO, capture_output=True, text=True,
                            env=env()).stdout.strip())


def train_and_predict(tmp, mode, quick):
  """Trains configs/cnn.py for one epoch, then times evaluate and a cold `predict`."""
  workdir = tmp / 'run_cnn'
  cmd = [PY, '-m', 'genre_jax.train', '--config', str(REPO / 'configs' / 'cnn.py'),
         '--workdir', str(workdir), '--config.num_epochs=1', '--config.progress_bar=False']
  if quick:
    cmd += ['--config.data.max_examples=400', '--config.data.bucket_by_length=False']
  e = env()
  e['GENRE_JAX_JAX_CACHE'] = str(tmp / 'xla_cache')
  t = time.time()
  proc = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f'training failed:\n{proc.stderr[-3000:]}')
  log(f'trained {workdir} in {time.time() - t:.1f} s')
  result = {'train_command': ' '.join(cmd[1:]).replace(str(REPO) + '/', '')}
  result.update(worker('evaluate', {'workdir': str(workdir), 'repeats': mode['eval_repeats']}))
  pcmd = [PY, '-m', 'genre_jax.predict', '--workdir', str(workdir), SYNOPSIS]
  e['GENRE_JAX_JAX_CACHE'] = str(tmp / 'predict_cache')  # Empty: the first run fills it.
  times = []
  for i in range(mode['predict_repeats'] + 1):  # The first run fills the compilation cache.
    t = time.perf_counter()
    proc = subprocess.run(pcmd, cwd=REPO, env=e, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode:
      raise RuntimeError(f'predict failed:\n{proc.stderr[-3000:]}')
    if i:
      times.append(elapsed)
    else:
      result['predict_first_seconds'] = elapsed
  result['predict_seconds'] = statistics.median(times)
  result['predict_repeat_seconds'] = times
  result['predict_output'] = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ''
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='smoke run (about 3 minutes)')
  parser.add_argument('--configs', nargs='*', help='subset of configs (default: all six)')
  parser.add_argument('--epoch-repeats', type=int, help='timed epochs per configuration')
  parser.add_argument('--out', default=str(REPO / 'BENCHMARKS.md'))
  parser.add_argument('--json', default=None, help='default: benchmarks/results.json, or '
                      'benchmarks/results_gpu.json where JAX runs on a GPU')
  parser.add_argument('--no-torch', action='store_true', help='skip the PyTorch reference')
  parser.add_argument('--no-compile', action='store_true',
                      help='time the PyTorch reference eager only (no torch.compile)')
  parser.add_argument('--append', action='store_true', help='keep the rows (and inference '
                      'figures) of the existing --json file for configurations not run now')
  parser.add_argument('--skip-inference', action='store_true',
                      help='do not measure evaluate / predict (kept from the file with --append)')
  parser.add_argument('--default-malloc', action='store_true',
                      help="leave glibc malloc's defaults in the train-step workers (no "
                      'genre_jax.host.keep_freed_memory), to see what that setting changes')
  args = parser.parse_args(argv)
  backend = jax_backend()
  if args.json is None:
    args.json = str(REPO / 'benchmarks' / report.results_file(backend))
  mode = dict(QUICK if args.quick else FULL)
  if args.configs:
    mode['configs'] = tuple(args.configs)
  if args.epoch_repeats:
    mode['epoch_repeats'] = args.epoch_repeats
  torch_ok = have_torch() and not args.no_torch
  start = time.time()
  command = 'python -m benchmarks.run' + (' ' + ' '.join(argv if argv is not None
                                                         else sys.argv[1:])).rstrip()
  results = {'command': command.strip(), 'quick': args.quick, 'mode': mode,
             'started': datetime.datetime.now().isoformat(timespec='seconds'),
             'loadavg_start': os.getloadavg(), 'machine': machine_info(),
             'torch_available': torch_ok, 'torch_compile': torch_ok and not args.no_compile,
             'data_from_mirror_env': bool(os.environ.get('GENRE_JAX_MIRROR')),
             'backend': backend, 'train_step': TRAIN_STEP, 'rows': []}
  previous = None
  if args.append and pathlib.Path(args.json).exists():
    previous = json.loads(pathlib.Path(args.json).read_text())
    results['rows'] = [row for row in previous['rows'] if row['config'] not in mode['configs']]
    results['command'] = previous['command'] + ' ; ' + results['command']
    results['started'] = previous['started']
    results['appended'] = previous.get('appended', []) + [datetime.datetime.now().isoformat(
        timespec='seconds')]
  with tempfile.TemporaryDirectory(prefix='genre_jax_bench_') as tmp:
    tmp = pathlib.Path(tmp)
    slowest = None
    for row in results['rows']:  # Kept from the file (--append).
      t = row['jax']['steps'][max(row['jax']['steps'], key=int)]['seconds_per_step']
      if slowest is None or t > slowest[1]:
        slowest = (row['config'], t)
    for name in mode['configs']:
      data, (n_train, n_used, vocab) = prepare_data(tmp, mode['max_train'], name)
      results['train_examples'] = n_used
      results['train_examples_full'] = n_train
      log(f'data for {name}: {n_used} training examples, vocabulary {vocab}')
      sizes = sorted({32, config_batch_size(name)})
      spec = {'config': name, 'data': str(data), 'batch_sizes': sizes,
              'breakdown': args.quick,  # Quick: break down the only row in the same process.
              'trace_dir': str(tmp / f'trace_{name}'),
              'keep_freed_memory': not args.default_malloc,
              **{k: mode[k] for k in ('warmup', 'repeats', 'step_seconds', 'epoch_repeats')}}
      row = {'config': name, 'vocab_size': vocab, 'jax': worker('jax_train', spec)}
      row['torch'] = worker('torch_train', spec) if torch_ok else None
      if results['torch_compile']:
        row['torch_compile'] = compiled_worker(spec, tmp / f'inductor_{name}')
      results['rows'].append(row)
      main_bs = str(sizes[-1])
      t = row['jax']['steps'][main_bs]['seconds_per_step']
      if slowest is None or t > slowest[1]:
        slowest = (name, t)
    # Where the time goes: the slowest genre_jax train step, broken down.
    name = slowest[0]
    done = [row['jax'] for row in results['rows'] if row['config'] == name and
            'breakdown' in row['jax']]
    if done:
      breakdown = done[0].pop('breakdown')
    else:
      data, _ = prepare_data(tmp, mode['max_train'], name)
      spec = {'config': name, 'data': str(data), 'batch_sizes': [], 'epoch': False,
              'breakdown': True, 'trace_dir': str(tmp / f'trace_{name}'),
              'keep_freed_memory': not args.default_malloc,
              **{k: mode[k] for k in ('warmup', 'repeats', 'step_seconds')}}
      breakdown = worker('jax_train', spec)['breakdown']
    results['breakdown'] = {'config': name, **breakdown}
    if not args.skip_inference:
      results['inference'] = train_and_predict(tmp, mode, args.quick)
    elif previous and previous.get('inference'):
      results['inference'] = previous['inference']
  results['loadavg_end'] = os.getloadavg()
  results['wall_seconds'] = time.time() - start + (previous or {}).get('wall_seconds', 0)
  pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
  defaults = {REPO / 'benchmarks' / 'results.json', REPO / 'benchmarks' / 'results_gpu.json'}
  if pathlib.Path(args.json).resolve() in defaults:  # Both runs, CPU and GPU, in one document.
    pathlib.Path(args.out).write_text(report.document(REPO))
  else:
    pathlib.Path(args.out).write_text(report.markdown(results))
  log(f'wrote {args.out} and {args.json} in {time.time() - start:.0f} s')
  return results


if __name__ == '__main__':
  main()
