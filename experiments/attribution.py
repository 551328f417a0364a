"""Attribution checks on real data: completeness and faithfulness of `genre_jax.explain`.

For each `--model LABEL=WORKDIR` (a run or an ensemble):
- steps: the completeness error (|sum of attributions - (logit - baseline logit)| relative to
  |logit - baseline logit|) of the predicted genres of `--study_texts` VALIDATION synopses at each
  of `--study_steps` points per path segment, with the adaptive halving of segments and with one
  segment only (how `attribution.DEFAULT_STEPS` and the adaptive quadrature were chosen);
- completeness: the same on the TEST split at the defaults (mean, median, 95th percentile, max,
  how many genre decisions exceed 1%, and the error in logits and relative to sum |a|);
- comprehensiveness (ERASER, DeYoung et al. 2020): for every predicted genre of every test
  synopsis, the drop of the genre's calibrated probability when the k words with the largest
  attributions are deleted, against deleting k words drawn at random (`--draws` draws, seed
  `--seed`) among the words the model sees, k = 1, 3, 5 (pairs with no more than k such words
  are left out of that k); the mean over the pairs.
`--subsample LABEL=N` attributes N test synopses drawn with the seed instead of all (slow
models). Writes experiments/attribution_results.json (`--append` keeps the other models' entries)
and, with `--figure_model WORKDIR`, experiments/figures/attributions.png: RESULTS.md's example
predictions (the first test synopses) with each predicted genre's words highlighted.
`section(results)` renders the RESULTS.md section.

  python -m experiments.attribution --model "Tuned CNN=runs/cnn" --model "Tuned LSTM=runs/lstm"
  python -m experiments.attribution --append --model "Fine-tuned MiniLM=runs/minilm" \\
      --subsample "Fine-tuned MiniLM=200" --study_texts 20
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import sys
import time
from typing import Any

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS_FILE = 'attribution_results.json'
FIGURE = 'attributions.png'
KS = (1, 3, 5)
TARGET_COMPLETENESS = 0.01
TARGET_RATIO = 2.0  # Comprehensiveness at k = 3 against the random deletion of 3 words.


def _sample(n: int, size: int | None, seed: int) -> np.ndarray:
  """Sorted indices of `size` of n items drawn with `seed` (all of them when size is None)."""
  if size is None or size >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def completeness_stats(records: list[dict]) -> dict[str, float]:
  """Summary of the completeness errors of every (synopsis, genre) of `records`: relative to
  |logit - baseline logit| (the records' `completeness_error`), and, as the relative error grows
  without bound where the attributions cancel out (logit close to the baseline's), the absolute
  error (logits) and the error relative to the attributions' total size, sum |a|."""
  genres = [g for r in records for g in r['genres'].values()]
  errors = np.array([g['completeness_error'] for g in genres])
  absolute = np.array([abs(sum(g['attributions']) - (g['logit'] - g['baseline_logit']))
                       for g in genres])
  mass = np.array([max(sum(map(abs, g['attributions'])), 1e-6) for g in genres])
  return {'pairs': int(errors.size), 'mean': float(errors.mean()),
          'median': float(np.median(errors)), 'p95': float(np.percentile(errors, 95)),
          'max': float(errors.max()), 'over_1pct': int((errors > TARGET_COMPLETENESS).sum()),
          'max_absolute': float(absolute.max()), 'max_of_mass': float((absolute / mass).max())}


def seen_words(run, texts: list[str]) -> list[np.ndarray]:
  """Per text, the indices of its whitespace words that some member of `run` sees (has a token
  of within its max_length)."""
  from genre_jax import attribution
  spans = [attribution.word_spans(t) for t in texts]
  enc = attribution.Explainer(run).encode(texts, spans)
  return [np.unique(np.concatenate([o[i][o[i] >= 0] for o in enc.owners]))
          for i in range(len(texts))]


def comprehensiveness(run, records: list[dict], ks=KS, draws: int = 3,
                      seed: int = 0) -> dict[str, dict[str, float]]:
  """Mean drop of each predicted genre's probability when its top-k attributed words are deleted,
  and when k random seen words are (see the module docstring)."""
  classes = list(run.labels.classes)
  rng = np.random.default_rng(seed)
  seen = seen_words(run, [r['text'] for r in records])
  texts, jobs = [], []  # jobs: (record, genre, k, kind, index of the text).
  for i, r in enumerate(records):
    words = r['words']
    texts.append(' '.join(words))
    original = len(texts) - 1
    for name, g in r['genres'].items():
      a = np.asarray(g['attributions'])
      ranked = seen[i][np.argsort(-a[seen[i]], kind='stable')]
      for k in ks:
        if len(seen[i]) <= k:
          continue
        deletions = [('top', ranked[:k])] + [
            ('random', rng.choice(seen[i], k, replace=False)) for _ in range(draws)]
        for kind, drop in deletions:
          gone = set(drop.tolist())
          texts.append(' '.join(w for j, w in enumerate(words) if j not in gone))
          jobs.append((original, classes.index(name), k, kind, len(texts) - 1))
  probs = run.probs(texts)
  out = {}
  for k in ks:
    drops = {kind: [probs[o, g] - probs[t, g] for o, g, kk, kd, t in jobs if kk == k and kd == kind]
             for kind in ('top', 'random')}
    top, rand = float(np.mean(drops['top'])), float(np.mean(drops['random']))
    out[str(k)] = {'pairs': len(drops['top']), 'top': top, 'random': rand,
                   'ratio': top / rand if rand > 0 else None,  # None: random deletion raises it.
                   'met': top >= TARGET_RATIO * rand}
  return out


def _timed_stats(run, texts: list[str], **kwargs) -> tuple[list[dict], dict[str, float]]:
  """`attribution.explain(run, texts, **kwargs)`, its `completeness_stats`, the mean number of
  path segments and the seconds per synopsis."""
  from genre_jax import attribution
  start = time.perf_counter()
  records = attribution.explain(run, texts, **kwargs)
  seconds = (time.perf_counter() - start) / len(texts)
  segments = float(np.mean([r['segments'] for r in records]))
  return records, {**completeness_stats(records), 'segments': segments,
                   'seconds_per_synopsis': seconds}


def measure(label: str, workdir: str, *, study_steps: list[int], study_texts: int,
            subsample: int | None, draws: int, seed: int) -> dict[str, Any]:
  """Every figure of one model (see the module docstring)."""
  from genre_jax import attribution, inference
  run = inference.load_run(workdir)
  data = run.load_data(encode=('validation', 'test'))
  val = data.validation.texts
  val = [val[i] for i in _sample(len(val), study_texts, seed)]
  study = {'adaptive': {}, 'plain': {}}  # Plain: one segment, `steps` points.
  for steps in study_steps:
    for kind, segments in (('adaptive', attribution.MAX_SEGMENTS), ('plain', 1)):
      study[kind][str(steps)] = _timed_stats(run, val, steps=steps, max_segments=segments)[1]
      print(f'{label}: {kind}, {steps} steps, validation: {study[kind][str(steps)]}', flush=True)
  rows = _sample(len(data.test.texts), subsample, seed)
  records, stats = _timed_stats(run, [data.test.texts[i] for i in rows])
  out = {'label': label, 'workdir': str(workdir),
         'model': 'ensemble' if hasattr(run, 'members') else run.config.model.name,
         'test_texts': len(rows), 'test_split_size': len(data.test.texts),
         'subsample_seed': seed if len(rows) < len(data.test.texts) else None,
         'steps': attribution.DEFAULT_STEPS, 'tolerance': attribution.TOLERANCE,
         'max_segments': attribution.MAX_SEGMENTS,
         'study': {'split': 'validation', 'texts': len(val), 'completeness': study},
         'completeness': stats,
         'comprehensiveness': comprehensiveness(run, records, draws=draws, seed=seed)}
  print(f'{label}: test completeness {out["completeness"]}\n{label}: comprehensiveness '
        f'{out["comprehensiveness"]}', flush=True)
  return out


# ---- The figure ----------------------------------------------------------------------------------

def _layout(records: list[dict], ids: list[str], originals: list[list[str]], genres: int,
            width: int) -> list[tuple[str, Any]]:
  """Lines to draw: ('head', text) or ('words', [(word, attribution, scale)]) per wrapped line of
  at most `width` characters, the label of a genre row first."""
  lines = []
  for r, id_, original in zip(records, ids, originals):
    lines.append(('head', f'{id_} (original genres: {", ".join(original)})'))
    chosen = list(r['genres'].items())[:genres]
    scale = max((abs(a) for _, g in chosen for a in g['attributions']), default=0.0)
    for name, g in chosen:
      line, used = [(f'{name} {g["probability"]:.2f}:', 0.0, 0.0)], 0
      for w, a in zip(r['words'], g['attributions']):
        if used + len(w) + 1 > width:
          lines.append(('words', line))
          line, used = [('', 0.0, 0.0)], 0
        line.append((w, a, scale))
        used += len(w) + 1
      lines.append(('words', line))
    lines.append(('gap', None))
  return lines


def plot_examples(records: list[dict], ids: list[str], originals: list[list[str]], label: str,
                  path: pathlib.Path, genres: int = 3, width: int = 112) -> None:
  """The synopses with each of their (first `genres`) predicted genres' words highlighted: green
  raises the genre's probability, red lowers it, strength relative to the synopsis's largest."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from genre_jax import explain_html
  lines = _layout(records, ids, originals, genres, width)
  char, height, label_chars = 0.0063, 0.24, 22  # Monospace: axes fraction per char, inch per line.
  fig = plt.figure(figsize=(13, height * (len(lines) + 3)))
  ax = fig.add_axes((0.01, 0.0, 0.98, 1.0))
  ax.set_axis_off()
  step = 1 / (len(lines) + 3)
  ax.text(0, 1 - step, label, fontsize=11, weight='bold', va='center')
  ax.text(0, 1 - 2 * step, 'Integrated gradients of each predicted genre\'s calibrated logit: '
          'green words raise it, red words lower it.', fontsize=10, va='center')
  for row, (kind, content) in enumerate(lines, start=3):
    y = 1 - row * step
    if kind == 'head':
      ax.text(0, y, content, fontsize=10, weight='bold', va='center')
    elif kind == 'words':
      x = 0.0
      for i, (w, a, scale) in enumerate(content):
        if i == 0:  # The genre label column.
          ax.text(x, y, w, fontsize=9, family='monospace', va='center', color='0.25')
          x = label_chars * char
          continue
        rgb = explain_html.POSITIVE if a >= 0 else explain_html.NEGATIVE
        alpha = 0.85 * min(abs(a) / scale, 1.0) if scale > 0 else 0.0
        ax.text(x, y, w, fontsize=9, family='monospace', va='center',
                bbox={'facecolor': tuple(c / 255 for c in rgb) + (alpha,), 'edgecolor': 'none',
                      'pad': 1.2})
        x += (len(w) + 1) * char
  fig.savefig(path, dpi=110)
  plt.close(fig)


def figure(workdir: str, label: str, path: pathlib.Path, count: int = 5) -> dict[str, Any]:
  """`plot_examples` of the first `count` test synopses (RESULTS.md's example predictions)."""
  from genre_jax import attribution, inference
  run = inference.load_run(workdir)
  data = run.load_data(encode=('test',))
  texts, ids = list(data.test.texts[:count]), list(data.test.ids[:count])
  originals = run.labels.inverse_transform(data.test.labels[:count])
  records = attribution.explain(run, texts)
  plot_examples(records, ids, originals, label, path)
  return {'workdir': str(workdir), 'label': label, 'ids': ids,
          'completeness': completeness_stats(records)}


# ---- RESULTS.md ----------------------------------------------------------------------------------

def _met(ok: bool) -> str:
  return '**met**' if ok else '**NOT met**'


def _ratio(comp: dict) -> str:
  return (f'{comp["ratio"]:.1f}×' if comp['ratio'] is not None else
          'random deletion raises the probability')


def section(results: dict[str, Any] | None) -> list[str]:
  """RESULTS.md's attribution section (markdown lines) from attribution_results.json."""
  if not results or not results.get('models'):
    return []
  models = results['models']
  steps = models[0]['steps']
  md = ['## Why a genre: word attributions', '',
        'Integrated gradients of each genre\'s calibrated logit with respect to the word '
        'embeddings, from a baseline of padding at every word (`python -m genre_jax.explain`, '
        'adaptive composite Gauss-Legendre quadrature); an ensemble\'s along the joint path of its '
        'members\' embeddings. Completeness error: |sum of the attributions - (logit - baseline '
        'logit)| / |logit - baseline logit|, over every predicted genre of every test synopsis. '
        'Comprehensiveness (ERASER): the mean drop of a predicted genre\'s probability when its '
        'k most attributed words are deleted, against k random words the model sees '
        f'({results["draws"]} draws, seed {results["seed"]}). Machine: '
        f'{results["machine"]["cpu"]}, {results["machine"]["cores"]} cores.', '',
        '| model | test synopses | genre decisions | completeness error: mean / median / p95 / '
        'max | > 1% | segments, s per synopsis | drop k=1: top / random | k=3 | k=5 | k=3 ratio |',
        '|---|---:|---:|---|---:|---|---|---|---|---:|']
  for m in models:
    c, comp = m['completeness'], m['comprehensiveness']
    n = f'{m["test_texts"]}' + ('' if m['subsample_seed'] is None else
                                f' of {m["test_split_size"]} (seed {m["subsample_seed"]})')
    drops = [f'{comp[str(k)]["top"]:.3f} / {comp[str(k)]["random"]:.3f}' for k in KS]
    md.append(f'| {m["label"]} | {n} | {c["pairs"]} | {c["mean"]:.2e} / {c["median"]:.2e} / '
              f'{c["p95"]:.2e} / {c["max"]:.2e} | {c["over_1pct"]} | {c["segments"]:.1f}, '
              f'{c["seconds_per_synopsis"]:.2f} | ' + ' | '.join(drops)
              + f' | {_ratio(comp["3"])} |')
  md.append('')
  for m in models:
    c, k3 = m['completeness'], m['comprehensiveness']['3']
    md.append(f'- {m["label"]}: completeness error < 1%: '
              f'{_met(c["mean"] < TARGET_COMPLETENESS)} for the mean ({c["mean"]:.2e}), '
              f'{_met(c["max"] < TARGET_COMPLETENESS)} for every decision (max {c["max"]:.2e}, '
              f'{c["over_1pct"]} of {c["pairs"]} above 1%; at most {c["max_absolute"]:.3f} '
              f'logits, {c["max_of_mass"]:.2%} of sum |a|); comprehensiveness at k=3 ≥ '
              f'{TARGET_RATIO:.0f}× random: {_met(k3["met"])} ({_ratio(k3)}). Load average '
              f'when it started: {m["load_average"]["start"][0]:.1f} (other jobs shared the '
              'machine; the seconds are wall time).')
  grid = sorted({int(s) for m in models for s in m['study']['completeness']['adaptive']})
  md += ['', f'The defaults ({steps} points per path segment, halving the worst segments while '
         f'the error exceeds {models[0]["tolerance"]:.1%}, at most {models[0]["max_segments"]} '
         'segments), chosen on validation synopses: completeness error (mean / max) of their '
         'predicted genres by points per segment, adaptive (mean segments used) and on one '
         'segment:', '',
         '| model | synopses | ' + ' | '.join(f'{k} adaptive | {k} plain' for k in grid) + ' |',
         '|---|---:|' + '---|' * (2 * len(grid))]
  for m in models:
    s = m['study']['completeness']
    cells = []
    for k in grid:
      a, p = s['adaptive'].get(str(k)), s['plain'].get(str(k))
      cells.append(f'{a["mean"]:.1e} / {a["max"]:.1e} ({a["segments"]:.1f})' if a else '-')
      cells.append(f'{p["mean"]:.1e} / {p["max"]:.1e}' if p else '-')
    md.append(f'| {m["label"]} | {m["study"]["texts"]} | ' + ' | '.join(cells) + ' |')
  fig = results.get('figure')
  if fig:
    md += ['', f'The example predictions above explained by {fig["label"]} (the first test '
           'synopses; up to three predicted genres each, most probable first):', '',
           f'![attributions](figures/{FIGURE})']
  return md + ['', 'Commands: ' + '; '.join(sorted({f'`{m["command"]}`' for m in models}))
               + '.', '']


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', action='append', default=[], metavar='LABEL=WORKDIR')
  parser.add_argument('--subsample', action='append', default=[], metavar='LABEL=N')
  parser.add_argument('--study_steps', type=int, nargs='+', default=[8, 16, 32, 64])
  parser.add_argument('--study_texts', type=int, default=100)
  parser.add_argument('--draws', type=int, default=3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--append', action='store_true', help='keep the other models\' entries')
  parser.add_argument('--figure_model', default=None, metavar='WORKDIR')
  parser.add_argument('--figure_label', default=None)
  parser.add_argument('--out', default=str(REPO / 'experiments'))
  args = parser.parse_args(argv)
  from experiments import report as report_lib
  from genre_jax import host, inference
  host.keep_freed_memory()
  inference.enable_compilation_cache()
  from genre_jax import workdir as workdir_lib
  out = pathlib.Path(args.out)
  (out / 'figures').mkdir(parents=True, exist_ok=True)
  path = out / RESULTS_FILE
  record = json.loads(path.read_text()) if args.append and path.exists() else {'models': []}
  command = 'python -m experiments.attribution ' + shlex.join(sys.argv[1:] if argv is None
                                                               else argv)

  def save():  # After each model: a crash keeps what was measured.
    record.update(date=time.strftime('%Y-%m-%d'), machine=report_lib.machine_info(),
                  seed=args.seed, draws=args.draws, ks=list(KS))
    workdir_lib.write_json(path, record)

  if args.figure_model:
    record['figure'] = {**figure(args.figure_model, args.figure_label or args.figure_model,
                                 out / 'figures' / FIGURE), 'command': command}
    save()
  subsample = {k: int(v) for k, v in (s.split('=', 1) for s in args.subsample)}
  for spec in args.model:
    label, workdir = spec.split('=', 1)
    load = os.getloadavg()
    entry = {**measure(label, workdir, study_steps=args.study_steps,
                       study_texts=args.study_texts, subsample=subsample.get(label),
                       draws=args.draws, seed=args.seed),
             'command': command, 'load_average': {'start': load, 'end': os.getloadavg()}}
    record['models'] = [m for m in record['models'] if m['label'] != label] + [entry]
    save()
  print('\n'.join(section(record)))

if __name__ == '__main__':
  main()
