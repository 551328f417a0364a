"""Ensembles of trained runs: the (weighted) mean of their probabilities, built in a workdir.

`build(workdir, members, per_genre=..., weights=...)` is the job behind
`python -m genre_jax.ensemble` (see that command for its use).

Members must share the label set, the data split and the data source; each keeps its own
tokenizer and max_length, so word-level and pretrained (WordPiece) runs can be mixed. Each member's
committed best checkpoint, `thresholds.json`, `config.json` and `report.json` are copied into
`WORKDIR/members/<k>-<name>/`, so the ensemble keeps working when the member workdirs are deleted
(a pretrained member still reads its base checkpoint, `model.pretrained_path`, when loaded).
The members' probabilities are averaged with equal weights, or (`weights='tuned'`) with the
weights of a grid on the simplex (steps of `WEIGHT_STEP`) that give the best validation micro-F1,
each at its own validation-tuned threshold. Each member's probabilities are calibrated by its own
temperature; the ensemble fits one more (`calibration`) on the combined validation probabilities.
The threshold is tuned on validation (`at_least_one` as in the first member's config), the test
split scored once, and `WORKDIR/calibration.json`, `WORKDIR/thresholds.json`,
`WORKDIR/report.json` (the trainer's keys, plus `members` and `weights`) and
`WORKDIR/ensemble.json` are written, under the workdir's lock and marker (`workdir`).
"""

from __future__ import annotations

import itertools
import json
import pathlib
import shutil
from typing import Any

import numpy as np

from genre_jax import calibration as calibration_lib
from genre_jax import checkpoint
from genre_jax import thresholds as thresholds_lib
from genre_jax import workdir as workdir_lib
from genre_jax.errors import GenreJaxError

MEMBERS_DIR, REPORT_FILE = 'members', 'report.json'
# What `inference.load_run` needs of a member (best/), and what documents it.
MEMBER_FILES = ('thresholds.json', 'calibration.json', 'config.json', 'report.json',
                checkpoint.SPLIT_FILE)
WEIGHT_STEP = 0.1  # --weights tuned: the grid spacing on the simplex.


def weight_grid(num_members: int, step: float = WEIGHT_STEP) -> np.ndarray:
  """`[K, num_members]`: every weight vector with entries in multiples of `step` summing to 1,
  equal weights first (they win ties, as the default)."""
  n = round(1 / step)
  grid = [np.full(num_members, 1 / num_members)]
  grid += [np.array(c) / n for c in itertools.product(range(n + 1), repeat=num_members)
           if sum(c) == n]
  return np.stack(grid)


def tune_weights(y_val: np.ndarray, member_probs: list[np.ndarray], *,
                 at_least_one: bool) -> tuple[np.ndarray, float]:
  """The grid weights with the best validation micro-F1 (at each one's best global threshold).

  Args:
    y_val: `[n, G]` validation labels.
    member_probs: each member's `[n, G]` validation probabilities.
    at_least_one: as the thresholds will be applied.

  Returns:
    (weights `[members]`, their validation micro-F1).
  """
  stacked = np.stack(member_probs)  # [M, n, G]
  best, best_f1 = None, -1.0
  for w in weight_grid(len(member_probs)):
    probs = np.tensordot(w, stacked, axes=1)
    f1 = float(thresholds_lib.micro_f1_curve(y_val, probs, thresholds_lib.DEFAULT_GRID,
                                             at_least_one).max())
    if f1 > best_f1 + 1e-12:
      best, best_f1 = w, f1
  return best, best_f1


def check_count(members: list[str]) -> None:
  if len(members) < 2:
    raise GenreJaxError(f'an ensemble needs at least two members, got {len(members)}: '
                        '--members RUN1 RUN2 [...].')


