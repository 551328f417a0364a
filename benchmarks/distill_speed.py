"""Scoring throughput of distilled models next to their teacher, on the same machine in one run.

Each model (the teacher first, then the students) is measured in a fresh process on the test
split of its run (the same 1,005 synopses for all): `inference.predict_probs` on the tokenised
split in batches of `--batch_size` (256) at the run's `max_length` (the model alone, as
BENCHMARKS.md's "scoring alone"), and `Run.probs` on the raw texts (tokenisation included). One
warm-up pass compiles; then passes repeat until `--seconds` have gone (at least 3); the median
pass gives synopses/s. The machine's load average is recorded before and after: other processes
on the cores slow every row alike only if they run throughout.

Run:
  python -m benchmarks.distill_speed --teacher /path/to/minilm \\
      --students distill_cnn=runs/distill_cnn/seed0 distill_lstm=runs/distill_lstm/seed0
  python -m benchmarks.report   # BENCHMARKS.md, with this run's section
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / 'benchmarks' / 'distill_speed_results.json'
# The targets: the distilled CNN scores >= 4,000 synopses/s and >= 10x its teacher.
TARGETS = {'cnn_synopses_per_second': 4000.0, 'speedup_over_teacher': 10.0}


def _passes(fn, seconds: float) -> list[float]:
  """Times `fn()` after one warm-up call, at least 3 times and until `seconds` have gone."""
  fn()
  times, start = [], time.perf_counter()
  while len(times) < 3 or time.perf_counter() - start < seconds:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return times


def measure(workdir: str, batch_size: int, seconds: float) -> dict:
  """One model's scoring throughput (run in a fresh process by `main`)."""
  from genre_jax import host, inference, models
  host.keep_freed_memory()
  run = inference.load_run(workdir)
  test = run.load_data(encode=('test',)).arrays['test']
  n = len(test.texts)

  def score():
    inference.predict_probs(run.model, test.tokens, test.lengths, test.labels,
                            batch_size=batch_size, mesh=run.mesh)

  model_times = _passes(score, seconds)
  texts = list(test.texts)
  run.config.eval_batch_size = batch_size  # Run.probs batches by the run's eval_batch_size.
  text_times = _passes(lambda: run.probs(texts), seconds)
  report = json.loads((pathlib.Path(workdir) / 'report.json').read_text())
  return {'workdir': str(workdir), 'model': run.config.model.name, 'n': n,
          'tokenizer': run.tokenizer.to_dict()['kind'], 'max_length': run.config.data.max_length,
          'num_parameters': models.count_params(run.model),
          'scoring_synopses_per_second': n / statistics.median(model_times),
          'end_to_end_synopses_per_second': n / statistics.median(text_times),
          'passes': len(model_times),
          'test_micro_f1': report['test']['micro_f1'], 'test_macro_f1': report['test']['macro_f1'],
          'train_seconds': report.get('train_seconds')}


def _worker(name: str, workdir: str, args) -> dict:
  cmd = [sys.executable, '-m', 'benchmarks.distill_speed', '--measure', workdir,
         '--batch_size', str(args.batch_size), '--seconds', str(args.seconds)]
  t = time.time()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600,
                        env={**os.environ, 'PYTHONPATH': str(REPO)})
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode or not lines:
    raise RuntimeError(f'{name} ({workdir}) failed:\n{proc.stderr[-3000:]}')
  result = {'name': name, **json.loads(lines[-1][len('RESULT '):])}
  print(f'{name}: {result["scoring_synopses_per_second"]:,.0f} synopses/s (model), '
        f'{result["end_to_end_synopses_per_second"]:,.0f} (from text); '
        f'{time.time() - t:.0f} s', flush=True)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--teacher', help='the teacher\'s workdir (required)')
  parser.add_argument('--students', nargs='+', default=[], metavar='NAME=WORKDIR')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--seconds', type=float, default=5.0, help='timed seconds per model')
  parser.add_argument('--measure', help=argparse.SUPPRESS)  # Worker: one model.
  parser.add_argument('--out', default=str(RESULTS))
  args = parser.parse_args(argv)
  if args.measure:
    print('RESULT ' + json.dumps(measure(args.measure, args.batch_size, args.seconds)))
    return
  if not args.teacher:
    parser.error('--teacher WORKDIR is required')
  from benchmarks import run as bench_run
  students = [s.split('=', 1) for s in args.students]
  if any(len(s) != 2 for s in students):
    parser.error('--students takes NAME=WORKDIR pairs')
  load_before = os.getloadavg()
  rows = [_worker('teacher', args.teacher, args)] + [_worker(n, w, args) for n, w in students]
  teacher = rows[0]['scoring_synopses_per_second']
  for row in rows[1:]:
    row['speedup_over_teacher'] = row['scoring_synopses_per_second'] / teacher
  result = {'command': 'python -m benchmarks.distill_speed ' + ' '.join(
                argv if argv is not None else sys.argv[1:]),
            'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            'machine': bench_run.machine_info(), 'batch_size': args.batch_size,
            'load_average_before': load_before, 'load_average_after': os.getloadavg(),
            'targets': TARGETS, 'models': rows}
  pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
