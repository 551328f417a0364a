"""How the data layer scales: prepare time, peak memory and train throughput at 100k-10M rows.

  python -m benchmarks.scale                                  # 100k and 1M rows (2-3 minutes)
  python -m benchmarks.scale --sizes 100000,1000000,10000000  # and 10M (3.3 GB of CSV, ~10 GB RAM)
  python -m benchmarks.scale --sizes 2000 --train_steps 20 --out /tmp/scale.json   # smoke run

The data sets are synthetic, made from the real TMDB file (`tmdb_10k`, read as
`genre_jax.data.download` finds it): row i copies the columns of a random TMDB row under the fresh
id i + 1 and perturbs its synopsis, so that the vocabulary keeps growing as real text does: 10% of
the words dropped, one adjacent pair swapped per 8 words, and one word in 200 given a typo (two
adjacent letters swapped). They are written once to --data_dir and reused.

Each size runs in a fresh process (`--worker`), in the order a training run does it
(`genre_jax.host.keep_freed_memory()` first): `pipeline.prepare` of the whole file with the data
section of configs/default.py, timed per stage; the process's peak resident memory
(`ru_maxrss`) after its imports and after `prepare`; then `--train_steps` steps of the tuned CNN
(configs/cnn.py) on the prepared training split, batches from `batching.batches` as the trainer
makes them, after one compiling step per bucket width. From 100,000 rows the data layer tokenises
in worker processes (`genre_jax.data.workers`, one per core); their peak resident memory is
recorded apart (the largest worker's VmHWM), since the process's own peak does not hold it. Writes --out (JSON, with the machine and
the command) and prints a markdown table; the growth of peak memory per extra row is the slope
between consecutive sizes.
"""

import argparse
import csv
import datetime
import importlib.metadata
import json
import os
import pathlib
import random
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
GENERATOR_VERSION = 1
DROP, SWAP_EVERY, TYPO = 0.1, 8, 0.005  # The perturbation of the synopses (see above).
TARGETS = {'prepare_seconds_1m': 60.0, 'peak_rss_gb_1m': 3.0, 'rss_growth_bytes_per_row': 1024.0}


