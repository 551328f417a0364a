"""The run lifecycle behind `python -m genre_jax.train`: `train_and_evaluate(config, workdir)`.

  check the config -> open the workdir (lock, recover the last commit) -> prepare the data ->
  build or restore the state -> per epoch: train, validate, commit -> the final report.

Each step is a function below. The modules they call have one job each: `run_config` (what a
configuration may be), `workdir` (marker, lock, atomic files), `checkpoint` (the epoch's commit
protocol), `optim` (the optimizer), `train_step` (the jitted step), `calibration` (temperature
scaling), `evaluation` (thresholds, the report and its summary), `tracking` (TensorBoard).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from genre_jax import calibration as calibration_lib
from genre_jax import checkpoint
from genre_jax import distill
from genre_jax import evaluation
from genre_jax import faults
from genre_jax import inference
from genre_jax import losses
from genre_jax import metrics as metrics_lib
from genre_jax import models
from genre_jax import optim
from genre_jax import parallel
from genre_jax import run_config
from genre_jax import thresholds as thresholds_lib
from genre_jax import tracking
from genre_jax import train_step
from genre_jax import workdir as workdir_lib
from genre_jax.data import batching
from genre_jax.data import pipeline
from genre_jax.data import text as text_lib
from genre_jax.errors import GenreJaxError

METRICS_FILE, REPORT_FILE, CONFIG_FILE = checkpoint.METRICS_FILE, 'report.json', 'config.json'


@dataclasses.dataclass
class Inputs:
  """What every epoch reads: the data, its batching and the loss weights, on a mesh."""
  data: pipeline.PreparedData
  mesh: jax.sharding.Mesh
  widths: list[int] | None  # Padded widths of the length buckets (None: no bucketing).
  pos_weight: jax.Array | None  # [G], replicated.
  features: dict[str, np.ndarray] | None = None  # {split: [n, H]}: a frozen encoder's features.
  distill: distill.Targets | None = None  # Per training row: the teacher's soft targets.
  distill_report: dict[str, Any] | None = None  # The teacher, the transfer set, their times.

  def eval_kwargs(self, config) -> dict[str, Any]:
    return dict(batch_size=config.eval_batch_size, mesh=self.mesh, pos_weight=self.pos_weight,
                bucket_widths=self.widths)


@dataclasses.dataclass
class RunState:
  """The training state and the run's metadata (what `checkpoint` saves each epoch)."""
  model: models.Classifier
  optimizer: nnx.Optimizer
  ema: models.Classifier | None  # The parameters' moving average (config.ema_decay > 0).
  meta: dict[str, Any]

  @property
  def eval_model(self) -> models.Classifier:
    """What validation, the best checkpoint and the test split use."""
    return self.model if self.ema is None else self.ema


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming its last committed epoch) and reports test metrics.

  Returns:
    The report written to `workdir/report.json`.
  """
  run_config.check_config(config)
  with (workdir_lib.open_for_writing(workdir, workdir_lib.RUN, lead=parallel.is_lead()) as workdir,
        workdir_lib.disk_full_is_an_error(workdir)):
    ckpts = checkpoint.RunCheckpoints(workdir)
    saved = ckpts.recover()
    if saved is not None:
      run_config.check_resumable(saved['config'], config, workdir)
    inputs = prepare_inputs(config, saved, workdir)
    state = build_or_restore_state(config, inputs, ckpts, saved)
    start_run(config, workdir, state.meta)
    tracker = tracking.Tracker(workdir, config, first_step=state.meta['step'] + 1)
    try:
      inputs.features = frozen_features(config, state, inputs)
      while not state.meta['finished'] and state.meta['epoch'] < config.num_epochs:
        row = train_one_epoch(config, state, inputs, tracker)
        row.update(validate(config, state, inputs))
        commit_epoch(config, state, row, ckpts)
        tracker.epoch(row)
      report = final_report(config, workdir, state.model, inputs, state.meta)
      tracker.hparams(config, report)
      return report
    finally:
      tracker.close()


def prepare_inputs(config, saved: dict[str, Any] | None, workdir: pathlib.Path) -> Inputs:
  """The data (with the saved split and tokenizer when resuming), bucketing and loss weights."""
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  if saved is None:
    data = pipeline.prepare(config.data, tokenizer_factory=tokenizer_factory(config))
  else:
    tokenizer = text_lib.tokenizer_from_dict(saved['tokenizer'])
    data = pipeline.prepare(config.data, tokenizer_factory=lambda texts: tokenizer,
                            split=checkpoint.RunCheckpoints(workdir).read_split(saved))
    if data.labels.classes != saved['labels']['classes']:
      raise GenreJaxError(
          f'workdir {workdir} holds a run with label set {saved["labels"]["classes"]}, but the '
          f'data now gives {data.labels.classes}. Use a new --workdir.')
  train = data.arrays['train']
  widths = (batching.bucket_widths(train.lengths, config.data.max_length, config.data.num_buckets)
            if config.data.bucket_by_length else None)
  targets = report = None
  if distill.enabled(config):  # The training split gains the transfer set's copies.
    data.arrays['train'], targets, report = distill.attach(
        config, data, workdir, expected_key=(saved or {}).get('distill_key'))
  pw = losses.pos_weights(data.train.labels, config.pos_weight, config.pos_weight_max)
  pos_weight = None if pw is None else parallel.put_replicated(np.asarray(pw, np.float32), mesh)
  return Inputs(data, mesh, widths, pos_weight, distill=targets, distill_report=report)


def tokenizer_factory(config: ml_collections.ConfigDict):
  """How the run turns text into ids: the word vocabulary, or the pretrained model's tokenizer
  (the `pretrained` model's, or any model's with `data.tokenizer='wordpiece'`)."""
  if config.model.name == 'pretrained' or config.data.get('tokenizer', 'word') == 'wordpiece':
    from genre_jax import pretrained  # Optional dependencies (safetensors, tokenizers).
    return pretrained.tokenizer_factory(config.model, config.data)
  return None


def build_or_restore_state(config, inputs: Inputs, ckpts: checkpoint.RunCheckpoints,
                           saved: dict[str, Any] | None) -> RunState:
  """A fresh model and optimizer, or those of the last committed epoch; replicated."""
  data = inputs.data
  model = models.build_model(config, data.tokenizer, len(data.labels.classes))
  steps_per_epoch = -(-len(data.train.lengths) // config.batch_size)
  optimizer = nnx.Optimizer(
      model, optim.make_optimizer(config, steps_per_epoch, model.layer_depth), wrt=model.trainable)
  # With config.ema_decay, validation, the best checkpoint and the test split use an exponential
  # moving average of the parameters, which the train step updates after every step.
  ema = train_step.moving_average_copy(model) if config.get('ema_decay', 0.0) else None
  if saved is None:
    meta = {'config': config.to_dict(), 'tokenizer': data.tokenizer.to_dict(),
            'labels': data.labels.to_dict(), 'split_sha256': ckpts.write_split(data.split_ids),
            'data_report': data.report, 'epoch': 0, 'step': 0, 'history': [], 'best': None,
            'bad_epochs': 0, 'finished': False, 'train_seconds': 0.0}
    if inputs.distill_report is not None:  # Which soft targets the run trains on.
      meta['distill_key'] = inputs.distill_report['key']
  else:
    meta = ckpts.restore(checkpoint.LATEST, inputs.mesh, model, optimizer, ema=ema)
    meta['config'] = config.to_dict()  # Differs from the saved one in RESUMABLE fields only.
    print(f'resumed from {ckpts.workdir / checkpoint.LATEST} at epoch {meta["epoch"]} '
          f'(step {meta["step"]}).', flush=True)
  for obj in (model, optimizer) if ema is None else (model, optimizer, ema):
    parallel.replicate(obj, inputs.mesh)
  return RunState(model, optimizer, ema, meta)


def start_run(config, workdir: pathlib.Path, meta: dict[str, Any]) -> None:
  """Marks the workdir as a run and writes config.json; an earlier report and thresholds go
  when epochs remain (they describe a best epoch that may change). Lead process only."""
  if not parallel.is_lead():
    return
  workdir_lib.write_marker(workdir, workdir_lib.RUN)
  workdir_lib.write_text(workdir / CONFIG_FILE, config.to_json_best_effort(indent=1))
  if not meta['finished'] and meta['epoch'] < config.num_epochs:
    for name in (REPORT_FILE, inference.THRESHOLDS_FILE):
      (workdir / name).unlink(missing_ok=True)


def frozen_features(config, state: RunState, inputs: Inputs) -> dict[str, np.ndarray] | None:
  """With a frozen encoder, its features of the training and validation splits, computed once
  (the epochs then train the head on them); None otherwise."""
  meta = state.meta
  if not (state.model.frozen_features and config.get('cache_frozen_features', True)
          and not meta['finished'] and meta['epoch'] < config.num_epochs):
    return None
  t0 = time.time()
  train, val = inputs.data.train, inputs.data.validation
  features = {name: inference.encode_features(state.model, a.tokens, a.lengths,
                                              batch_size=config.eval_batch_size, mesh=inputs.mesh,
                                              bucket_widths=inputs.widths)
              for name, a in (('train', train), ('validation', val))}
  meta['train_seconds'] += time.time() - t0  # Part of training: counted in train_seconds.
  print(f'frozen encoder: features of {len(train.lengths)} + {len(val.lengths)} synopses '
        f'computed once in {time.time() - t0:.0f} s; the epochs train the head on them.',
        flush=True)
  return features


def train_one_epoch(config, state: RunState, inputs: Inputs,
                    tracker: tracking.Tracker) -> dict[str, Any]:
  """One pass over the shuffled training split; returns the epoch's row so far."""
  epoch, step, train = state.meta['epoch'] + 1, state.meta['step'], inputs.data.train
  t0 = time.time()
  state.model.train()
  nnx.reseed(state.model, dropout=jax.random.fold_in(jax.random.key(config.seed), epoch))
  parallel.replicate(state.model, inputs.mesh)  # The new keys, on every process's devices.
  step_fn = train_step.TrainStep(state.model, state.optimizer, state.model.trainable,
                                 ema=state.ema, ema_decay=config.get('ema_decay', 0.0))
  bar = tqdm(total=len(train.lengths), desc=f'epoch {epoch}/{config.num_epochs}', unit='ex',
             disable=not config.progress_bar, leave=False)
  pending, seen = [], []
  features = (inputs.features or {}).get('train')
  for batch in batching.batches(train, config.batch_size, shuffle=True, seed=config.seed,
                                epoch=epoch, bucket_by_length=inputs.widths is not None,
                                widths=inputs.widths, part=parallel.process_part()):
    step += 1
    faults.reached('train_step')
    batch_in = (inference.feature_batch(features, batch) if features is not None else
                {k: batch[k] for k in ('tokens', 'lengths', 'labels', 'mask')})
    if inputs.distill is not None:
      batch_in.update(distill.batch_targets(inputs.distill, batch))
    pending.append((step, step_fn(parallel.shard_batch(batch_in, inputs.mesh), inputs.pos_weight)))
    bar.update(int((batch['index'] >= 0).sum()))
    if len(pending) == 20:
      seen += _check_finite(pending, state.meta, tracker)
      pending = []
      bar.set_postfix(loss=f'{np.mean(seen[-20:]):.4f}')
  seen += _check_finite(pending, state.meta, tracker)
  step_fn.sync()
  bar.close()
  seconds = time.time() - t0
  return {'epoch': epoch, 'step': step, 'train_loss': float(np.mean(seen)),
          'epoch_seconds': round(seconds, 2),
          'examples_per_second': round(len(train.lengths) / seconds, 1)}


