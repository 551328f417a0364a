"""Tests of the NNX building blocks: shapes, length masking, and the LSTM against flax's own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genre_jax import layers
from genre_jax.errors import GenreJaxError

# The same small widths as test_models.py, so both share compiled initialisers.
B, L, E, H = 3, 7, 4, 4
LENGTHS = np.array([7, 4, 1], np.int32)


def _inputs(length=L, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(B, length, E)), jnp.float32)


def _append_garbage(x, extra=3, seed=1):
  """Appends `extra` positions and fills every padded position with garbage."""
  g = np.random.default_rng(seed).normal(size=(B, x.shape[1] + extra, E)).astype(np.float32)
  mask = np.arange(x.shape[1] + extra)[None, :] < LENGTHS[:, None]
  g[:, :x.shape[1]][mask[:, :x.shape[1]]] = np.asarray(x)[mask[:, :x.shape[1]]]
  return jnp.asarray(g)


def _real(x, lengths=LENGTHS):
  """The real positions of `x` [B, L, ...] as a list of arrays."""
  return [np.asarray(x[b, :n]) for b, n in enumerate(lengths)]


def test_embed_shapes_and_zero_padding():
  tokens = jnp.array([[3, 4, 0, 0], [5, 0, 0, 0]], jnp.int32)
  embed = layers.Embed(50, E, pad_id=0, rngs=nnx.Rngs(0))
  assert embed(tokens).shape == (2, 4, E) and embed(tokens).dtype == jnp.float32
  zeroed = layers.Embed(50, E, pad_id=0, zero_padding=True, rngs=nnx.Rngs(0))
  out = zeroed(tokens)
  np.testing.assert_array_equal(out[0, 2:], 0.0)
  np.testing.assert_allclose(out[0, :2], embed(tokens)[0, :2])


@pytest.mark.parametrize('kind', ['max', 'average', 'last'])
def test_pool_over_time_matches_numpy_and_ignores_padding(kind):
  x = _inputs()
  pooled = layers.pool_over_time(x, jnp.asarray(LENGTHS), kind)
  assert pooled.shape == (B, E)
  ref = {'max': lambda r: r.max(0), 'average': lambda r: r.mean(0), 'last': lambda r: r[-1]}[kind]
  np.testing.assert_allclose(pooled, np.stack([ref(r) for r in _real(x)]), rtol=1e-6)
  padded = layers.pool_over_time(_append_garbage(x), jnp.asarray(LENGTHS), kind)
  np.testing.assert_allclose(padded, pooled, rtol=1e-6)


@pytest.mark.parametrize('kind', ['max', 'average', 'last'])
def test_pool_over_time_zero_length_is_finite(kind):
  pooled = layers.pool_over_time(_inputs(), jnp.array([0, 2, 1]), kind)
  np.testing.assert_array_equal(pooled[0], 0.0)


def test_pool_over_time_unknown_kind():
  with pytest.raises(GenreJaxError, match='unknown pooling'):
    layers.pool_over_time(_inputs(), jnp.asarray(LENGTHS), 'median')


def test_average_pool_windows():
  x = _inputs(length=5)
  lengths = jnp.array([5, 3, 1])
  pooled, new_lengths = layers.average_pool_windows(x, lengths, 2)
  assert pooled.shape == (B, 3, E)
  np.testing.assert_array_equal(new_lengths, [3, 2, 1])
  xn = np.asarray(x)
  np.testing.assert_allclose(pooled[0, 2], xn[0, 4], rtol=1e-6)  # Partial final window.
  np.testing.assert_allclose(pooled[1, 1], xn[1, 2], rtol=1e-6)  # Only its real position.
  np.testing.assert_allclose(pooled[1, 0], xn[1, :2].mean(0), rtol=1e-6)
  garbage = jnp.asarray(np.random.default_rng(3).normal(size=(B, 4, E)), jnp.float32)
  more, more_lengths = layers.average_pool_windows(
    jnp.concatenate([x, garbage], 1).at[1, 3:5].set(9.0), lengths, 2)
  np.testing.assert_array_equal(more_lengths, new_lengths)
  for b, n in enumerate(np.asarray(new_lengths)):
    np.testing.assert_allclose(more[b, :n], pooled[b, :n], rtol=1e-6)


def test_conv1d_shapes_and_padding_invariance():
  conv = layers.Conv1D(E, 4, (2, 3), activation='tanh', rngs=nnx.Rngs(0))
  x = _inputs()
  out, longer = nnx.jit(lambda conv, a, b, n: (conv(a, n), conv(b, n)))(
    conv, x, _append_garbage(x), jnp.asarray(LENGTHS))
  assert out.shape == (B, L, 8) and conv.out_features == 8
  for a, b in zip(_real(out), _real(longer)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kernel_sizes', [(1,), (2,), (1, 2), (3, 5), (4,)])
def test_conv1d_values_and_gradients_match_nnx_conv(kernel_sizes):
  """conv1d_same's hand-written kernel gradient against autodiff through nnx.Conv's lax.conv."""
  conv = layers.Conv1D(E, 3, kernel_sizes, activation='tanh', rngs=nnx.Rngs(0))
  x, lengths = _inputs(), jnp.asarray(LENGTHS)
  weights = jnp.asarray(np.random.default_rng(5).normal(size=(B, L, 3 * len(kernel_sizes))),
                        jnp.float32)

  def reference(conv, x):
    x = jnp.where(layers.length_mask(lengths, L)[..., None], x, 0.0)
    return jnp.concatenate([jnp.tanh(c(x)) for c in conv.convs], axis=-1)

  def loss(forward):
    return lambda conv, x: (forward(conv, x) * weights).sum()

  ours = nnx.grad(loss(lambda conv, x: conv(x, lengths)), argnums=(0, 1))(conv, x)
  theirs = nnx.grad(loss(reference), argnums=(0, 1))(conv, x)
  np.testing.assert_allclose(conv(x, lengths), reference(conv, x), rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_conv1d_unknown_activation():
  with pytest.raises(GenreJaxError, match='unknown activation'):
    layers.Conv1D(E, 4, (2,), activation='softplusplus', rngs=nnx.Rngs(0))


def _reference_lstm(lstm, x, lengths):
  """The same computation with flax's nnx.RNN / nnx.Bidirectional."""
  for cells in lstm.layers:
    z = jnp.zeros((x.shape[0], lstm.hidden_features))
    forward = nnx.RNN(cells[0], return_carry=True, rngs=False)
    if len(cells) == 2:
      backward = nnx.RNN(cells[1], return_carry=True, reverse=True, keep_order=True, rngs=False)
      rnn = nnx.Bidirectional(forward, backward, return_carry=True, rngs=False)
      (carry_f, carry_b), x = rnn(x, seq_lengths=lengths, initial_carry=((z, z), (z, z)))
      final = jnp.concatenate([carry_f[1], carry_b[1]], -1)
    else:
      (_, final), x = forward(x, seq_lengths=lengths, initial_carry=(z, z))
  return x, final


