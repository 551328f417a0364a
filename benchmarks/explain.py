"""How long `python -m genre_jax.explain` takes on one synopsis: a cold process with a warm
compilation cache, beside `predict` in the same conditions.

Each command runs once to fill an empty compilation cache (its time reported apart), then
`--repeats` times more; the median wall time of those is the figure. Writes
benchmarks/explain_results.json (command, machine, every time, the 3 s target).

  python -m benchmarks.explain --workdir runs/cnn [--repeats 5]
"""

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.run import PY, REPO, SYNOPSIS, machine_info

RESULTS_FILE = 'explain_results.json'
TARGET_SECONDS = 3.0


def time_command(args: list[str], cache: pathlib.Path, repeats: int) -> dict:
  """Wall seconds of `python -m ARGS`: the first run (fills `cache`) and `repeats` more."""
  env = {**os.environ, 'GENRE_JAX_JAX_CACHE': str(cache), 'JAX_PLATFORMS': 'cpu'}
  times = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    proc = subprocess.run([PY, '-m', *args], cwd=REPO, env=env, capture_output=True, text=True)
    times.append(time.perf_counter() - start)
    if proc.returncode:
      raise RuntimeError(f'{args[0]} failed:\n{proc.stderr[-3000:]}')
  return {'first_seconds': times[0], 'seconds': statistics.median(times[1:]),
          'repeat_seconds': times[1:], 'output': proc.stdout.strip().splitlines()}


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
  with tempfile.TemporaryDirectory() as tmp:
    for name in ('explain', 'predict'):
      cache = pathlib.Path(tmp) / name  # Empty: the first run fills it.
      results[name] = time_command([f'genre_jax.{name}', '--workdir', args.workdir, SYNOPSIS],
                                   cache, args.repeats)
      print(f'{name}: {results[name]["seconds"]:.2f} s (median of {args.repeats}; first run '
            f'{results[name]["first_seconds"]:.2f} s)', flush=True)
  results['met'] = results['explain']['seconds'] <= TARGET_SECONDS
  pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + '\n')


if __name__ == '__main__':
  main()
