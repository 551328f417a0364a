"""TensorBoard tracking of a run, in `WORKDIR/tensorboard` (`tensorboard --logdir runs`).

  tracker = tracking.Tracker(workdir, config, first_step=meta['step'] + 1)
  tracker.losses([(step, loss), ...])   # every config.log_every_steps-th step: train/loss
  tracker.epoch(row)                    # each metrics line: val/..., train/..., epoch/...
  tracker.hparams(config, report)       # the flattened config beside the final metrics
  tracker.close()

Only process 0 writes (`jax.process_index() == 0`); the others get a tracker that does nothing.
A resumed run starts its writer at the first uncommitted step (`purge_step`), so TensorBoard
drops what a killed process logged after the last committed epoch.
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterable

import jax

from genre_jax import run_config

DIRECTORY = 'tensorboard'
_TAGS = {'train_loss': 'train/epoch_mean_loss'}  # train/loss is the per-step loss.


def _tag(key: str) -> str:
  """'val_micro_f1' -> 'val/micro_f1', 'train_eval_loss' -> 'train/eval_loss', else 'epoch/KEY'."""
  group, _, name = key.partition('_')
  return f'{group}/{name}' if group in ('val', 'train') and name else f'epoch/{key}'


class Tracker:
  """Writes a run's training loss, epoch metrics and hyperparameters for TensorBoard."""

  def __init__(self, workdir: pathlib.Path, config, *, first_step: int):
    self.every = int(config.get('log_every_steps', 0))
    self._writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # Imported on use: protobuf takes a moment.
      self._writer = SummaryWriter(str(workdir / DIRECTORY), purge_step=first_step)

  def losses(self, steps_and_losses: Iterable[tuple[int, float]]) -> None:
    """The training loss of every `log_every_steps`-th step (0: none)."""
    if self._writer is None or not self.every:
      return
    for step, loss in steps_and_losses:
      if step % self.every == 0:
        self._writer.add_scalar('train/loss', loss, step)

  def epoch(self, row: dict[str, Any]) -> None:
    """One metrics.jsonl line at its last step; flushed, so TensorBoard shows it at once."""
    if self._writer is None:
      return
    for key, value in row.items():
      if key in ('epoch', 'step') or not isinstance(value, (int, float)):
        continue
      self._writer.add_scalar(_TAGS.get(key) or _tag(key), value, row['step'])
    self._writer.flush()

  def hparams(self, config, report: dict[str, Any]) -> None:
    """The flattened config beside the final validation and test metrics (HParams tab)."""
    if self._writer is None:
      return
    values = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
              for k, v in run_config.flatten(config).items()}
    metrics = {f'hparam/{split}_{k}': float(report[split][k]) for split in ('validation', 'test')
               for k in ('micro_f1', 'macro_f1', 'loss')}
    self._writer.add_hparams(values, metrics, name='hparams')

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
