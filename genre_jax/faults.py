"""Test-only fault injection: SIGKILL this process at a named point of a write protocol.

  GENRE_JAX_FAULT=POINT        kill the first time the process reaches POINT
  GENRE_JAX_FAULT=POINT:N      kill the N-th time

The points are listed in `POINTS`; the code that writes a workdir calls `reached(name)` at each.
Without the variable, `reached` is a dictionary lookup and nothing else.
"""

import collections
import os
import signal

ENV = 'GENRE_JAX_FAULT'
# In the order a run reaches them (see checkpoint.RunCheckpoints.commit_epoch and
# trainer.final_report): a distilled run's teacher scores (distill.py), a train step, then an
# epoch's commit, then the final report's files.
POINTS = (
    'distill_tmp_written',   # The teacher's scores in a temporary file, not yet renamed.
    'distill_written',       # distill_targets.npz in place; no train step yet.
    'train_step',            # Before each optimizer step (N = the global step).
    'epoch_begin_commit',    # The epoch's validation is done; nothing of it written yet.
    'epoch_best_saved',      # best/STEP written (improved epochs only).
    'epoch_latest_saved',    # checkpoints/STEP written; commit.json still names the last epoch.
    'commit_tmp_written',    # commit.json's temporary file written, not yet renamed.
    'epoch_committed',       # commit.json names this epoch.
    'epoch_metrics_written',  # metrics.jsonl rewritten from the committed history.
    'epoch_collected',       # Checkpoints of older epochs deleted.
    'calibration_written',   # Final report: calibration.json written.
    'thresholds_written',    # Final report: thresholds.json written.
    'report_written',        # Final report: report.json written.
)
_seen = collections.Counter()


def reached(point: str) -> None:
  """Kills this process here if GENRE_JAX_FAULT names `point` (and this is its N-th time)."""
  assert point in POINTS, point
  spec = os.environ.get(ENV)
  if not spec:
    return
  name, _, count = spec.partition(':')
  if name != point:
    return
  _seen[point] += 1
  if _seen[point] == int(count or 1):
    os.kill(os.getpid(), signal.SIGKILL)