def check_workdir(workdir: pathlib.Path, members: list[pathlib.Path]) -> None:
  """Refuses a workdir that holds a training run, or is (or is inside) a member."""
  workdir_lib.check_kind(workdir, workdir_lib.ENSEMBLE)
  for m in members:
    if m == workdir or m in workdir.parents:
      raise GenreJaxError(f'the ensemble workdir {workdir} must not be inside member {m}.')
  seen = set()
  for m in members:
    if m in seen:
      raise GenreJaxError(f'member {m} is given twice.')
    seen.add(m)


def copy_members(workdir: pathlib.Path, members: list[pathlib.Path]) -> list[dict[str, str]]:
  """Copies each member's best checkpoint and files into `workdir/members/<k>-<name>/`.

  Returns:
    The ensemble.json member entries: 'dir' (relative to workdir) and 'source'.
  """
  tmp = workdir / (MEMBERS_DIR + '.tmp')
  shutil.rmtree(tmp, ignore_errors=True)
  entries = []
  for k, source in enumerate(members):
    name = f'{k}-{source.name}'
    best = checkpoint.RunCheckpoints(source).record['best']
    step = str(best['step'])
    shutil.copytree(source / checkpoint.BEST / step, tmp / name / checkpoint.BEST / step)
    checkpoint.RunCheckpoints(tmp / name).write_best_only(best['step'])
    for f in MEMBER_FILES:
      if (source / f).exists():
        shutil.copy2(source / f, tmp / name / f)
    entries.append({'dir': f'{MEMBERS_DIR}/{name}', 'source': str(source)})
  shutil.rmtree(workdir / MEMBERS_DIR, ignore_errors=True)
  tmp.rename(workdir / MEMBERS_DIR)
  return entries


def _member_report(run) -> dict[str, Any]:
  path = run.workdir / 'report.json'
  return json.loads(path.read_text()) if path.exists() else {}


def build(workdir: str | pathlib.Path, members: list[str], *,
          per_genre: bool = False, weights: str = 'equal') -> dict[str, Any]:
  """Builds the ensemble in `workdir` from member workdirs; returns the report it writes.

  Args:
    workdir: the ensemble's directory (created; an earlier ensemble there is replaced).
    members: two or more workdirs of trained runs (each with a `best/` checkpoint).
    per_genre: also tune per-genre thresholds on validation.
    weights: 'equal', or 'tuned' on validation (`tune_weights`).
  """
  if weights not in ('equal', 'tuned'):
    raise GenreJaxError(f'weights must be equal or tuned, got {weights!r}.')
  from genre_jax import inference

  check_count(members)
  workdir = pathlib.Path(workdir).resolve()
  sources = [pathlib.Path(m).resolve() for m in members]
  check_workdir(workdir, sources)
  runs = []
  for source in sources:
    try:
      run = inference.load_run(source)
    except GenreJaxError as e:  # E.g. no checkpoint: say which member.
      raise GenreJaxError(f'ensemble member {source}: {e}') from None
    if not isinstance(run, inference.Run):
      raise GenreJaxError(f'member {source} is an ensemble; give the runs it combines instead.')
    runs.append(run)
  inference.check_compatible(runs)
  del runs  # The ensemble is loaded again below, from its own copies.

  with (workdir_lib.open_for_writing(workdir, workdir_lib.ENSEMBLE),
        workdir_lib.disk_full_is_an_error(workdir)):
    return _build(workdir, sources, per_genre, weights)


