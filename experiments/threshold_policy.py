"""Which threshold policy generalises: cross-validation inside the VALIDATION split of trained runs.

The trainer tunes one global threshold on validation (`config.threshold`: `per_genre=False`,
`at_least_one=False`). This command asks whether per-genre thresholds or the at-least-one rule
would do better on unseen rows, using the validation split alone: for each run it scores the
validation synopses once, then runs `genre_jax.thresholds.cross_validate` (repeated 2-fold: tune on
one half, take micro-F1 on the other). The test split is not read.

Run:
  python -m experiments.threshold_policy runs/experiments/minilm/seed0 runs/experiments/minilm/seed1
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from genre_jax import thresholds


def run_policies(workdir: str, repeats: int) -> dict[str, tuple[float, float]]:
  """Cross-validated micro-F1 (mean, std) of each policy on `workdir`'s validation split."""
  from genre_jax import inference
  run = inference.load_run(workdir)
  val = run.load_data().arrays['validation']
  probs, _ = run.probs_and_loss(val.texts, val.labels)
  return thresholds.cross_validate(val.labels, probs, repeats=repeats)


def table(results: dict[str, dict[str, tuple[float, float]]]) -> str:
  lines = ['| run | ' + ' | '.join(thresholds.POLICIES) + ' |',
           '|---|' + '---:|' * len(thresholds.POLICIES)]
  for workdir, cv in results.items():
    lines.append(f'| {workdir} | ' + ' | '.join(f'{cv[p][0]:.4f} ± {cv[p][1]:.4f}'
                                                for p in thresholds.POLICIES) + ' |')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdirs', nargs='+', help='trained runs (or ensembles)')
  parser.add_argument('--repeats', type=int, default=20, help='shuffles of the 2-fold split')
  parser.add_argument('--json', default=None, help='also write the figures here')
  args = parser.parse_args(argv)
  from genre_jax import host, inference
  host.keep_freed_memory()  # Before the first large allocation (see host.py).
  inference.enable_compilation_cache()
  results = {w: run_policies(w, args.repeats) for w in args.workdirs}
  print('Micro-F1 on held-out halves of the validation split (mean ± std over '
        f'{2 * args.repeats} halves); the test split is not read.\n')
  print(table(results))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
  sys.exit(main())
