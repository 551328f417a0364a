"""Reproduces the whole results table: baselines, then every row x seeds 0, 1, 2, then RESULTS.md.

Each neural run is `genre_jax.trainer.train_and_evaluate(config, workdir)` with the row's config
file (experiments.report.ROWS) and `config.seed = k`, in `<runs>/<row>/seed<k>`; the data split
is the configs' fixed one (`data.split_seed = 0`). Runs go seed by seed (every row's seed 0 first),
so an interrupted reproduction already gives a partial table; finished runs (a report.json) are
skipped, and an interrupted run resumes from its checkpoint. The hyperparameter search is not
part of this (see experiments/search.py).

The default rows are experiments.report.ROWS (the from-scratch models, under an hour in all on 2
CPU cores). The pretrained-encoder rows (experiments.report.EXTRA_ROWS: minilm_frozen, minilm) run
only when named with --rows; --epochs caps num_epochs of the runs started by this call (the value
used is in each run's config.json, and RESULTS.md shows it).

The distilled rows (experiments.report.DISTILL_ROWS) run only when named with --rows, and need
the teacher's workdir (`--teacher`, a fine-tuned MiniLM run on the same split); the teacher's
scores of each seed's transfer set are shared by the rows (`<runs>/distill_cache`).

Run:
  python -m experiments.reproduce [--runs runs/experiments] [--seeds 0 1 2] [--rows cnn lstm]
  python -m experiments.reproduce --rows minilm_frozen minilm --seeds 0 [--epochs 1]
  python -m experiments.reproduce --rows distill_cnn distill_lstm distill_cnn_lstm \
      --teacher runs/experiments/minilm/seed0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import time

import configs
from experiments import baselines
from experiments import report as report_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_config(path: str, seed: int, num_epochs: int | None = None,
                 distill: dict | None = None):
  """The row's config with `seed`; `distill`: the teacher and cache_dir of a distilled row."""
  config = configs.load(str(REPO / path))
  config.seed = seed
  config.progress_bar = False
  if num_epochs is not None:
    config.num_epochs = num_epochs
  if distill is not None:
    config.distill.update(distill)
  return config


def selected_rows(rows=None):
  """(row, label, config) to train: the default rows, or exactly those named (of TRAINED_ROWS)."""
  if not rows:
    return report_lib.ROWS
  unknown = set(rows) - {r for r, _, _ in report_lib.TRAINED_ROWS}
  if unknown:
    raise ValueError(f'unknown rows {sorted(unknown)}')
  return tuple(r for r in report_lib.TRAINED_ROWS if r[0] in rows)


def build_ensembles(runs: pathlib.Path, seeds, timings: dict) -> None:
  """Each ensemble of experiments.report.ENSEMBLES, per seed, once all its members are finished
  (and again when a member finished after the ensemble was built)."""
  from genre_jax import ensembling
  for name, label, members, weights in report_lib.ENSEMBLES:
    for seed in seeds:
      dirs = [runs / row / f'seed{seed}' for row in members]
      reports = [d / 'report.json' for d in dirs]
      if not all(r.exists() for r in reports):
        continue
      workdir = runs / name / f'seed{seed}'
      done = workdir / 'report.json'
      if done.exists() and done.stat().st_mtime > max(r.stat().st_mtime for r in reports):
        print(f'== {label} seed {seed}: done already ({workdir})', flush=True)
        continue
      print(f'== {label} seed {seed}: building from {", ".join(map(str, dirs))}', flush=True)
      t0 = time.time()
      report = ensembling.build(workdir, [str(d) for d in dirs], weights=weights)
      timings['runs'][f'{name}/seed{seed}'] = round(time.time() - t0, 1)
      _save_timings(runs, timings)
      print(f'== {label} seed {seed}: test micro-F1 {report["test"]["micro_f1"]:.4f} '
            f'macro-F1 {report["test"]["macro_f1"]:.4f}', flush=True)


def _timings(runs: pathlib.Path) -> dict:
  path = runs / 'timings.json'
  return json.loads(path.read_text()) if path.exists() else {'runs': {}}


def _save_timings(runs: pathlib.Path, timings: dict) -> None:
  """Writes this call's run times over those in the file (another reproduce call may be running
  on other rows at the same time: its entries are kept)."""
  merged = _timings(runs)
  merged['runs'].update(timings['runs'])
  timings['runs'] = merged['runs']
  timings['total_seconds'] = round(sum(timings['runs'].values()), 1)
  (runs / 'timings.json').write_text(json.dumps(timings, indent=1))