@nnx.jit
def _lstm_three_ways(lstm, x, longer, lengths):
  """The LSTM, flax's reference on the same input, and the LSTM on a longer padded input."""
  return lstm(x, lengths), _reference_lstm(lstm, x, lengths), lstm(longer, lengths)


def _loop(cell, xs):
  """Runs `cell` step by step (Python loop) over `xs` [T, E]; returns outputs [T, H]."""
  carry = (jnp.zeros((1, cell.hidden_features)), jnp.zeros((1, cell.hidden_features)))
  outputs = []
  for t in range(xs.shape[0]):
    carry, y = cell(carry, xs[t][None])
    outputs.append(y[0])
  return np.stack(outputs)


@pytest.mark.parametrize('bidirectional,num_layers,precompute', [(False, 1, False), (True, 2, True)])
def test_lstm_shapes_masking_and_flax_reference(bidirectional, num_layers, precompute):
  lstm = layers.LSTM(E, H, num_layers=num_layers, bidirectional=bidirectional,
                     precompute_inputs=precompute, rngs=nnx.Rngs(0))
  directions = 2 if bidirectional else 1
  x, lengths = _inputs(), jnp.asarray(LENGTHS)
  (outputs, final), (ref_outputs, ref_final), (longer_outputs, longer_final) = _lstm_three_ways(
    lstm, x, _append_garbage(x), lengths)
  assert outputs.shape == (B, L, directions * H) and final.shape == (B, directions * H)
  mask = np.arange(L)[None, :] < LENGTHS[:, None]
  np.testing.assert_array_equal(np.asarray(outputs)[~mask], 0.0)

  np.testing.assert_allclose(final, ref_final, rtol=1e-5, atol=1e-6)
  for a, b in zip(_real(outputs), _real(ref_outputs)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  np.testing.assert_allclose(longer_final, final, rtol=1e-5, atol=1e-6)
  for a, b in zip(_real(outputs), _real(longer_outputs)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_lstm_final_state_equals_step_by_step_cell():
  lstm = layers.LSTM(E, H, bidirectional=True, rngs=nnx.Rngs(1))
  forward, backward = lstm.layers[0]
  x = _inputs()
  outputs, final = lstm(x, jnp.asarray(LENGTHS))
  for b, n in enumerate(LENGTHS):
    fwd = _loop(forward, x[b, :n])
    bwd = _loop(backward, x[b, :n][::-1])
    np.testing.assert_allclose(final[b, :H], fwd[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final[b, H:], bwd[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[b, :n, :H], fwd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[b, :n, H:], bwd[::-1], rtol=1e-5, atol=1e-6)


def test_lstm_parameter_layout():
  lstm = nnx.eval_shape(lambda: layers.LSTM(E, 5, rngs=nnx.Rngs(0)))
  shapes = jax.tree.map(jnp.shape, nnx.state(lstm, nnx.Param))
  cell = shapes['layers'][0][0]
  assert cell['dense_i']['kernel'].get_value() == (E, 20)
  assert 'bias' not in cell['dense_i']
  assert cell['dense_h']['kernel'].get_value() == (5, 20)
  assert cell['dense_h']['bias'].get_value() == (20,)


def test_head_shapes_and_dropout_modes():
  head = layers.Head(4, 5, dense_size=4, dropout=0.5, rngs=nnx.Rngs(0))
  x = jnp.ones((B, 4))
  assert head(x).shape == (B, 5)
  assert not np.allclose(head(x), head(x))  # Training mode by default: dropout active.
  head.eval()
  np.testing.assert_array_equal(head(x), head(x))
  no_hidden = layers.Head(4, 5, dense_size=0, rngs=nnx.Rngs(0))
  assert no_hidden.dense is None and no_hidden(x).shape == (B, 5)
