"""Tests of the weighted sigmoid cross-entropy and the positive weights, against numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from genre_jax import losses
from genre_jax.errors import GenreJaxError


def _numpy_bce(logits, labels, pos_weight=1.0):
  p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  return -(pos_weight * labels * np.log(p) + (1.0 - labels) * np.log(1.0 - p))


RNG = np.random.default_rng(0)
LOGITS = RNG.normal(scale=2.0, size=(4, 3)).astype(np.float32)
LABELS = RNG.integers(0, 2, size=(4, 3)).astype(np.float32)


def test_matches_numpy_formula():
  got = losses.sigmoid_bce(jnp.asarray(LOGITS), jnp.asarray(LABELS))
  np.testing.assert_allclose(got, _numpy_bce(LOGITS, LABELS).mean(), rtol=1e-5)


def test_pos_weight_multiplies_the_positive_term():
  w = np.array([1.0, 3.0, 0.5], np.float32)
  got = losses.sigmoid_bce(jnp.asarray(LOGITS), jnp.asarray(LABELS), pos_weight=jnp.asarray(w))
  np.testing.assert_allclose(got, _numpy_bce(LOGITS, LABELS, w).mean(), rtol=1e-5)
  ones = losses.sigmoid_bce(jnp.asarray(LOGITS), jnp.asarray(LABELS), pos_weight=jnp.ones(3))
  np.testing.assert_allclose(ones, losses.sigmoid_bce(LOGITS, LABELS), rtol=1e-6)
  # Negatives only: the weight does not matter.
  zeros = np.zeros_like(LABELS)
  np.testing.assert_allclose(losses.sigmoid_bce(LOGITS, zeros, pos_weight=jnp.asarray(w)),
                             losses.sigmoid_bce(LOGITS, zeros), rtol=1e-6)


def test_mask_averages_over_real_examples_only():
  mask = np.array([1, 1, 0, 0], np.float32)
  got = losses.sigmoid_bce(LOGITS, LABELS, mask=mask)
  np.testing.assert_allclose(got, _numpy_bce(LOGITS[:2], LABELS[:2]).mean(), rtol=1e-5)
  changed = LOGITS.copy()
  changed[2:] = 100.0  # Padding rows can hold anything.
  np.testing.assert_allclose(losses.sigmoid_bce(changed, LABELS, mask=mask), got, rtol=1e-6)
  np.testing.assert_allclose(losses.sigmoid_bce(LOGITS, LABELS, mask=np.ones(4)),
                             losses.sigmoid_bce(LOGITS, LABELS), rtol=1e-6)
  assert float(losses.sigmoid_bce(LOGITS, LABELS, mask=np.zeros(4))) == 0.0


def test_extreme_logits_are_finite():
  logits = jnp.array([[100.0, -100.0]])
  labels = jnp.array([[0.0, 1.0]])
  got = losses.sigmoid_bce(logits, labels, pos_weight=jnp.array([2.0, 2.0]))
  np.testing.assert_allclose(got, (100.0 + 2 * 100.0) / 2, rtol=1e-5)


def test_pos_weights():
  labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], np.float32)
  assert losses.pos_weights(labels, 'none') is None
  balanced = losses.pos_weights(labels, 'balanced', max_weight=10.0)
  np.testing.assert_allclose(balanced, [1 / 3, 3.0, 10.0], rtol=1e-6)  # No positives: the max.
  assert balanced.dtype == np.float32 and balanced.shape == (3,)
  np.testing.assert_allclose(losses.pos_weights(labels, 'sqrt', 10.0), [np.sqrt(1 / 3),
                                                                        np.sqrt(3.0), 10.0])
  np.testing.assert_allclose(losses.pos_weights(labels, 'balanced', 2.0), [1 / 3, 2.0, 2.0])


def test_pos_weights_bad_arguments():
  labels = np.ones((2, 2))
  with pytest.raises(GenreJaxError, match='unknown pos_weight'):
    losses.pos_weights(labels, 'inverse')
  with pytest.raises(GenreJaxError, match='positive'):
    losses.pos_weights(labels, 'balanced', max_weight=0.0)
