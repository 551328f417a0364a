"""How long `python -m genre_jax.explain` takes on one synopsis: a cold process with a warm
compilation cache, beside `predict` in the same conditions.

Each command runs once to fill an empty compilation cache (its time reported apart), then
`--repeats` times more; the median wall time of those is the figure, beside the median CPU
seconds (user + system) and the load average, as other jobs may share the machine. Writes
benchmarks/explain_results.json (command, machine, every time, the 3 s target on wall time).

  python -m benchmarks.explain --workdir runs/cnn [--repeats 5]
"""

import argparse
import datetime
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.run import PY, REPO, SYNOPSIS, machine_info

RESULTS_FILE = 'explain_results.json'
TARGET_SECONDS = 3.0


def _children_cpu() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def time_command(args: list[str], cache: pathlib.Path, repeats: int) -> dict:
  """Wall and CPU (user + system) seconds of `python -m ARGS`: the first run (fills `cache`)
  and `repeats` more. The CPU seconds are what the wall time is on an otherwise idle machine."""
  env = {**os.environ, 'GENRE_JAX_JAX_CACHE': str(cache), 'JAX_PLATFORMS': 'cpu'}
  wall, cpu = [], []
  for _ in range(repeats + 1):
    start, start_cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run([PY, '-m', *args], cwd=REPO, env=env, capture_output=True, text=True)
    wall.append(time.perf_counter() - start)
    cpu.append(_children_cpu() - start_cpu)
    if proc.returncode:
      raise RuntimeError(f'{args[0]} failed:\n{proc.stderr[-3000:]}')
  return {'first_seconds': wall[0], 'seconds': statistics.median(wall[1:]),
          'cpu_seconds': statistics.median(cpu[1:]), 'repeat_seconds': wall[1:],
          'repeat_cpu_seconds': cpu[1:], 'output': proc.stdout.strip().splitlines()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='a trained run (the tuned CNN)')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--out', default=str(REPO / 'benchmarks' / RESULTS_FILE))
  args = parser.parse_args(argv)
  results = {'command': 'python -m benchmarks.explain ' + ' '.join(
                 sys.argv[1:] if argv is None else argv),
             'date': datetime.date.today().isoformat(), 'machine': machine_info(),
             'workdir': args.workdir, 'synopsis': SYNOPSIS, 'target_seconds': TARGET_SECONDS}
  results['load_average_at_start'] = os.getloadavg()
  with tempfile.TemporaryDirectory() as tmp:
    for name in ('explain', 'predict'):
      cache = pathlib.Path(tmp) / name  # Empty: the first run fills it.
      results[name] = time_command([f'genre_jax.{name}', '--workdir', args.workdir, SYNOPSIS],
                                   cache, args.repeats)
      print(f'{name}: {results[name]["seconds"]:.2f} s wall, {results[name]["cpu_seconds"]:.2f} s '
            f'CPU (medians of {args.repeats}; first run {results[name]["first_seconds"]:.2f} s)',
            flush=True)
  results['load_average_at_end'] = os.getloadavg()
  results['met'] = results['explain']['seconds'] <= TARGET_SECONDS
  pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + '\n')


if __name__ == '__main__':
  main()