def perturb(words: list[str], rng: random.Random) -> str:
  """A synopsis like `words`: some dropped, neighbours swapped, a few typos."""
  out = [w for w in words if rng.random() >= DROP] or words[:1]
  for _ in range(len(out) // SWAP_EVERY):
    i = rng.randrange(len(out) - 1)
    out[i], out[i + 1] = out[i + 1], out[i]
  for i, w in enumerate(out):
    if len(w) > 3 and rng.random() < TYPO:
      j = rng.randrange(len(w) - 1)
      out[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
  return ' '.join(out)


def make_dataset(n: int, data_dir: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """The synthetic TMDB-format CSV of `n` rows (written once; see the module docstring)."""
  path = data_dir / f'tmdb_synthetic_{n}_seed{seed}_v{GENERATOR_VERSION}.csv'
  if path.exists():
    return path
  from genre_jax.data import download, registry
  source = download.fetch(registry.get_spec('tmdb_10k'))
  with open(source, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    header = next(reader)
    rows = [r for r in reader if r[header.index('overview')].strip()]
  text_col, id_col = header.index('overview'), header.index('id')
  words = [r[text_col].split() for r in rows]
  rng = random.Random(seed)
  data_dir.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f'.tmp{os.getpid()}')
  with open(tmp, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for i in range(n):
      k = rng.randrange(len(rows))
      row = list(rows[k])
      row[id_col], row[text_col] = str(i + 1), perturb(words[k], rng)
      writer.writerow(row)
  os.replace(tmp, path)
  return path


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes.


def timed_stages(times: dict[str, float], peaks: dict[str, int]) -> None:
  """Wraps the data layer's stages so that each call adds its seconds to `times[stage]` and sets
  `peaks[stage]` to the process's peak memory when the stage ends."""
  from genre_jax.data import parsers, pipeline, splits, text, token_cache

  def wrap(owner, name, stage):
    fn = getattr(owner, name)

    def timed(*args, **kwargs):
      t = time.perf_counter()
      try:
        return fn(*args, **kwargs)
      finally:
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - t
        peaks[stage] = peak_rss_bytes()

    setattr(owner, name, timed)

  for owner, name, stage in [(parsers, '_parse_csv', 'read'), (parsers, '_clean', 'clean'),
                             (splits, 'split_indices', 'split'),
                             (pipeline, 'fit_tokenizer', 'vocab'),
                             (token_cache, 'encode', 'encode'),
                             (text.LabelEncoder, 'transform', 'labels')]:
    wrap(owner, name, stage)


def watch_workers() -> list[int]:
  """The peak resident memory (bytes) of each worker of every tokenising pool (`loky`), read
  from /proc/PID/status (VmHWM) as the pool shuts down; filled in as pools end. (A child's
  `ru_maxrss` would start from its parent's, which exec does not reset.)"""
  import loky
  peaks, shutdown = [], loky.ProcessPoolExecutor.shutdown

  def measured(self, *args, **kwargs):
    for pid in list(self._processes):
      try:
        status = pathlib.Path(f'/proc/{pid}/status').read_text()
      except OSError:
        continue
      peaks.extend(int(line.split()[1]) * 1024 for line in status.splitlines()
                   if line.startswith('VmHWM:'))
    return shutdown(self, *args, **kwargs)

  loky.ProcessPoolExecutor.shutdown = measured
  return peaks


def prepare_and_train(spec: dict) -> dict:
  """The worker: prepare the file at `spec['path']`, then train the tuned CNN for a while."""
  from genre_jax import host
  host.keep_freed_memory()
  import configs
  from genre_jax.data import pipeline, workers
  out = {'rows': spec['rows'], 'rss_after_imports_bytes': peak_rss_bytes()}
  data_config = configs.load('default').data
  data_config.update(path=spec['path'], format='tmdb_csv')
  out['stage_seconds'], out['peak_rss_bytes_after_stage'] = stages, peaks = {}, {}
  timed_stages(stages, peaks)
  worker_peaks = watch_workers()
  t = time.perf_counter()
  data = pipeline.prepare(data_config)
  out['prepare_seconds'] = time.perf_counter() - t
  out['peak_rss_bytes'] = peak_rss_bytes()
  out['data_workers'] = workers.size(len(data.records))
  out['worker_peak_rss_bytes'] = max(worker_peaks, default=0)
  stages['other'] = out['prepare_seconds'] - sum(stages.values())
  out.update(kept=data.report['kept'], vocab_size=data.tokenizer.vocab_size,
             splits={k: len(v) for k, v in data.split.items()}, memory_parts=memory_parts(data))
  if spec['train_steps']:
    out['train'] = train_throughput(data, spec['train_steps'])
  return out


def memory_parts(data) -> dict[str, int]:
  """Bytes held by the prepared data's main parts: arrays, and each distinct Python object of the
  record columns (`sys.getsizeof`; rows with the same genres share one tuple) with the
  columns' 8-byte references to them."""
  arrays, records = data.arrays.values(), data.records
  distinct = lambda column: sum(map(sys.getsizeof, {id(o): o for o in column}.values()))
  return {
      'tokens_and_lengths': sum(a.tokens.nbytes + a.lengths.nbytes for a in arrays),
      'labels': sum(a.labels.nbytes for a in arrays),
      'texts': distinct(records['text']),
      'ids_and_titles': distinct(records['id']) + distinct(records['title']),
      'genre_tuples': distinct(records['genres']),
      'column_references': 8 * records.shape[0] * records.shape[1],
  }


def train_throughput(data, steps: int) -> dict:
  """Examples per second of the tuned CNN's train step on `data.train` (batching included)."""
  import jax
  from flax import nnx
  import configs
  from genre_jax import models, optim, parallel, train_step
  from genre_jax.data import batching
  config = configs.load('cnn')
  train, mesh = data.train, parallel.make_mesh()
  model = models.build_model(config, data.tokenizer, data.labels.num_labels)
  model.train()
  steps_per_epoch = -(-len(train) // config.batch_size)
  optimizer = nnx.Optimizer(model, optim.make_optimizer(config, steps_per_epoch), wrt=nnx.Param)
  parallel.replicate(model, mesh)
  parallel.replicate(optimizer, mesh)
  step = train_step.TrainStep(model, optimizer, nnx.Param)
  widths = batching.bucket_widths(train.lengths, config.data.max_length, config.data.num_buckets)
  batches = batching.batches(train, config.batch_size, shuffle=True, seed=config.seed, epoch=0,
                             bucket_by_length=config.data.bucket_by_length, widths=widths)
  expected = set(widths) if config.data.bucket_by_length else {config.data.max_length}
  compiled = set()
  for warmup, batch in enumerate(batches):  # A step per width compiles it (a rare width later
    compiled.add(batch['tokens'].shape[1])  # compiles within the timed steps).
    jax.block_until_ready(step(parallel.shard_batch(batch, mesh), None))
    if compiled >= expected or warmup == 200:
      break
  done, t = 0, time.perf_counter()
  for batch in batches:
    loss = step(parallel.shard_batch(batch, mesh), None)
    done += 1
    if done == steps:
      break
  jax.block_until_ready(loss)
  seconds = time.perf_counter() - t
  return {'steps': done, 'batch_size': config.batch_size, 'seconds': seconds,
          'examples_per_second': done * config.batch_size / seconds,
          'backend': jax.default_backend()}


def run_worker(spec: dict) -> dict:
  """Runs `prepare_and_train(spec)` in a fresh process; returns its result."""
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.scale', '--worker', json.dumps(spec)],
                        cwd=REPO, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f'worker for {spec["rows"]} rows failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def idle_rss_bytes() -> int:
  """Peak resident memory of a fresh Python process that does nothing."""
  proc = subprocess.run([sys.executable, '-c', 'import resource; print(resource.getrusage('
                         'resource.RUSAGE_SELF).ru_maxrss)'], capture_output=True, text=True,
                        check=True)
  return int(proc.stdout) * 1024


def add_growth(rows: list[dict]) -> None:
  """Each size's growth of peak memory per extra row over the previous size."""
  for prev, cur in zip(rows, rows[1:]):
    cur['rss_growth_bytes_per_row'] = ((cur['peak_rss_bytes'] - prev['peak_rss_bytes'])
                                       / (cur['rows'] - prev['rows']))


def table(rows: list[dict]) -> str:
  stages = ('read', 'clean', 'split', 'vocab', 'encode', 'labels', 'other')
  lines = ['| rows | prepare (s) | ' + ' | '.join(stages) + ' | peak RSS (GB) | RSS growth / '
           'extra row | tokenising workers: peak RSS each (GB) | train (examples/s) |',
           '|---:|---:|' + '---:|' * len(stages) + '---:|---:|---:|---:|']
  for r in rows:
    growth = r.get('rss_growth_bytes_per_row')
    train = r.get('train', {}).get('examples_per_second')
    lines.append(
        f'| {r["rows"]:,} | {r["prepare_seconds"]:.1f} | '
        + ' | '.join(f'{r["stage_seconds"].get(s, 0.0):.1f}' for s in stages)
        + f' | {r["peak_rss_bytes"] / 1e9:.2f} | '
        + ('' if growth is None else f'{growth:.0f} B') + ' | '
        + (f'{r["data_workers"]}: {r["worker_peak_rss_bytes"] / 1e9:.2f}'
           if r.get('data_workers', 0) > 1 else 'none') + ' | '
        + ('' if train is None else f'{train:,.0f}') + ' |')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='100000,1000000', help='comma-separated row counts')
  parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'scale_results.json'))
  parser.add_argument('--data_dir', default=os.path.join(
      os.environ.get('TMPDIR', '/tmp'), 'genre_jax_scale'), help='synthetic data sets (reused)')
  parser.add_argument('--train_steps', type=int, default=300, help='0: prepare only')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(prepare_and_train(json.loads(args.worker))))
    return
  from benchmarks import run as run_lib
  sizes = sorted(int(s) for s in args.sizes.split(','))
  results = {'command': ' '.join(['python -m benchmarks.scale'] + (
                 sys.argv[1:] if argv is None else list(argv))),
             'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
             'machine': {**run_lib.machine_info(),
                         'memory_bytes': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'),
                         'data_versions': {p: importlib.metadata.version(p) for p in (
                             'pandas', 'tokenizers', 'scikit-learn', 'iterative-stratification')}},
             'generator': {'version': GENERATOR_VERSION, 'drop': DROP, 'swap_every': SWAP_EVERY,
                           'typo': TYPO, 'seed': args.seed},
             'idle_python_rss_bytes': idle_rss_bytes(), 'targets': TARGETS, 'sizes': []}
  for n in sizes:
    path = make_dataset(n, pathlib.Path(args.data_dir), args.seed)
    print(f'[scale] {n:,} rows: {path} ({path.stat().st_size / 1e6:.0f} MB)', file=sys.stderr,
          flush=True)
    results['sizes'].append({'file_bytes': path.stat().st_size, **run_worker(
        {'rows': n, 'path': str(path), 'train_steps': args.train_steps})})
    add_growth(results['sizes'])
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + '\n')
  print(table(results['sizes']))


if __name__ == '__main__':
  main()