def run_all(runs: pathlib.Path, seeds, rows, with_baselines: bool = True,
            quiet: bool = False, num_epochs: int | None = None,
            teacher: str | None = None) -> None:
  from genre_jax import trainer
  runs.mkdir(parents=True, exist_ok=True)
  machine = report_lib.machine_info()
  machine['load_average_at_start'] = os.getloadavg() if hasattr(os, 'getloadavg') else None
  (runs / 'machine.json').write_text(json.dumps(machine, indent=1))
  timings = _timings(runs)

  if with_baselines and not all((runs / 'baselines' / n / 'report.json').exists()
                                for n, _ in report_lib.BASELINES):
    t0 = time.time()
    config = _load_config(report_lib.ROWS[0][2], 0)
    baselines.run(config.data, runs / 'baselines', config.num_examples_to_show)
    timings['runs']['baselines'] = round(time.time() - t0, 1)
    _save_timings(runs, timings)

  for seed in seeds:
    for row, label, config_path in selected_rows(rows):
      workdir = runs / row / f'seed{seed}'
      if (workdir / trainer.REPORT_FILE).exists():
        print(f'== {label} seed {seed}: done already ({workdir})', flush=True)
        continue
      print(f'== {label} seed {seed}: training {config_path} in {workdir}', flush=True)
      t0 = time.time()
      buffer = io.StringIO()
      with contextlib.redirect_stdout(buffer) if quiet else contextlib.nullcontext():
        distill = (None if 'distill' not in row else
                   {'teacher': teacher, 'cache_dir': str(runs / 'distill_cache')})
        report = trainer.train_and_evaluate(_load_config(config_path, seed, num_epochs, distill),
                                            str(workdir))
      timings['runs'][f'{row}/seed{seed}'] = round(time.time() - t0, 1)
      _save_timings(runs, timings)
      t = report['test']
      print(f'== {label} seed {seed}: test micro-F1 {t["micro_f1"]:.4f} macro-F1 '
            f'{t["macro_f1"]:.4f}, best epoch {report["best_epoch"]}/{report["epochs_run"]}, '
            f'{time.time() - t0:.0f} s wall', flush=True)
  build_ensembles(runs, seeds, timings)


def dump_predictions(workdir: pathlib.Path) -> None:
  """Saves a finished run's (or ensemble's) test probabilities / predictions (at its tuned
  threshold)."""
  from genre_jax import inference
  from genre_jax import thresholds
  run = inference.load_run(workdir)
  test = run.load_data().arrays['test']
  probs, _ = run.probs_and_loss(test.texts, test.labels)
  pred = thresholds.apply(probs, run.threshold, run.thresholds['at_least_one'])
  baselines.save_predictions(workdir / baselines.PREDICTIONS_FILE, test, probs, pred,
                             list(run.labels.classes))


def dump_all_predictions(runs: pathlib.Path, seeds=(0,)) -> None:
  """Test predictions of each row's seed-0 run, for the error analysis (a few seconds each)."""
  for row, _, _ in report_lib.ALL_ROWS:
    for seed in seeds:
      workdir = runs / row / f'seed{seed}'
      if (workdir / 'report.json').exists() and not (
          workdir / baselines.PREDICTIONS_FILE).exists():
        try:
          dump_predictions(workdir)
        except Exception as e:  # The table does not need it; the error analysis is skipped.
          print(f'warning: no test predictions for {workdir}: {e!r}', flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--runs', default=str(REPO / 'runs' / 'experiments'))
  parser.add_argument('--seeds', type=int, nargs='+', default=list(report_lib.SEEDS))
  parser.add_argument('--rows', nargs='+', default=None,
                      choices=[r for r, _, _ in report_lib.TRAINED_ROWS],
                      help='default: the from-scratch rows (not minilm_frozen, minilm); the '
                      'ensembles of report.ENSEMBLES are built whenever their members exist')
  parser.add_argument('--epochs', type=int, default=None,
                      help='override num_epochs of the runs started now (recorded in config.json)')
  parser.add_argument('--skip-baselines', action='store_true')
  parser.add_argument('--teacher', default=None, metavar='WORKDIR',
                      help='the teacher of the distill_* rows (the fine-tuned MiniLM\'s workdir)')
  parser.add_argument('--quiet', action='store_true', help='hide per-epoch training output')
  args = parser.parse_args(argv)
  if any('distill' in r for r in args.rows or ()) and not args.teacher:
    parser.error('the distill_* rows need --teacher WORKDIR')
  import matplotlib
  matplotlib.use('Agg')
  from genre_jax import host, inference
  host.keep_freed_memory()  # Before the first large allocation (see host.py).
  inference.enable_compilation_cache()
  runs = pathlib.Path(args.runs)
  t0 = time.time()
  teacher = str(pathlib.Path(args.teacher).absolute()) if args.teacher else None
  run_all(runs, args.seeds, args.rows, not args.skip_baselines, args.quiet, args.epochs, teacher)
  dump_all_predictions(runs)
  summary = report_lib.write_results(runs, REPO / 'experiments')
  print(f'reproduction finished in {(time.time() - t0) / 60:.1f} min; wrote experiments/RESULTS.md '
        f'(complete: {summary["complete"]}, best row by validation: {summary["best"]})')


if __name__ == '__main__':
  main()