def _check_finite(pending, meta: dict[str, Any], tracker: tracking.Tracker) -> list[float]:
  """The losses of `pending` [(step, loss array)] as floats, logged; stops on a NaN or inf."""
  values = [float(parallel.to_host(v)) for _, v in pending]
  tracker.losses((step, v) for (step, _), v in zip(pending, values))
  for (step, _), v in zip(pending, values):
    if not np.isfinite(v):
      last = (f'epoch {meta["epoch"]} (step {meta["step"]})' if meta['epoch']
              else 'none (no epoch finished)')
      raise GenreJaxError(
          f'training loss became {v} at step {step}; stopping. Last good checkpoint: {last}. '
          'Lower the learning rate, enable gradient clipping (--config.grad_clip_norm=1.0) or '
          'check the data.')
  return values


def validate(config, state: RunState, inputs: Inputs) -> dict[str, Any]:
  """Validation loss and metrics (at the epoch's tuned threshold), and the training curve's
  point: the first `config.train_eval_examples` training rows scored the same way."""
  val, kw, features = inputs.data.validation, inputs.eval_kwargs(config), inputs.features or {}
  probs, loss = inference.predict_probs(state.eval_model, val.tokens, val.lengths, val.labels,
                                        **kw, features=features.get('validation'))
  metrics = evaluation.epoch_metrics(val.labels, probs, config.threshold.at_least_one)
  row = {'val_loss': loss, **{f'val_{k}': v for k, v in metrics.items()}}
  train = inputs.data.train
  n = min(config.get('train_eval_examples', 0), len(train.lengths))
  if n:
    train_features = features.get('train')
    probs, loss = inference.predict_probs(
        state.eval_model, train.tokens[:n], train.lengths[:n], train.labels[:n], **kw,
        features=None if train_features is None else train_features[:n])
    pred = thresholds_lib.apply(probs, metrics['threshold'], config.threshold.at_least_one)
    row.update(train_eval_loss=loss, train_micro_f1=metrics_lib.multilabel_metrics(
        train.labels[:n], pred)['micro_f1'])
  return row


