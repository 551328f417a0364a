"""Tests of the architectures: shapes, padding invariance, training, dropout, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import configs
from genre_jax import losses, models
from genre_jax.errors import GenreJaxError

V, G, PAD = 50, 5, 0
B, L = 3, 7
LENGTHS = np.array([7, 4, 1], np.int32)


def _config(config_name, **model_overrides):
  config = configs.load(config_name)
  for key, value in model_overrides.items():
    config.model[key] = value
  return config.model


def _tiny(name, **overrides):
  # One width for everything, so that models share parameter shapes (and compiled initialisers).
  fields = dict(name=name, embed_dim=4, conv_filters=4, conv_kernel_sizes=(3,), lstm_hidden=4,
                dense_size=4, dropout=0.5, embed_dropout=0.0, conv_pool_size=0)
  fields.update(overrides)
  return _config('tiny', **fields)


def _build(model_config, seed=0):
  return models.create_model(model_config, vocab_size=V, num_labels=G, pad_id=PAD,
                             rngs=nnx.Rngs(params=seed, dropout=seed + 1))


def _tokens(length=L, seed=0):
  tokens = np.random.default_rng(seed).integers(2, V, size=(B, length)).astype(np.int32)
  tokens[np.arange(length)[None, :] >= LENGTHS[:, None]] = PAD
  return jnp.asarray(tokens)


def _abstract_params(model_config):
  """Parameter count without materialising the parameters (fast)."""
  return models.count_params(nnx.eval_shape(lambda: _build(model_config)))


# Every architecture, every pooling kind, uni- and bidirectional, with and without pooling windows.
ARCHITECTURES = {
  'lstm/last': _tiny('lstm', pooling='last'),
  'lstm/max/bi': _tiny('lstm', pooling='max', bidirectional=True),
  'lstm/average/bi/2-layers': _tiny('lstm', pooling='average', bidirectional=True, lstm_layers=2),
  'cnn/max/widths-2-3': _tiny('cnn', pooling='max', conv_kernel_sizes=(2, 3)),
  'cnn/average/no-dense': _tiny('cnn', pooling='average', dense_size=0),
  'cnn/last': _tiny('cnn', pooling='last'),
  'cnn_lstm/last/pool-2': _tiny('cnn_lstm', pooling='last', conv_pool_size=2),
  'cnn_lstm/max/bi/pool-3/widths-2-3': _tiny('cnn_lstm', pooling='max', bidirectional=True,
                                             conv_pool_size=3, conv_kernel_sizes=(2, 3)),
  'cnn_lstm/average/bi': _tiny('cnn_lstm', pooling='average', bidirectional=True),
  'cnn_lstm/average/bi/pool-2/skip': _tiny('cnn_lstm', pooling='average', bidirectional=True,
                                          conv_pool_size=2, conv_skip=True),
  'cnn_lstm/last/skip': _tiny('cnn_lstm', pooling='last', conv_skip=True),
  'cnn/word-dropout': _tiny('cnn', pooling='average', word_dropout=0.3, embed_dropout=0.2),
}


@pytest.fixture(scope='module')
def tiny_models():
  return {key: _build(cfg) for key, cfg in ARCHITECTURES.items()}


@nnx.jit
def _forward_all(models_, tokens, lengths):
  """Every model of the list on the same batch, compiled once."""
  return [model(tokens, lengths) for model in models_]


def test_shapes_and_padding_invariance(tiny_models):
  """Appending padding (pad ids or arbitrary ids) leaves the evaluation logits unchanged."""
  keys = list(tiny_models)
  batch = nnx.List(tiny_models.values())
  batch.eval()
  lengths = jnp.asarray(LENGTHS)
  tokens = _tokens()
  longer = np.full((B, L + 5), PAD, np.int32)
  longer[:, :L] = np.asarray(tokens)
  garbage = longer.copy()
  garbage[np.arange(L + 5)[None, :] >= LENGTHS[:, None]] = 7
  logits = _forward_all(batch, tokens, lengths)
  for key, a, b in zip(keys, logits, _forward_all(batch, tokens, lengths)):
    np.testing.assert_array_equal(a, b, err_msg=f'{key}: dropout active in evaluation mode')
  for variant in (longer, garbage):
    for key, a, b in zip(keys, logits, _forward_all(batch, jnp.asarray(variant), lengths)):
      assert a.shape == (B, G) and a.dtype == jnp.float32, key
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=key)


@nnx.jit
def _train_step(models_, optimizer, tokens, lengths, labels):
  """One optimiser step; also returns each model's training logits and a second forward pass."""
  def loss_fn(models_):
    logits = [model(tokens, lengths) for model in models_]
    return sum(losses.sigmoid_bce(x, labels) for x in logits), logits

  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(models_)
  again = [model(tokens, lengths) for model in models_]  # Same parameters, new dropout mask.
  optimizer.update(models_, grads)
  return loss, list(zip(logits, again))


