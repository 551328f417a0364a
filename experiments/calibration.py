"""Calibration of trained runs: reliability diagrams before and after temperature scaling.

For each `--model LABEL=WORKDIR` (a run or an ensemble whose calibration was fitted on
validation by training or `python -m genre_jax.ensemble`), scores the validation and test splits
once, and records the ECE (micro and macro), Brier score and NLL of the uncalibrated and the
calibrated probabilities, and the reliability curve of all test genre decisions (15 equal-width
bins). Writes experiments/calibration_results.json and experiments/figures/reliability.png;
`python -m experiments.report` renders the "Calibration" section of RESULTS.md from the JSON.

  python -m experiments.calibration --model "Tuned CNN=runs/experiments/cnn/seed0" \
      --model "Fine-tuned MiniLM=runs/minilm"
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import numpy as np

from experiments import report as report_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS_FILE = 'calibration_results.json'


def reliability_curve(labels: np.ndarray, probs: np.ndarray, n_bins: int) -> dict[str, list]:
  """Per equal-width bin of all decisions: mean probability, observed frequency, count.

  Args:
    labels, probs: [n, G].
  """
  from genre_jax import metrics
  y, p = labels.ravel().astype(np.float64), probs.ravel().astype(np.float64)
  bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p)
  count = np.bincount(bins, minlength=n_bins)
  nz = np.maximum(count, 1)
  return {'mean_probability': (np.bincount(bins, p, n_bins) / nz).tolist(),
          'frequency': (np.bincount(bins, y, n_bins) / nz).tolist(),
          'count': count.tolist(), 'bins': metrics.ECE_BINS}


def measure(label: str, workdir: str) -> dict[str, Any]:
  """The calibration figures of one run on its validation and test splits."""
  from genre_jax import calibration, inference, metrics
  run = inference.load_run(workdir)
  data = run.load_data(encode=('validation', 'test'))
  out = {'label': label, 'workdir': str(workdir), 'calibration': run.calibration.to_dict()}
  for split in ('validation', 'test'):
    arrays = data.arrays[split]
    logits, _ = run.logits_and_loss(arrays.texts, arrays.labels)
    raw, cal = calibration.IDENTITY.probs(logits), run.calibration.probs(logits)
    out[split] = {'uncalibrated': metrics.calibration_metrics(arrays.labels, raw),
                  'calibrated': metrics.calibration_metrics(arrays.labels, cal)}
    if split == 'test':
      out['curves'] = {'uncalibrated': reliability_curve(arrays.labels, raw, metrics.ECE_BINS),
                       'calibrated': reliability_curve(arrays.labels, cal, metrics.ECE_BINS)}
  return out


def plot(results: list[dict[str, Any]], path: pathlib.Path) -> None:
  """One reliability diagram per model: observed frequency against mean probability per bin."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.2), squeeze=False)
  for ax, r in zip(axes[0], results):
    ax.plot([0, 1], [0, 1], color='0.7', lw=1, ls='--')
    for kind, style in (('uncalibrated', 'o-'), ('calibrated', 's-')):
      c = r['curves'][kind]
      keep = np.asarray(c['count']) > 0
      ece = r['test'][kind]['ece']
      ax.plot(np.asarray(c['mean_probability'])[keep], np.asarray(c['frequency'])[keep], style,
              ms=4, label=f'{kind} (ECE {ece:.3f})')
    ax.set(title=r['label'], xlabel='mean predicted probability (bin)',
           ylabel='observed frequency', xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc='upper left', fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', action='append', required=True, metavar='LABEL=WORKDIR')
  parser.add_argument('--note', default='', help='how the workdirs were made (rendered)')
  parser.add_argument('--out', default=str(REPO / 'experiments'))
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  results = [measure(*m.split('=', 1)) for m in args.model]
  (out / 'figures').mkdir(parents=True, exist_ok=True)
  plot(results, out / 'figures' / 'reliability.png')
  record = {'command': 'python -m experiments.calibration ' + ' '.join(
      f'--model "{m}"' for m in args.model), 'date': time.strftime('%Y-%m-%d'),
      'machine': report_lib.machine_info(), 'note': args.note, 'models': results}
  (out / RESULTS_FILE).write_text(json.dumps(record, indent=1))
  for r in results:
    t = r['test']
    print(f'{r["label"]}: test macro-ECE {t["uncalibrated"]["macro_ece"]:.4f} -> '
          f'{t["calibrated"]["macro_ece"]:.4f}, ECE {t["uncalibrated"]["ece"]:.4f} -> '
          f'{t["calibrated"]["ece"]:.4f}')


if __name__ == '__main__':
  main()
