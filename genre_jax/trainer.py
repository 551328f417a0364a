"""Training loop: jitted train step, per-epoch validation, checkpoints, thresholds and the report.

`train_and_evaluate(config, workdir)` is the whole job behind `python -m genre_jax.train`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pathlib
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from genre_jax import checkpoint
from genre_jax import inference
from genre_jax import losses
from genre_jax import metrics as metrics_lib
from genre_jax import models
from genre_jax import parallel
from genre_jax import thresholds as thresholds_lib
from genre_jax.data import batching
from genre_jax.data import pipeline
from genre_jax.data import text as text_lib
from genre_jax.errors import GenreJaxError

METRICS_FILE, REPORT_FILE = 'metrics.jsonl', 'report.json'
_FAULT_ENV = 'GENRE_JAX_KILL_AT_STEP'  # Tests: SIGKILL this process just before global step N.

OPTIMIZERS = {
    'adam': lambda c, lr: optax.adam(lr),
    'adamw': lambda c, lr: optax.adamw(lr, weight_decay=c.weight_decay),
    'sgd': lambda c, lr: optax.sgd(lr, momentum=c.momentum or None),
    'rmsprop': lambda c, lr: optax.rmsprop(lr, momentum=c.momentum or None),
}


def scale_by_path(multiplier: Callable[[tuple[str, ...]], float]) -> optax.GradientTransformation:
  """Multiplies each update by `multiplier(path)`, the path of its parameter as strings (e.g.
  `('encoder', 'layers', '3', 'output', 'kernel')`); stateless. After an optimizer that ends in
  `-lr * update` (adamw: its weight decay included), this scales that parameter's learning rate."""

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * multiplier(path_names(path)), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def path_names(path: jax.tree_util.KeyPath) -> tuple[str, ...]:
  """A pytree key path as strings: `('encoder', 'layers', '3', 'output', 'kernel', ...)`."""
  return tuple(jax.tree_util.keystr(path, simple=True, separator='/').split('/'))


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                   layer_depth: Callable[[tuple[str, ...]], tuple[int, int]] | None = None
                   ) -> optax.GradientTransformation:
  """The optax optimizer named by `config.optimizer`, with schedule and optional clipping.

  With `config.layer_decay` < 1 (layer-wise learning-rate decay, as in BEiT / ELECTRA
  fine-tuning), the parameter at depth `d` of `D` (`layer_depth(path) -> (d, D)`, from the
  model; the head is at `D`) learns at `learning_rate * layer_decay ** (D - d)`.
  """
  if config.optimizer not in OPTIMIZERS:
    raise GenreJaxError(f'unknown optimizer {config.optimizer!r}; choose one of '
                        f'{sorted(OPTIMIZERS)}.')
  total = max(1, config.num_epochs * steps_per_epoch)
  warmup = int(config.warmup_epochs * steps_per_epoch)
  if config.lr_schedule == 'constant':  # A linear schedule holds its end value after warm-up.
    lr = (optax.linear_schedule(0.0, config.learning_rate, warmup) if warmup
          else config.learning_rate)
  elif config.lr_schedule == 'cosine':
    lr = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, total)
  else:
    raise GenreJaxError(f'unknown lr_schedule {config.lr_schedule!r}; use constant or cosine.')
  tx = OPTIMIZERS[config.optimizer](config, lr)
  decay = config.get('layer_decay', 1.0)
  if decay != 1.0:
    if layer_depth is None:
      raise GenreJaxError(f'config.layer_decay={decay} needs a model with layers to decay over '
                          f'(the pretrained architecture); {config.model.name!r} has none.')

    def multiplier(path):
      depth, top = layer_depth(path)
      return decay ** (top - depth)

    tx = optax.chain(tx, scale_by_path(multiplier))
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any data is read, on values that would only break later."""
  choices = {
      'model.name': (config.model.name, models.known_models()),
      'optimizer': (config.optimizer, sorted(OPTIMIZERS)),
      'lr_schedule': (config.lr_schedule, ['constant', 'cosine']),
      'pos_weight': (config.pos_weight, ['none', 'balanced', 'sqrt']),
      'early_stopping_metric': (config.early_stopping_metric,
                                ['loss', 'micro_f1', 'macro_f1', 'samples_f1', 'map']),
  }
  for field, (value, allowed) in choices.items():
    if value not in allowed:
      raise GenreJaxError(f'config.{field}={value!r} is not one of {allowed}.')
  for field in ('num_epochs', 'batch_size', 'eval_batch_size'):
    if config[field] < 1:
      raise GenreJaxError(f'config.{field} must be at least 1, got {config[field]}.')
  if not config.learning_rate > 0:
    raise GenreJaxError(f'config.learning_rate must be positive, got {config.learning_rate}.')
  if not 0.0 < config.get('layer_decay', 1.0) <= 1.0:
    raise GenreJaxError(f'config.layer_decay must be in (0, 1] (1 = off), got '
                        f'{config.layer_decay}.')
  if not 0.0 <= config.get('ema_decay', 0.0) < 1.0:
    raise GenreJaxError(f'config.ema_decay must be in [0, 1) (0 = no average), got '
                        f'{config.ema_decay}.')
  sizes = tuple(config.data.split_sizes)
  if len(sizes) != 3 or min(sizes) <= 0 or abs(sum(sizes) - 1) > 1e-6:
    raise GenreJaxError(f'config.data.split_sizes must be three positive fractions summing to 1 '
                        f'(train, validation, test), got {sizes}.')


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The averaging weight of the EMA after optimizer step `step` (1, 2, ...): `decay`, but at most
  `(1 + step) / (10 + step)`, so early averages are not dominated by the initial parameters (as
  TensorFlow's `ExponentialMovingAverage(num_updates=step)`)."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def _train_step(graphdef: nnx.GraphDef, wrt, ema_decay: float, state: nnx.State,
                batch: dict[str, jax.Array],
                pos_weight: jax.Array | None) -> tuple[jax.Array, nnx.State]:
  """One optimizer step on the split state of `(model, optimizer[, ema])`; returns (loss, new
  state). With an `ema` model, its parameters move towards the updated ones (`ema_decay_at`)."""
  objects = nnx.merge(graphdef, state)
  model, optimizer = objects[:2]

  def loss_fn(model):  # A batch of tokens, or of precomputed features (frozen encoder).
    logits = inference.logits(model, batch)
    return losses.sigmoid_bce(logits, batch['labels'], batch['mask'], pos_weight)

  loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
  optimizer.update(model, grads)
  if len(objects) == 3:
    ema = objects[2]
    decay = ema_decay_at(ema_decay, optimizer.step[...])
    nnx.update(ema, optax.incremental_update(nnx.state(model, wrt), nnx.state(ema, wrt),
                                             1.0 - decay))
  return loss, nnx.state(objects)


@functools.lru_cache(maxsize=None)
def _compiled_step(graphdef: nnx.GraphDef, wrt, ema_decay: float):
  # The state is donated: XLA updates the parameters and moments in place instead of allocating
  # fresh buffers every step (the embedding table and its Adam moments are the largest arrays).
  return jax.jit(functools.partial(_train_step, graphdef, wrt, ema_decay), donate_argnums=0)


def moving_average_copy(model: nnx.Module) -> nnx.Module:
  """A copy of `model` with arrays of its own, to hold the moving average of its parameters
  (`nnx.clone` alone shares the arrays, and the train step donates both)."""
  copy = nnx.clone(model)
  nnx.update(copy, jax.tree.map(jnp.copy, nnx.state(copy)))
  return copy


class TrainStep:
  """The jitted train step, run on the split state of a model and its optimizer.

    step = TrainStep(model, optimizer, wrt=nnx.Param)  # nnx.split once
    loss = step(batch, pos_weight)                     # one jax.jit call per step
    step.sync()                                        # state -> model and optimizer

  Each call is a plain `jax.jit` call on the state pytree: no NNX graph traversal per step, which
  `nnx.jit` would do on the way in and out. On two CPU cores that Python work competes with XLA
  for the cores (about 1-3 ms of a 15 ms CNN step); on a GPU it is most of a small model's step.
  The model and optimizer hold stale (donated) arrays until `sync()`: call it before using them.
  The step always runs the model in the mode it had when the `TrainStep` was made (train).
  With `ema` (a copy of the model, `moving_average_copy`), each step also updates its parameters
  to an exponential moving average of the model's (weight `ema_decay_at(ema_decay, step)`).

  Args (of a call):
    batch: `tokens [B, L]`, `lengths [B]`, `labels [B, G]`, `mask [B]` (or `features [B, H]`
      instead of tokens, for a frozen encoder), sharded over the mesh.
    pos_weight: `[G]` positive weights, or None.
  """

  def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer, wrt=nnx.Param, *,
               ema: nnx.Module | None = None, ema_decay: float = 0.0):
    self._objects = (model, optimizer) if ema is None else (model, optimizer, ema)
    graphdef, self.state = nnx.split(self._objects)
    self._step = _compiled_step(graphdef, wrt, float(ema_decay))

  def __call__(self, batch: dict[str, jax.Array], pos_weight: jax.Array | None) -> jax.Array:
    loss, self.state = self._step(self.state, batch, pos_weight)
    return loss

  def sync(self) -> None:
    """Writes the current state into the model and optimizer."""
    nnx.update(self._objects, self.state)


def write_json(path: pathlib.Path, obj: Any) -> None:
  """Atomic JSON write (temporary file, then rename)."""
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
  os.replace(tmp, path)


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f'not JSON serialisable: {type(x)}')


def _check_compatible(saved: dict[str, Any], config: ml_collections.ConfigDict, workdir) -> None:
  """Refuses to resume a workdir that holds a run of another architecture, data or label set."""
  old = ml_collections.ConfigDict(saved['config'])
  if old.model.name != config.model.name:
    raise GenreJaxError(
        f'workdir {workdir} holds a run of architecture {old.model.name!r}, but the config asks '
        f'for {config.model.name!r}. Use a new --workdir (or delete this one) to start afresh.')
  for field, default in (('ema_decay', 0.0), ('layer_decay', 1.0)):  # They shape the state.
    if old.get(field, default) != config.get(field, default):
      raise GenreJaxError(
          f'workdir {workdir} holds a run with {field} {old.get(field, default)}, but the config '
          f'asks for {config.get(field, default)}. Use a new --workdir (or delete this one).')
  for section in ('model', 'data'):
    a, b = old[section].to_dict(), config[section].to_dict()
    diff = sorted(k for k in set(a) | set(b)
                  if k != 'mirror' and _norm(a.get(k)) != _norm(b.get(k)))
    if diff:
      raise GenreJaxError(
          f'workdir {workdir} holds a run with a different {section} configuration '
          f'({", ".join(f"{section}.{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in diff)}).'
          ' Use a new --workdir (or delete this one) to start afresh.')


def _norm(v):
  return list(v) if isinstance(v, tuple) else v


def _epoch_metrics(y_true: np.ndarray, probs: np.ndarray, at_least_one: bool) -> dict[str, float]:
  thr = thresholds_lib.tune_global(y_true, probs, at_least_one=at_least_one)
  tuned = metrics_lib.multilabel_metrics(
      y_true, thresholds_lib.apply(probs, thr, at_least_one), probs)
  at_half = metrics_lib.multilabel_metrics(y_true, thresholds_lib.apply(probs, 0.5), None)
  out = {k: tuned[k] for k in ('micro_f1', 'macro_f1', 'samples_f1', 'micro_precision',
                               'micro_recall', 'map')}
  out['threshold'] = thr
  out['micro_f1@0.5'] = at_half['micro_f1']
  return out


def _train_subset_metrics(model, train, config, threshold: float, kw,
                          features: np.ndarray | None = None) -> dict[str, float]:
  """Loss and micro-F1 (at the epoch's validation-tuned threshold) of the first
  `config.train_eval_examples` training examples in evaluation mode: the training curve beside
  the validation one, without the cost of re-scoring the whole training split."""
  n = min(config.get('train_eval_examples', 0), len(train.lengths))
  if not n:
    return {}
  probs, loss = inference.predict_probs(model, train.tokens[:n], train.lengths[:n],
                                        train.labels[:n], **kw,
                                        features=None if features is None else features[:n])
  pred = thresholds_lib.apply(probs, threshold, config.threshold.at_least_one)
  return {'train_eval_loss': loss,
          'train_micro_f1': metrics_lib.multilabel_metrics(train.labels[:n], pred)['micro_f1']}


def _examples(arrays, probs, y_pred, classes, k: int) -> list[dict[str, Any]]:
  out = []
  for i in range(min(k, len(arrays.texts))):
    order = np.argsort(-probs[i])
    out.append({
        'id': arrays.ids[i],
        'synopsis': arrays.texts[i],
        'original': [classes[j] for j in np.flatnonzero(arrays.labels[i])],
        'predicted': [classes[j] for j in order if y_pred[i, j]],
        'probabilities': {classes[j]: round(float(probs[i, j]), 3) for j in order[:5]},
    })
  return out


def _tensorboard_writer(workdir: pathlib.Path):
  try:
    from tensorboardX import SummaryWriter  # Optional.
  except ImportError:
    return None
  return SummaryWriter(str(workdir / 'tensorboard'))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint) and reports test metrics.

  Returns:
    The report written to `workdir/report.json`.
  """
  check_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ckpts = checkpoint.RunCheckpoints(workdir)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')

  # ---- Data: reuse the saved split and tokenizer when resuming. ------------------------------
  saved = ckpts.read_meta(checkpoint.LATEST) if ckpts.exists(checkpoint.LATEST) else None
  if saved is not None:
    _check_compatible(saved, config, workdir)
    tokenizer = text_lib.tokenizer_from_dict(saved['tokenizer'])
    data = pipeline.prepare(config.data, tokenizer_factory=lambda texts: tokenizer,
                            split=saved['split'])
    if data.labels.classes != saved['labels']['classes']:
      raise GenreJaxError(
          f'workdir {workdir} holds a run with label set {saved["labels"]["classes"]}, but the '
          f'data now gives {data.labels.classes}. Use a new --workdir.')
  else:
    data = pipeline.prepare(config.data, tokenizer_factory=tokenizer_factory(config))
  train, val = data.arrays['train'], data.arrays['validation']
  classes = list(data.labels.classes)
  widths = (batching.bucket_widths(train.lengths, config.data.max_length, config.data.num_buckets)
            if config.data.bucket_by_length else None)
  steps_per_epoch = -(-len(train.lengths) // config.batch_size)
  pw = losses.pos_weights(train.labels, config.pos_weight, config.pos_weight_max)
  pos_weight = None if pw is None else jax.device_put(
      np.asarray(pw, np.float32), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

  # ---- Model and optimizer. -----------------------------------------------------------------
  model = inference.build_model(config, data.tokenizer, len(classes))
  wrt = getattr(model, 'trainable', nnx.Param)
  optimizer = nnx.Optimizer(
      model, make_optimizer(config, steps_per_epoch, getattr(model, 'layer_depth', None)),
      wrt=wrt)
  # With config.ema_decay, validation, the best checkpoint and the test split use an exponential
  # moving average of the parameters (`ema`), which the train step updates after every step.
  ema_decay = config.get('ema_decay', 0.0)
  ema = moving_average_copy(model) if ema_decay else None
  eval_model = model if ema is None else ema
  meta = {
      'config': config.to_dict(), 'tokenizer': data.tokenizer.to_dict(),
      'labels': data.labels.to_dict(), 'split': data.split_ids,
      'data_report': data.report, 'epoch': 0, 'step': 0, 'history': [], 'best': None,
      'bad_epochs': 0, 'finished': False, 'train_seconds': 0.0,
  }
  if saved is not None:
    meta = ckpts.restore(checkpoint.LATEST, model, optimizer, ema=ema)
    print(f'resumed from {workdir / checkpoint.LATEST} at epoch {meta["epoch"]} '
          f'(step {meta["step"]}).', flush=True)
  for obj in (model, optimizer) if ema is None else (model, optimizer, ema):
    parallel.replicate(obj, mesh)
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=1))
  # metrics.jsonl is rewritten from the checkpoint's history, so a resumed run has no stray lines.
  with open(workdir / METRICS_FILE, 'w') as f:
    for row in meta['history']:
      f.write(json.dumps(row) + '\n')
  writer = _tensorboard_writer(workdir)

  features = None  # {split: [n, H]} when the model's features are frozen (computed once).
  if (getattr(model, 'frozen_features', False) and config.get('cache_frozen_features', True)
      and not meta['finished'] and meta['epoch'] < config.num_epochs):
    t0 = time.time()
    features = {name: inference.encode_features(model, a.tokens, a.lengths,
                                                batch_size=config.eval_batch_size, mesh=mesh,
                                                bucket_widths=widths)
                for name, a in (('train', train), ('validation', val))}
    meta['train_seconds'] += time.time() - t0  # Part of training: counted in train_seconds.
    print(f'frozen encoder: features of {len(train.lengths)} + {len(val.lengths)} synopses '
          f'computed once in {time.time() - t0:.0f} s; the epochs train the head on them.',
          flush=True)

  higher_is_better = config.early_stopping_metric != 'loss'
  kill_at = int(os.environ.get(_FAULT_ENV, '0'))
  step = meta['step']
  while not meta['finished'] and meta['epoch'] < config.num_epochs:
    epoch = meta['epoch'] + 1
    t0 = time.time()
    model.train()
    nnx.reseed(model, dropout=jax.random.fold_in(jax.random.key(config.seed), epoch))
    train_step = TrainStep(model, optimizer, wrt, ema=ema, ema_decay=ema_decay)
    bar = tqdm(total=len(train.lengths), desc=f'epoch {epoch}/{config.num_epochs}', unit='ex',
               disable=not config.progress_bar, leave=False)
    pending, losses_seen = [], []
    for batch in batching.batches(train, config.batch_size, shuffle=True, seed=config.seed,
                                  epoch=epoch, bucket_by_length=widths is not None, widths=widths):
      step += 1
      if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
      inputs = (inference.feature_batch(features['train'], batch) if features else
                {k: batch[k] for k in ('tokens', 'lengths', 'labels', 'mask')})
      pending.append((step, train_step(parallel.shard_batch(inputs, mesh), pos_weight)))
      bar.update(int(batch['mask'].sum()))
      if len(pending) == 20:
        losses_seen += _check_finite(pending, meta, workdir)
        pending = []
        bar.set_postfix(loss=f'{np.mean(losses_seen[-20:]):.4f}')
    losses_seen += _check_finite(pending, meta, workdir)
    train_step.sync()
    bar.close()
    train_seconds = time.time() - t0

    kw = dict(batch_size=config.eval_batch_size, mesh=mesh, pos_weight=pos_weight,
              bucket_widths=widths)
    val_probs, val_loss = inference.predict_probs(
        eval_model, val.tokens, val.lengths, val.labels, **kw,
        features=features['validation'] if features else None)
    val_metrics = _epoch_metrics(val.labels, val_probs, config.threshold.at_least_one)
    row = {'epoch': epoch, 'step': step, 'train_loss': float(np.mean(losses_seen)),
           'val_loss': val_loss, **{f'val_{k}': v for k, v in val_metrics.items()},
           **_train_subset_metrics(eval_model, train, config, val_metrics['threshold'], kw,
                                   features['train'] if features else None),
           'epoch_seconds': round(train_seconds, 2),
           'examples_per_second': round(len(train.lengths) / train_seconds, 1)}
    score = row['val_loss' if not higher_is_better else f'val_{config.early_stopping_metric}']
    best = meta['best']
    improved = best is None or (score > best['score'] if higher_is_better else
                                score < best['score'])
    meta.update(epoch=epoch, step=step, history=meta['history'] + [row],
                train_seconds=meta['train_seconds'] + train_seconds)
    if improved:
      meta['best'] = {'epoch': epoch, 'step': step, 'score': score}
      meta['bad_epochs'] = 0
      ckpts.save(checkpoint.BEST, step, eval_model, meta)
    else:
      meta['bad_epochs'] += 1
    patience = config.early_stopping_patience
    meta['finished'] = bool(patience and meta['bad_epochs'] >= patience)
    ckpts.save(checkpoint.LATEST, step, model, meta, optimizer, ema=ema)
    with open(workdir / METRICS_FILE, 'a') as f:
      f.write(json.dumps(row) + '\n')
    if writer is not None:
      for k, v in row.items():
        writer.add_scalar(k, v, step)
    logging.info('epoch %d: %s', epoch, ', '.join(
        f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}' for k, v in row.items()))
    print(f'epoch {epoch}: train_loss {row["train_loss"]:.4f}  val_loss {val_loss:.4f}  '
          f'val_micro_f1 {row["val_micro_f1"]:.4f} (threshold {row["val_threshold"]:.2f})  '
          f'{row["examples_per_second"]:.0f} ex/s', flush=True)
    if meta['finished']:
      print(f'early stopping: no improvement of {config.early_stopping_metric} for {patience} '
            f'epochs; best epoch {meta["best"]["epoch"]}.', flush=True)

  return final_report(config, workdir, model, data, mesh, pos_weight, widths, meta)


def tokenizer_factory(config: ml_collections.ConfigDict):
  """How the run turns text into ids: the word vocabulary, or the pretrained model's tokenizer."""
  if config.model.name == 'pretrained':
    from genre_jax import pretrained  # Optional dependencies (safetensors, tokenizers).
    return pretrained.tokenizer_factory(config.model, config.data)
  return None


def _check_finite(pending, meta, workdir) -> list[float]:
  values = [float(v) for _, v in pending]
  for (step, _), v in zip(pending, values):
    if not np.isfinite(v):
      last = (f'epoch {meta["epoch"]} (step {meta["step"]}) in {workdir / checkpoint.LATEST}'
              if meta['epoch'] else 'none (no epoch finished)')
      raise GenreJaxError(
          f'training loss became {v} at step {step}; stopping. Last good checkpoint: {last}. '
          'Lower the learning rate, enable gradient clipping (--config.grad_clip_norm=1.0) or '
          'check the data.')
  return values


def final_report(config, workdir: pathlib.Path, model, data, mesh, pos_weight, widths,
                 meta) -> dict[str, Any]:
  """Restores the best epoch, tunes thresholds on validation, scores the test split once."""
  ckpts = checkpoint.RunCheckpoints(workdir)
  ckpts.restore(checkpoint.BEST, model)
  parallel.replicate(model, mesh)
  classes = list(data.labels.classes)
  val, test = data.arrays['validation'], data.arrays['test']
  kw = dict(batch_size=config.eval_batch_size, mesh=mesh, pos_weight=pos_weight,
            bucket_widths=widths)
  val_probs, val_loss = inference.predict_probs(model, val.tokens, val.lengths, val.labels, **kw)
  thr = tune_thresholds(val.labels, val_probs, classes, at_least_one=config.threshold.at_least_one,
                        per_genre=config.threshold.per_genre)
  write_json(workdir / inference.THRESHOLDS_FILE, thr)

  # The test split is scored exactly once, with thresholds fixed above.
  test_probs, test_loss = inference.predict_probs(model, test.tokens, test.lengths, test.labels,
                                                  **kw)
  report = {
      'model': config.model.name, 'seed': config.seed, 'workdir': str(workdir),
      'devices': [str(d) for d in jax.devices()],
      'data': {**data.report, 'split_sizes': {k: len(v.lengths) for k, v in data.arrays.items()}},
      'epochs_run': meta['epoch'], 'best_epoch': meta['best']['epoch'],
      'train_seconds': round(meta['train_seconds'], 2),
      'num_parameters': models.count_params(model),
      **report_metrics(thr, val, val_probs, val_loss, test, test_probs, test_loss,
                       config.num_examples_to_show),
  }
  write_json(workdir / REPORT_FILE, report)
  print(summary(report), flush=True)
  return report


def tune_thresholds(y_val: np.ndarray, val_probs: np.ndarray, classes: list[str], *,
                    at_least_one: bool, per_genre: bool) -> dict[str, Any]:
  """Thresholds tuned on validation, as written to `thresholds.json`.

  Args:
    y_val: [n, G] validation labels; val_probs: [n, G] validation probabilities.
    classes: the G genre names.
    at_least_one: predict the top genre of rows with none above threshold.
    per_genre: also tune one threshold per genre (the global one is the fallback).
  """
  global_thr = thresholds_lib.tune_global(y_val, val_probs, at_least_one=at_least_one)
  per = (thresholds_lib.tune_per_genre(y_val, val_probs, fallback=global_thr)
         if per_genre else None)
  return {'global': float(global_thr), 'at_least_one': at_least_one, 'tuned': True,
          'per_genre': None if per is None else [float(t) for t in per], 'classes': classes}


def report_metrics(thr: dict[str, Any], val, val_probs: np.ndarray, val_loss: float, test,
                   test_probs: np.ndarray, test_loss: float,
                   num_examples: int) -> dict[str, Any]:
  """The report's entries from `thresholds` to `examples`, at thresholds fixed beforehand.

  Args:
    thr: from `tune_thresholds` (validation only).
    val, test: `SplitArrays` (labels [n, G], ids, texts); *_probs: [n, G]; *_loss: mean loss.
    num_examples: how many test examples to show.
  """
  classes, at_least_one = thr['classes'], thr['at_least_one']
  chosen = thr['global'] if thr['per_genre'] is None else np.asarray(thr['per_genre'])
  y_pred = thresholds_lib.apply(test_probs, chosen, at_least_one)
  tuned = metrics_lib.multilabel_metrics(test.labels, y_pred, test_probs)
  at_half = metrics_lib.multilabel_metrics(
      test.labels, thresholds_lib.apply(test_probs, 0.5), test_probs)
  return {
      'thresholds': thr,
      'validation': {'loss': val_loss, **metrics_lib.multilabel_metrics(
          val.labels, thresholds_lib.apply(val_probs, chosen, at_least_one), val_probs)},
      'test': {'loss': test_loss, **tuned},
      'test_at_0.5': {'loss': test_loss, **at_half},
      'test_per_genre': metrics_lib.per_genre(test.labels, y_pred, classes),
      'test_confusion_matrices': metrics_lib.confusion_matrices(test.labels, y_pred).tolist(),
      'examples': _examples(test, test_probs, y_pred, classes, num_examples),
  }


def summary(report: dict[str, Any]) -> str:
  """A short human summary: test metrics and a few example predictions."""
  t, h = report['test'], report['test_at_0.5']
  thr = report['thresholds']
  how = 'per-genre' if thr['per_genre'] else f'{thr["global"]:.2f}'
  if report.get('members'):  # An ensemble (python -m genre_jax.ensemble).
    head = ('== ensemble (mean probabilities) of ' + ', '.join(
        f'{m["model"]} (seed {m["seed"]})' for m in report['members']) + ' ==')
  else:
    head = (f'== {report["model"]} (seed {report["seed"]}), best epoch {report["best_epoch"]} '
            f'of {report["epochs_run"]}, {report["train_seconds"]:.0f} s training ==')
  lines = [
      head,
      f'test (threshold {how}, tuned on validation): micro-F1 {t["micro_f1"]:.4f}  macro-F1 '
      f'{t["macro_f1"]:.4f}  precision {t["micro_precision"]:.4f}  recall {t["micro_recall"]:.4f}'
      f'  mAP {t["map"]:.4f}',
      f'test (threshold 0.50): micro-F1 {h["micro_f1"]:.4f}  macro-F1 {h["macro_f1"]:.4f}',
      'examples (synopsis -> original genres -> predicted genres):',
  ]
  for ex in report['examples']:
    text = ex['synopsis'] if len(ex['synopsis']) < 90 else ex['synopsis'][:87] + '...'
    lines.append(f'  "{text}"\n    -> {", ".join(ex["original"])}\n'
                 f'    -> {", ".join(ex["predicted"]) or "(none)"}')
  return '\n'.join(lines)
