"""Multi-label loss: sigmoid binary cross-entropy with optional per-genre positive weights."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genre_jax.errors import GenreJaxError

POS_WEIGHT_MODES = ('none', 'balanced', 'sqrt')


def sigmoid_bce(
  logits: jax.Array,
  labels: jax.Array,
  mask: jax.Array | None = None,
  pos_weight: jax.Array | None = None,
) -> jax.Array:
  """Mean sigmoid binary cross-entropy over real examples and genres.

  Per element `-(w * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x)))`, the weighted form
  of PyTorch's `BCEWithLogitsLoss(pos_weight=w)`; `w = 1` without `pos_weight`.

  Args:
    logits: `[batch, genres]` float.
    labels: `[batch, genres]` float in [0, 1].
    mask: `[batch]` float, 1 for real examples and 0 for padding rows; None = all real.
    pos_weight: `[genres]` float multiplying each genre's positive term; None = 1.

  Returns:
    Scalar float32: the sum over real examples and genres divided by
    `max(#real examples, 1) * genres`.
  """
  logits = logits.astype(jnp.float32)
  labels = labels.astype(jnp.float32)
  if pos_weight is None:
    loss = optax.sigmoid_binary_cross_entropy(logits, labels)
  else:
    positive = optax.sigmoid_binary_cross_entropy(logits, jnp.ones_like(labels))  # -log σ(x)
    negative = optax.sigmoid_binary_cross_entropy(logits, jnp.zeros_like(labels))  # -log(1-σ(x))
    loss = jnp.asarray(pos_weight, jnp.float32) * labels * positive + (1.0 - labels) * negative
  if mask is None:
    return jnp.mean(loss)
  mask = jnp.asarray(mask, jnp.float32)
  total = jnp.sum(loss * mask[:, None])
  return total / (jnp.maximum(jnp.sum(mask), 1.0) * loss.shape[-1])


def distillation_bce(
  logits: jax.Array,
  labels: jax.Array,
  soft_targets: jax.Array,
  hard_weight: jax.Array,
  mask: jax.Array | None = None,
  pos_weight: jax.Array | None = None,
) -> jax.Array:
  """Knowledge-distillation loss: per row `a * BCE(labels) + (1 - a) * BCE(soft_targets)`.

  With one `a` = alpha for every row this is `alpha * sigmoid_bce(logits, labels, ...) +
  (1 - alpha) * sigmoid_bce(logits, soft_targets, ...)`, both terms masked and weighted as
  `sigmoid_bce` (the soft targets are the teacher's probabilities, so `pos_weight` weighs their
  positive part).

  Args:
    logits: `[batch, genres]` float, the student's.
    labels: `[batch, genres]` float in [0, 1], the hard labels.
    soft_targets: `[batch, genres]` float in [0, 1], the teacher's probabilities.
    hard_weight: `[batch]` float in [0, 1] (or a scalar), each row's weight `a` of the labels.
    mask: `[batch]` float, 1 for real examples and 0 for padding rows; None = all real.
    pos_weight: `[genres]` float multiplying each genre's positive term; None = 1.

  Returns:
    Scalar float32, normalised as `sigmoid_bce` (by `max(#real examples, 1) * genres`).
  """
  a = jnp.broadcast_to(jnp.asarray(hard_weight, jnp.float32), logits.shape[:1])[:, None]
  targets = a * labels.astype(jnp.float32) + (1.0 - a) * soft_targets.astype(jnp.float32)
  # The BCE is linear in the target: one BCE of the blended target is the blend of the two.
  return sigmoid_bce(logits, targets, mask, pos_weight)


def binary_cross_entropy(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
  """Mean binary cross-entropy of probabilities (numpy; for averaged ensemble probabilities).

  The same quantity as `sigmoid_bce` without `pos_weight`, over probabilities instead of logits:
  `-(y log p + (1 - y) log(1 - p))`, averaged over all rows (all real) and genres.

  Args:
    probs: `[n, genres]` float probabilities, clipped to `[eps, 1 - eps]` (in float64).
    labels: `[n, genres]` float in [0, 1].
    eps: the clipping margin, so that a saturated probability gives a finite loss.

  Returns:
    The mean as a Python float (0.0 when there are no rows).
  """
  p = np.clip(np.asarray(probs, np.float64), eps, 1.0 - eps)
  y = np.asarray(labels, np.float64)
  if p.size == 0:
    return 0.0
  return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def pos_weights(train_labels: np.ndarray, mode: str = 'none',
                max_weight: float = 10.0) -> np.ndarray | None:
  """Per-genre positive weights from the training labels.

  Args:
    train_labels: `[n, genres]` {0, 1}.
    mode: 'none' (returns None), 'balanced' (negatives / positives) or 'sqrt' (its square root).
    max_weight: upper clip (also the weight of a genre without training positives).

  Returns:
    `[genres]` float32 or None.
  """
  if mode not in POS_WEIGHT_MODES:
    raise GenreJaxError(f'unknown pos_weight {mode!r}; known: {", ".join(POS_WEIGHT_MODES)}')
  if mode == 'none':
    return None
  if max_weight <= 0:
    raise GenreJaxError(f'pos_weight_max must be positive, got {max_weight}')
  labels = np.asarray(train_labels, np.float64)
  positives = labels.sum(axis=0)
  negatives = labels.shape[0] - positives
  with np.errstate(divide='ignore'):
    ratio = np.where(positives > 0, negatives / np.maximum(positives, 1e-12), np.inf)
  if mode == 'sqrt':
    ratio = np.sqrt(ratio)
  return np.minimum(ratio, max_weight).astype(np.float32)