def commit_epoch(config, state: RunState, row: dict[str, Any],
                 ckpts: checkpoint.RunCheckpoints) -> None:
  """Early-stopping bookkeeping, then the epoch's checkpoints, metrics line and best epoch made
  current in one commit (`checkpoint.RunCheckpoints.commit_epoch`)."""
  meta, metric = state.meta, config.early_stopping_metric
  score = row['val_loss' if metric == 'loss' else f'val_{metric}']
  best = meta['best']
  improved = best is None or (score < best['score'] if metric == 'loss' else
                              score > best['score'])
  meta.update(epoch=row['epoch'], step=row['step'], history=meta['history'] + [row],
              train_seconds=meta['train_seconds'] + row['epoch_seconds'])
  if improved:
    meta.update(best={'epoch': row['epoch'], 'step': row['step'], 'score': score}, bad_epochs=0)
  else:
    meta['bad_epochs'] += 1
  patience = config.early_stopping_patience
  meta['finished'] = bool(patience and meta['bad_epochs'] >= patience)
  ckpts.commit_epoch(meta, state.model, state.optimizer, ema=state.ema,
                     best=state.eval_model if improved else None)
  logging.info('epoch %d: %s', row['epoch'], row)
  print(f'epoch {row["epoch"]}: train_loss {row["train_loss"]:.4f}  val_loss '
        f'{row["val_loss"]:.4f}  val_micro_f1 {row["val_micro_f1"]:.4f} (threshold '
        f'{row["val_threshold"]:.2f})  {row["examples_per_second"]:.0f} ex/s', flush=True)
  if meta['finished']:
    print(f'early stopping: no improvement of {metric} for {patience} epochs; best epoch '
          f'{meta["best"]["epoch"]}.', flush=True)