def test_train_step_changes_every_parameter_and_dropout_is_active():
  """One Adam step updates every parameter array of every architecture.

  Dropout is active in training mode (two calls differ); that evaluation mode switches it off is
  checked by `test_shapes_and_padding_invariance`.
  """
  batch = nnx.List([
    _build(_tiny('lstm', bidirectional=True, embed_dropout=0.1)),
    _build(_tiny('cnn', conv_kernel_sizes=(2, 3), word_dropout=0.2)),
    _build(_tiny('cnn_lstm', conv_pool_size=2)),
    _build(_tiny('cnn_lstm', conv_pool_size=2, conv_skip=True, bidirectional=True)),
  ])
  batch.train()
  optimizer = nnx.Optimizer(batch, optax.adam(1e-2), wrt=nnx.Param)
  tokens, lengths = _tokens(), jnp.asarray(LENGTHS)
  labels = jnp.asarray(np.random.default_rng(0).integers(0, 2, size=(B, G)), jnp.float32)
  before = jax.tree.map(np.array, nnx.state(batch, nnx.Param))
  loss, probes = _train_step(batch, optimizer, tokens, lengths, labels)
  assert np.isfinite(float(loss))
  after = jax.tree.map(np.array, nnx.state(batch, nnx.Param))
  unchanged = [
    jax.tree_util.keystr(path)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(before),
                            jax.tree_util.tree_leaves(after))
    if np.array_equal(a, b)
  ]
  assert len(jax.tree_util.tree_leaves(before)) > 20
  assert not unchanged, f'parameters not updated: {unchanged}'
  for name, (first, second) in zip(('lstm', 'cnn', 'cnn_lstm', 'cnn_lstm/skip'), probes):
    assert first.shape == (B, G)
    assert not np.allclose(first, second), f'{name}: no dropout in training mode'


def test_conv_skip_feeds_pooled_conv_features_to_the_head():
  """With conv_skip, the head sees [LSTM summary, pooled conv features]; the LSTM is still used."""
  cfg = _tiny('cnn_lstm', pooling='max', bidirectional=True, conv_kernel_sizes=(2, 3),
              conv_skip=True, dense_size=0, dropout=0.0)
  model = _build(cfg)
  assert model.head.logits.in_features == model.lstm.out_features + model.conv.out_features == 8 + 8
  assert _build(_tiny('cnn_lstm')).conv_skip is False
  assert _build(_tiny('lstm', conv_skip=True)).conv_skip is False  # No convolution to skip.
  model.eval()
  tokens, lengths = _tokens(), jnp.asarray(LENGTHS)
  conv = model.conv(model.embed(tokens), lengths)
  pooled = np.asarray(jnp.max(jnp.where(np.arange(L)[None, :, None] < LENGTHS[:, None, None],
                                        conv, -jnp.inf), axis=1))
  outputs, _ = model.lstm(conv, lengths)
  summary = np.asarray(jnp.max(jnp.where(np.arange(L)[None, :, None] < LENGTHS[:, None, None],
                                         outputs, -jnp.inf), axis=1))
  expected = np.concatenate([summary, pooled], axis=1) @ np.asarray(model.head.logits.kernel[...])
  expected += np.asarray(model.head.logits.bias[...])
  np.testing.assert_allclose(model(tokens, lengths), expected, rtol=1e-5, atol=1e-5)


def test_word_dropout_drops_whole_tokens():
  """Word dropout zeroes entire token vectors (scaled survivors) in training, nothing in eval."""
  model = _build(_tiny('lstm', word_dropout=0.5, embed_dim=6))
  assert _build(_tiny('lstm')).word_dropout is None  # Rate 0: no layer, no RNG stream.
  x = jnp.ones((4, 50, 6))
  model.train()
  y = np.asarray(model.word_dropout(x))
  per_token = y.reshape(-1, 6)
  assert set(np.unique(per_token)) == {0.0, 2.0}
  np.testing.assert_array_equal(per_token.min(axis=1), per_token.max(axis=1))
  assert 0.3 < (per_token[:, 0] == 0).mean() < 0.7
  model.eval()
  np.testing.assert_array_equal(model.word_dropout(x), x)


def _lstm_params(e, h):
  # nnx.OptimizedLSTMCell: dense_i [e, 4h] (no bias) and dense_h [h, 4h] + bias [4h].
  return 4 * (e * h + h * h + h)


def _dense_params(i, o):
  return i * o + o


def test_seed_parameter_counts():
  e, h, dense, filters, k = 100, 30, 41, 128, 5
  embed = V * e
  conv = k * e * filters + filters
  head = _dense_params(h, dense) + _dense_params(dense, G)
  expected = {
    'seed_lstm': embed + _lstm_params(e, h) + head,
    'seed_cnn': embed + conv + _dense_params(filters, dense) + _dense_params(dense, G),
    'seed_cnn_lstm': embed + conv + _lstm_params(filters, h) + head,
  }
  assert expected == {'seed_lstm': 22_201, 'seed_cnn': 74_627, 'seed_cnn_lstm': 89_689}
  for name, count in expected.items():
    assert _abstract_params(_config(name)) == count, name


def test_strong_cnn_parameter_count():
  # The tuned CNN: widths 1 and 2 x 128 filters over 128-d embeddings, no hidden dense layer.
  conv = sum(k * 128 * 128 + 128 for k in (1, 2))
  assert _abstract_params(_config('cnn')) == V * 128 + conv + _dense_params(2 * 128, G)


def test_unknown_model_lists_known_names():
  with pytest.raises(GenreJaxError, match=r'unknown model .*cnn, cnn_lstm, lstm'):
    nnx.eval_shape(lambda: _build(_tiny('transformer')))


def test_bad_pooling_is_a_user_error():
  with pytest.raises(GenreJaxError, match='pooling'):
    nnx.eval_shape(lambda: _build(_tiny('cnn', pooling='median')))


def test_register_model():
  @models.register_model('_test_constant')
  def build(cfg, *, vocab_size, num_labels, pad_id, rngs):
    del cfg, vocab_size, pad_id, rngs
    return lambda tokens, lengths: jnp.zeros((tokens.shape[0], num_labels))

  try:
    model = _build(_tiny('_test_constant'))
    assert model(_tokens(), jnp.asarray(LENGTHS)).shape == (B, G)
  finally:
    del models.MODELS['_test_constant']
