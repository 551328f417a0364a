"""Small Flax NNX building blocks for the genre classifiers.

Every block that sees a padded sequence also takes its real `lengths`, so that appending padding
to a sequence never changes what the block computes for the real positions:

* `Conv1D` zeroes its inputs at padded positions before convolving ('SAME' padding), so the
  windows at the end of a sequence see zeros whether or not padding was appended.
* `pool_over_time` always masks with the lengths.
* `LSTM` freezes its state after the last real token and zeroes its outputs at padded positions;
  the backward direction reverses only the real tokens.

Everything is float32 and free of Python loops over time, so it compiles once per input shape.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.recurrent import flip_sequences

from genre_jax.errors import GenreJaxError

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
  'relu': nnx.relu,
  'tanh': jnp.tanh,
  'sigmoid': nnx.sigmoid,
  'gelu': nnx.gelu,
  'elu': nnx.elu,
  'swish': nnx.swish,
  'linear': lambda x: x,
}

POOLING_KINDS = ('max', 'average', 'last')


def get_activation(name: str) -> Callable[[Array], Array]:
  """Returns the activation function called `name` (see `ACTIVATIONS`)."""
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise GenreJaxError(
      f'unknown activation {name!r}; known: {", ".join(sorted(ACTIVATIONS))}'
    ) from None


def length_mask(lengths: Array, max_length: int) -> Array:
  """Which positions hold real tokens.

  Args:
    lengths: `[batch]` int, the number of real tokens of each sequence.
    max_length: the padded length `L`.

  Returns:
    `[batch, L]` bool, True at real positions.
  """
  return jnp.arange(max_length)[None, :] < lengths[:, None]


def pool_over_time(x: Array, lengths: Array, kind: str = 'max') -> Array:
  """Summarises a padded sequence, ignoring its padded positions.

  A sequence of length 0 (never produced by the tokenizers, but possible in padding rows)
  pools to zeros rather than to -inf or NaN.

  Args:
    x: `[batch, L, features]` float.
    lengths: `[batch]` int, real lengths.
    kind: 'max', 'average' or 'last' (the features at the last real position).

  Returns:
    `[batch, features]` float.
  """
  mask = length_mask(lengths, x.shape[1])[..., None]  # [B, L, 1]
  if kind == 'max':
    pooled = jnp.max(jnp.where(mask, x, -jnp.inf), axis=1)
    return jnp.where(lengths[:, None] > 0, pooled, 0.0)
  if kind == 'average':
    total = jnp.sum(jnp.where(mask, x, 0.0), axis=1)
    return total / jnp.maximum(lengths, 1)[:, None].astype(x.dtype)
  if kind == 'last':
    last = jnp.clip(lengths - 1, 0, x.shape[1] - 1)
    pooled = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    return jnp.where(lengths[:, None] > 0, pooled, 0.0)
  raise GenreJaxError(f'unknown pooling {kind!r}; known: {", ".join(POOLING_KINDS)}')


def average_pool_windows(x: Array, lengths: Array, window: int) -> tuple[Array, Array]:
  """Non-overlapping average pooling over time, length-aware.

  Each output position averages the real positions of one window of `window` inputs (a final
  partial window averages only its real positions), so appended padding changes nothing.

  Args:
    x: `[batch, L, features]` float.
    lengths: `[batch]` int.
    window: pooling width (and stride).

  Returns:
    `[batch, ceil(L / window), features]` float and the new lengths `[batch]` int
    (`ceil(lengths / window)`).
  """
  batch, length, features = x.shape
  out_length = -(-length // window)
  mask = length_mask(lengths, length)[..., None].astype(x.dtype)
  pad = out_length * window - length
  x = jnp.pad(x * mask, ((0, 0), (0, pad), (0, 0)))
  mask = jnp.pad(mask, ((0, 0), (0, pad), (0, 0)))
  total = x.reshape(batch, out_length, window, features).sum(axis=2)
  count = mask.reshape(batch, out_length, window, 1).sum(axis=2)
  new_lengths = (lengths + window - 1) // window
  return total / jnp.maximum(count, 1.0), new_lengths


class Embed(nnx.Module):
  """Token embedding.

  The padding row is an ordinary trainable row: everything downstream is length-masked, so its
  value never matters. With `zero_padding=True` the embeddings of `pad_id` tokens are zeroed
  (and then receive no gradient).
  """

  def __init__(
    self,
    vocab_size: int,
    features: int,
    *,
    pad_id: int = 0,
    zero_padding: bool = False,
    rngs: nnx.Rngs,
  ):
    self.embedding = nnx.Embed(vocab_size, features, rngs=rngs)
    self.pad_id = pad_id
    self.zero_padding = zero_padding

  def __call__(self, tokens: Array) -> Array:
    """Embeds tokens.

    Args:
      tokens: `[batch, L]` int32.

    Returns:
      `[batch, L, features]` float32.
    """
    x = self.embedding(tokens)
    if self.zero_padding:
      x = x * (tokens != self.pad_id)[..., None].astype(x.dtype)
    return x


class ProjectedEmbed(nnx.Module):
  """A token table initialised from given vectors (a pretrained encoder's input word
  embeddings), then a learned linear projection (no bias) to `features` when the table's width
  differs; without one, the table's vectors themselves.

  Whether the table trains is the model's choice (its `trainable` filter); the projection always
  does.
  """

  def __init__(self, table, features: int, *, rngs: nnx.Rngs):
    """`table`: [vocab_size, width] float array; `features`: the output width."""
    vocab_size, width = table.shape
    self.embedding = nnx.Embed(vocab_size, width, rngs=rngs,
                               embedding_init=lambda key, shape, dtype: jnp.asarray(table, dtype))
    self.projection = (nnx.Linear(width, features, use_bias=False, rngs=rngs)
                       if width != features else None)

  def __call__(self, tokens: Array) -> Array:
    """tokens `[batch, L]` int32 -> `[batch, L, features]` float32."""
    x = self.embedding(tokens)
    return x if self.projection is None else self.projection(x)


def _shift_time(x: Array, offset: int) -> Array:
  """`y[:, t] = x[:, t + offset]`, zero where `t + offset` falls outside `[0, L)`."""
  if offset > 0:
    return jnp.pad(x[:, offset:], ((0, 0), (0, offset), (0, 0)))
  if offset < 0:
    return jnp.pad(x[:, :offset], ((0, 0), (-offset, 0), (0, 0)))
  return x


def _same_padding_low(width: int) -> int:
  """Zeros before the sequence for a 'SAME' convolution of `width` (as lax and nnx.Conv pad)."""
  return (width - 1) // 2


def _conv1d_same(x: Array, kernel: Array) -> Array:
  width = kernel.shape[0]
  low = _same_padding_low(width)
  return jax.lax.conv_general_dilated(x, kernel, (1,), [(low, width - 1 - low)],
                                      dimension_numbers=('NWC', 'WIO', 'NWC'))


@jax.custom_vjp
def conv1d_same(x: Array, kernel: Array) -> Array:
  """1-D convolution with 'SAME' padding (as `nnx.Conv(..., padding='SAME')`, without bias).

  The kernel gradient is computed as `width` plain matmuls of the time-shifted inputs with the
  output gradient (`dK[j] = sum_{b,t} x[b, t + j - low]^T g[b, t]`, contracting over the major
  `[B*L]` axis), which is the same sum as XLA's filter-gradient convolution in another order. On
  XLA:CPU that convolution wants its input in a `[features, L, batch]` layout; the transposing
  copy, fused with the embedding gather and word dropout that produce the input, took about 3 ms
  of the tuned CNN's 14-16 ms train step. The matmuls read the input as it is; the step got only
  a few percent faster (13.4-13.6 ms against 14.0-15.4 ms), as XLA now writes the masked input
  out once per shifted copy instead.

  Args:
    x: `[batch, L, in]` float.
    kernel: `[width, in, out]` float.

  Returns:
    `[batch, L, out]` float.
  """
  return _conv1d_same(x, kernel)


def _conv1d_same_fwd(x, kernel):
  return _conv1d_same(x, kernel), (x, kernel)


def _conv1d_same_bwd(residuals, g):
  x, kernel = residuals
  width, in_features, _ = kernel.shape
  low = _same_padding_low(width)
  dx = jax.vjp(lambda x: _conv1d_same(x, kernel), x)[1](g)[0]
  g2 = g.reshape(-1, g.shape[-1])  # [B*L, out]
  # (g^T x)^T rather than x^T g: XLA then contracts x along its major axis without copying it.
  dkernel = jnp.stack([
    (g2.T @ _shift_time(x, j - low).reshape(-1, in_features)).T for j in range(width)
  ])
  return dx, dkernel


conv1d_same.defvjp(_conv1d_same_fwd, _conv1d_same_bwd)


class Conv1D(nnx.Module):
  """1-D convolutions of several kernel widths in parallel, concatenated.

  Each width has its own `filters` output channels; 'SAME' padding keeps the length. Inputs at
  padded positions are zeroed first, so outputs at real positions do not depend on how much
  padding follows. Outputs at padded positions are not zeroed (mask downstream). The parameters
  are those of `nnx.Conv` (kernel `[k, in, filters]`, bias `[filters]`); the convolution is
  `conv1d_same`.
  """

  def __init__(
    self,
    in_features: int,
    filters: int,
    kernel_sizes: Sequence[int] = (3,),
    *,
    activation: str = 'relu',
    rngs: nnx.Rngs,
  ):
    if not kernel_sizes:
      raise GenreJaxError('Conv1D needs at least one kernel size')
    self.convs = nnx.List([
      nnx.Conv(in_features, filters, kernel_size=(int(k),), padding='SAME', rngs=rngs)
      for k in kernel_sizes
    ])
    self.activation = get_activation(activation)
    self.out_features = filters * len(kernel_sizes)

  def __call__(self, x: Array, lengths: Array) -> Array:
    """Convolves.

    Args:
      x: `[batch, L, in_features]` float.
      lengths: `[batch]` int, real lengths.

    Returns:
      `[batch, L, filters * len(kernel_sizes)]` float.
    """
    x = jnp.where(length_mask(lengths, x.shape[1])[..., None], x, 0.0)
    outputs = [self.activation(conv1d_same(x, conv.kernel[...]) + conv.bias[...])
               for conv in self.convs]
    return outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=-1)


def _lstm_scan(
  inputs: Sequence[Array],
  cells: Sequence[nnx.OptimizedLSTMCell],
  mask: Array,
  *,
  precomputed: bool,
) -> tuple[list[Array], list[Array]]:
  """Runs one or two LSTM directions side by side in a single `lax.scan`.

  Gate order and equations are those of `nnx.OptimizedLSTMCell` (i, f, g, o). The state is
  frozen after each sequence's last real token and outputs at padded positions are zero.

  Args:
    inputs: per direction, `[L, batch, F]` time-major inputs (left-aligned: a backward direction
      is given its reversed real tokens); with `precomputed`, the input projections plus bias
      `[L, batch, 4H]` instead.
    cells: per direction, the cell holding the parameters.
    mask: `[L, batch, 1]` bool, True at real positions.
    precomputed: whether `inputs` are already projected.

  Returns:
    per direction, outputs `[L, batch, H]` and the final hidden state `[batch, H]`.
  """
  params = [
    (cell.dense_i.kernel[...], cell.dense_h.kernel[...], cell.dense_h.bias[...]) for cell in cells
  ]
  batch = mask.shape[1]
  hidden = cells[0].hidden_features
  zeros = jnp.zeros((batch, hidden), inputs[0].dtype)

  def step(carry, xs):
    *xs, valid = xs
    new_carry, outputs = [], []
    for (c, h), x, (w_i, w_h, b) in zip(carry, xs, params):
      y = (x if precomputed else x @ w_i + b) + h @ w_h
      i, f, g, o = jnp.split(y, 4, axis=-1)
      c_next = nnx.sigmoid(f) * c + nnx.sigmoid(i) * jnp.tanh(g)
      h_next = nnx.sigmoid(o) * jnp.tanh(c_next)
      new_carry.append((jnp.where(valid, c_next, c), jnp.where(valid, h_next, h)))
      outputs.append(jnp.where(valid, h_next, 0.0))
    return new_carry, outputs

  carry = [(zeros, zeros) for _ in cells]
  carry, outputs = jax.lax.scan(step, carry, (*inputs, mask))
  return outputs, [h for _, h in carry]


class LSTM(nnx.Module):
  """A scanned, optionally bidirectional and stacked LSTM that honours sequence lengths.

  The parameters are `nnx.OptimizedLSTMCell`s (flax's layout: `dense_i` kernel `[in, 4H]` without
  bias, `dense_h` kernel `[H, 4H]` with bias `[4H]`), and the result equals
  `nnx.RNN(cell, ...)` / `nnx.Bidirectional` called with `seq_lengths` (tested). The scan is
  written out rather than using `nnx.RNN` for speed on CPU: both directions of a bidirectional
  layer advance in the same scan (L sequential steps per layer instead of 2L), the state is
  frozen with a mask instead of stacking every step's carry to pick the last one, and
  `precompute_inputs=True` moves the input projection of all time steps into one matmul outside
  the scan (measured on XLA:CPU at no gain, hence off by default).
  """

  def __init__(
    self,
    in_features: int,
    hidden_features: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    precompute_inputs: bool = False,
    rngs: nnx.Rngs,
  ):
    if num_layers < 1:
      raise GenreJaxError(f'LSTM needs num_layers >= 1, got {num_layers}')
    directions = 2 if bidirectional else 1
    self.hidden_features = hidden_features
    self.bidirectional = bidirectional
    self.precompute_inputs = precompute_inputs
    self.out_features = directions * hidden_features
    self.layers = nnx.List()
    for layer in range(num_layers):
      layer_in = in_features if layer == 0 else self.out_features
      self.layers.append(nnx.List([
        nnx.OptimizedLSTMCell(layer_in, hidden_features, rngs=rngs) for _ in range(directions)
      ]))

  def __call__(self, x: Array, lengths: Array) -> tuple[Array, Array]:
    """Runs the LSTM.

    Args:
      x: `[batch, L, in_features]` float.
      lengths: `[batch]` int, real lengths.

    Returns:
      outputs: `[batch, L, H * directions]`, zero at padded positions; for a bidirectional LSTM
        the forward outputs then the backward ones (each aligned with its input position).
      final: `[batch, H * directions]`, the forward state after the last real token
        (and the backward state after reading the sequence back to its first token).
    """
    mask = length_mask(lengths, x.shape[1]).T[..., None]  # [L, B, 1]
    final = []
    for cells in self.layers:
      inputs = [x]
      if len(cells) == 2:
        inputs.append(flip_sequences(x, lengths, num_batch_dims=1, time_major=False))
      if self.precompute_inputs:  # Every time step in one matmul.
        inputs = [
          u @ cell.dense_i.kernel[...] + cell.dense_h.bias[...] for u, cell in zip(inputs, cells)
        ]
      inputs = [jnp.swapaxes(u, 0, 1) for u in inputs]  # Time-major.
      outputs, final = _lstm_scan(inputs, cells, mask, precomputed=self.precompute_inputs)
      outputs = [jnp.swapaxes(u, 0, 1) for u in outputs]  # [B, L, H]
      if len(cells) == 2:
        outputs[1] = flip_sequences(outputs[1], lengths, num_batch_dims=1, time_major=False)
      x = jnp.concatenate(outputs, axis=-1) if len(outputs) == 2 else outputs[0]
    return x, jnp.concatenate(final, axis=-1) if len(final) == 2 else final[0]


class Head(nnx.Module):
  """Classifier head: [dense -> activation] -> dropout -> one logit per genre."""

  def __init__(
    self,
    in_features: int,
    num_labels: int,
    *,
    dense_size: int = 0,
    activation: str = 'relu',
    dropout: float = 0.0,
    rngs: nnx.Rngs,
  ):
    self.dense = nnx.Linear(in_features, dense_size, rngs=rngs) if dense_size > 0 else None
    self.activation = get_activation(activation)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.logits = nnx.Linear(dense_size if dense_size > 0 else in_features, num_labels, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    """Maps features to logits.

    Args:
      x: `[batch, in_features]` float.

    Returns:
      `[batch, num_labels]` float32 logits.
    """
    if self.dense is not None:
      x = self.activation(self.dense(x))
    return self.logits(self.dropout(x))