def final_report(config, workdir: pathlib.Path, model: models.Classifier, inputs: Inputs,
                 meta: dict[str, Any]) -> dict[str, Any]:
  """Restores the best epoch, fits the calibration and tunes thresholds on validation, then
  scores the test split once."""
  checkpoint.RunCheckpoints(workdir).restore(checkpoint.BEST, inputs.mesh, model)
  data, kw = inputs.data, inputs.eval_kwargs(config)
  val, test = data.validation, data.test
  classes = list(data.labels.classes)
  val_logits, val_loss = inference.predict_logits(model, val.tokens, val.lengths, val.labels, **kw)
  calib = calibration_lib.fit(val_logits, val.labels, **calibration_lib.settings(config))
  val_probs = calib.probs(val_logits)
  thr = evaluation.tune_thresholds(val.labels, val_probs, classes,
                                   at_least_one=config.threshold.at_least_one,
                                   per_genre=config.threshold.per_genre)
  if parallel.is_lead():
    calibration_lib.write(workdir, calib, classes)
    faults.reached('calibration_written')
    workdir_lib.write_json(workdir / inference.THRESHOLDS_FILE, thr)
    faults.reached('thresholds_written')
  # The test split is scored exactly once, with calibration and thresholds fixed above.
  test_logits, test_loss = inference.predict_logits(model, test.tokens, test.lengths,
                                                    test.labels, **kw)
  report = {
      'model': config.model.name, 'seed': config.seed, 'workdir': str(workdir),
      'devices': [str(d) for d in jax.devices()],
      'data': {**data.report, 'split_sizes': {k: len(v) for k, v in data.split.items()}},
      'epochs_run': meta['epoch'], 'best_epoch': meta['best']['epoch'],
      'train_seconds': round(meta['train_seconds'], 2),
      'num_parameters': models.count_params(model), 'calibration': calib.to_dict(),
      **({'distill': inputs.distill_report} if inputs.distill_report else {}),
      **evaluation.report_metrics(thr, val, val_probs, val_loss, test, test_logits, test_loss,
                                  config.num_examples_to_show, calib),
  }
  if parallel.is_lead():
    workdir_lib.write_json(workdir / REPORT_FILE, report)
    faults.reached('report_written')
  print(evaluation.summary(report), flush=True)
  return report
