"""Batched inference and loading a trained run from its workdir (used by evaluate and predict)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from genre_jax import checkpoint
from genre_jax import losses
from genre_jax import models
from genre_jax import parallel
from genre_jax.data import batching
from genre_jax.data import text as text_lib

THRESHOLDS_FILE = 'thresholds.json'


def enable_compilation_cache() -> None:
  """Reuses compiled XLA programs across processes (JAX's persistent compilation cache)."""
  cache = os.environ.get('GENRE_JAX_JAX_CACHE',
                         os.path.join(os.path.expanduser('~'), '.cache', 'genre_jax', 'xla'))
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


@nnx.jit
def eval_step(model: nnx.Module, batch: dict[str, jax.Array],
              pos_weight: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Probabilities [B, G] and the summed loss of the real (mask = 1) rows."""
  logits = model(batch['tokens'], batch['lengths'])
  loss = losses.sigmoid_bce(logits, batch['labels'], batch['mask'], pos_weight)
  return jax.nn.sigmoid(logits), loss * batch['mask'].sum()


def predict_probs(model: nnx.Module, tokens: np.ndarray, lengths: np.ndarray,
                  labels: np.ndarray, *, batch_size: int, mesh,
                  pos_weight: jax.Array | None = None,
                  bucket_widths: list[int] | None = None) -> tuple[np.ndarray, float]:
  """Scores every row (none dropped) in evaluation mode.

  Args:
    tokens: [n, L] int32 token ids.
    lengths: [n] int32 real lengths.
    labels: [n, G] float32 multi-hot labels (zeros when unknown; the loss is then meaningless).
    batch_size: rows per compiled call (a multiple of the device count).
    mesh: the device mesh from `parallel.make_mesh()`.
    pos_weight: [G] positive weights of the training loss, or None.
    bucket_widths: optional padded widths, to cut padding.

  Returns:
    probs: [n, G] float32 probabilities in row order; mean loss over the rows.
  """
  model.eval()
  n = len(tokens)
  arrays = batching.SplitArrays(ids=[str(i) for i in range(n)], texts=[''] * n, tokens=tokens,
                                lengths=lengths, labels=labels)
  probs = np.zeros(labels.shape, np.float32)
  total = 0.0
  for batch in batching.batches(arrays, batch_size, shuffle=False, seed=0, epoch=0,
                                bucket_by_length=bucket_widths is not None, widths=bucket_widths):
    inputs = {k: batch[k] for k in ('tokens', 'lengths', 'labels', 'mask')}
    p, loss_sum = eval_step(model, parallel.shard_batch(inputs, mesh), pos_weight)
    real = batch['mask'] > 0
    probs[batch['index'][real]] = np.asarray(p)[real]
    total += float(loss_sum)
  return probs, total / max(n, 1)


@dataclasses.dataclass
class Run:
  """A trained run loaded from its workdir."""
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  model: nnx.Module
  tokenizer: Any
  labels: Any  # data.text.LabelEncoder
  meta: dict[str, Any]
  thresholds: dict[str, Any]  # {'global': float, 'per_genre': [G] | None, 'at_least_one': bool}
  mesh: Any

  @property
  def threshold(self):
    """The tuned threshold(s) in use: per-genre [G] when tuned, else the global float."""
    per = self.thresholds.get('per_genre')
    return np.asarray(per, np.float32) if per is not None else self.thresholds['global']

  def probs(self, texts: list[str]) -> np.ndarray:
    """[n, G] probabilities for raw texts."""
    tokens, lengths = self.tokenizer.encode(texts, self.config.data.max_length)
    bs = batch_size_for(len(texts), self.config.eval_batch_size, self.mesh)
    unknown = np.zeros((len(texts), len(self.labels.classes)), np.float32)
    return predict_probs(self.model, tokens, lengths, unknown, batch_size=bs, mesh=self.mesh)[0]


def batch_size_for(n: int, eval_batch_size: int, mesh) -> int:
  """The smallest device-count multiple covering `n` rows, at most `eval_batch_size`."""
  d = mesh.devices.size
  want = min(max(n, 1), eval_batch_size)
  return -(-want // d) * d


def build_model(config: ml_collections.ConfigDict, tokenizer, num_labels: int) -> nnx.Module:
  return models.create_model(config.model, vocab_size=tokenizer.vocab_size, num_labels=num_labels,
                             pad_id=tokenizer.pad_id,
                             rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))


def _placeholder(x: jax.ShapeDtypeStruct) -> jax.Array:
  """A concrete value for non-parameter state (RNG keys and counters), unused in evaluation."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.split(jax.random.key(0), x.shape) if x.shape else jax.random.key(0)
  return jax.numpy.zeros(x.shape, x.dtype)


def load_run(workdir: str | pathlib.Path) -> Run:
  """Rebuilds the best model of a finished (or interrupted) run, with its tokenizer and labels."""
  workdir = pathlib.Path(workdir)
  ckpts = checkpoint.RunCheckpoints(workdir)
  meta = ckpts.read_meta(checkpoint.BEST)
  config = ml_collections.ConfigDict(meta['config'])
  tokenizer = text_lib.tokenizer_from_dict(meta['tokenizer'])
  labels = text_lib.LabelEncoder.from_dict(meta['labels'])
  # Built abstractly (no initialiser runs or compiles), then filled from the checkpoint.
  model = nnx.eval_shape(lambda: build_model(config, tokenizer, len(labels.classes)))
  nnx.update(model, jax.tree.map(_placeholder, nnx.state(model, nnx.Not(nnx.Param))))
  ckpts.restore(checkpoint.BEST, model)
  model.eval()
  path = workdir / THRESHOLDS_FILE
  if path.exists():
    thresholds = json.loads(path.read_text())
  else:
    thresholds = {'global': 0.5, 'per_genre': None, 'at_least_one': False, 'tuned': False}
  mesh = parallel.make_mesh()
  parallel.replicate(model, mesh)
  return Run(workdir, config, model, tokenizer, labels, meta, thresholds, mesh)