def _build(workdir: pathlib.Path, sources: list[pathlib.Path], per_genre: bool,
           weights: str) -> dict[str, Any]:
  from genre_jax import evaluation, inference, losses
  for f in (inference.ENSEMBLE_FILE, inference.THRESHOLDS_FILE, REPORT_FILE,
            calibration_lib.FILE):
    (workdir / f).unlink(missing_ok=True)  # An earlier ensemble here is rebuilt.
  workdir_lib.write_marker(workdir, workdir_lib.ENSEMBLE)
  entries = copy_members(workdir, sources)
  spec = {'combination': 'mean', 'members': entries}
  workdir_lib.write_json(workdir / inference.ENSEMBLE_FILE, spec)
  ens = inference.load_run(workdir)  # From the copies: checks that they are complete.

  data = ens.load_data()
  val, test = data.arrays['validation'], data.arrays['test']
  classes = list(ens.labels.classes)
  member_val = ens.member_probs(val.texts, val.labels)
  if weights == 'tuned':
    w, f1 = tune_weights(val.labels, member_val, at_least_one=ens.config.threshold.at_least_one)
    spec.update(combination='weighted_mean', weights=[round(float(x), 6) for x in w],
                weights_validation_micro_f1=f1)
    workdir_lib.write_json(workdir / inference.ENSEMBLE_FILE, spec)
    ens.weights = np.asarray(spec['weights'])
    print(f'weights tuned on validation: {spec["weights"]} (micro-F1 {f1:.4f})', flush=True)
  val_logits = calibration_lib.logit(ens.combine(member_val))
  val_loss = losses.binary_cross_entropy(ens.combine(member_val), val.labels)
  ens.calibration = calibration_lib.fit(val_logits, val.labels,
                                        **calibration_lib.settings(ens.config))
  calibration_lib.write(workdir, ens.calibration, classes)
  val_probs = ens.calibration.probs(val_logits)
  thr = evaluation.tune_thresholds(val.labels, val_probs, classes,
                                   at_least_one=ens.config.threshold.at_least_one,
                                   per_genre=per_genre)
  workdir_lib.write_json(workdir / inference.THRESHOLDS_FILE, thr)
  ens.thresholds = thr

  # The test split is scored exactly once, with calibration and thresholds fixed above.
  test_logits, test_loss = ens.logits_and_loss(test.texts, test.labels)
  report = {
      **_header(ens, workdir, entries, spec.get('weights'), data),
      'calibration': ens.calibration.to_dict(),
      **evaluation.report_metrics(thr, val, val_probs, val_loss, test, test_logits, test_loss,
                                  ens.config.num_examples_to_show, ens.calibration),
  }
  workdir_lib.write_json(workdir / REPORT_FILE, report)
  print(evaluation.summary(report), flush=True)
  print('members on their own (test micro-F1 from their reports): ' + ', '.join(
      f'{m["dir"]} ' + ('?' if m['test_micro_f1'] is None else f'{m["test_micro_f1"]:.4f}')
      for m in report['members']), flush=True)
  return report


def _header(ens, workdir: pathlib.Path, entries: list[dict[str, str]],
            weights: list[float] | None, data) -> dict[str, Any]:
  """The report's keys before the metrics (as the trainer's), with each member described."""
  import jax
  from genre_jax import models
  reports = [_member_report(m) for m in ens.members]
  seeds = {m.config.seed for m in ens.members}
  seconds = [r.get('train_seconds') for r in reports]
  members = [{
      'dir': e['dir'], 'source': e['source'], 'model': m.config.model.name,
      'seed': m.config.seed, 'vocab_size': m.tokenizer.vocab_size,
      'max_length': m.config.data.max_length,
      'num_parameters': models.count_params(m.model),
      'train_seconds': r.get('train_seconds'),
      'test_micro_f1': r.get('test', {}).get('micro_f1'),  # Its own report, own threshold.
  } for e, m, r in zip(entries, ens.members, reports)]
  return {
      'model': 'ensemble', 'seed': seeds.pop() if len(seeds) == 1 else None,
      'members': members, 'weights': weights, 'workdir': str(workdir),
      'devices': [str(d) for d in jax.devices()],
      'data': {**data.report, 'split_sizes': {k: len(v.lengths) for k, v in data.arrays.items()}},
      'epochs_run': None, 'best_epoch': None,
      'train_seconds': (round(sum(seconds), 2) if all(s is not None for s in seconds)
                        else None),
      'num_parameters': sum(m['num_parameters'] for m in members),
  }
