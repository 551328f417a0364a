"""Genre classifiers and the registry that builds them from `config.model`.

Every model maps `(tokens [batch, L] int32, lengths [batch] int32)` to logits `[batch, genres]`
float32; `model.train()` / `model.eval()` switch dropout on / off. Architectures are registered by
name:

* `lstm`: embedding -> [word dropout] -> (Bi)LSTM -> summary -> [dense] -> dropout -> logits.
  The summary is the LSTM's final state when `model.pooling == 'last'` (for a BiLSTM: the forward
  state after the last real token and the backward state after the first), otherwise the
  `max` / `average` of the outputs over the real positions.
* `cnn`: embedding -> Conv1D (several widths) -> pooling over time -> [dense] -> dropout -> logits.
* `cnn_lstm`: embedding -> Conv1D -> optional average pooling of width `conv_pool_size` (lengths
  shrink accordingly) -> LSTM over the convolved sequence -> summary as for `lstm` -> head. With
  `conv_skip`, the convolution's features are also pooled over time (`pooling`; `max` when it is
  `last`) and concatenated with the LSTM's summary: a skip connection around the LSTM.
* `pretrained`: registered by `genre_jax.pretrained`, imported on first use (it needs optional
  dependencies).

The embedding table of `lstm`, `cnn` and `cnn_lstm` starts random, or from the pretrained
encoder's input word embeddings (`model.embed_init='pretrained'`, with its WordPiece ids:
`data.tokenizer='wordpiece'`), projected to `embed_dim` and trained or frozen
(`model.embed_trainable`).

A new architecture is a `Classifier` subclass and a builder decorated with
`@register_model('name')` taking `(model_config, *, vocab_size, num_labels, pad_id, rngs)`;
`build_model(config, tokenizer, num_labels)` builds the one a run's config names.
"""

from collections.abc import Callable
import importlib

import jax
import jax.numpy as jnp
from flax import nnx
import ml_collections

from genre_jax import layers
from genre_jax.errors import GenreJaxError



class Classifier(nnx.Module):
  """The base of every architecture: `model(tokens, lengths) -> logits`, and the hooks the trainer
  reads. The defaults suit a model trained end to end; an architecture overrides what differs.

  Attributes:
    trainable: the `nnx` filter of the parameters the optimizer updates (default: all).
    layer_depth: None, or `path -> (depth, top)` for layer-wise learning-rate decay
      (`config.layer_decay`); `path` is a parameter's key path as strings.
    frozen_features: True when `features(tokens, lengths) -> [B, H]` is a fixed function of the
      input; the trainer then computes it once per split and trains `classify([B, H])` on it.
  """
  trainable: nnx.filterlib.Filter = nnx.Param
  layer_depth: Callable[[tuple[str, ...]], tuple[int, int]] | None = None
  frozen_features: bool = False

  def __call__(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """tokens [batch, L] int32, lengths [batch] int32 -> logits [batch, num_labels] float32:
    `from_embeddings(embed_tokens(tokens), lengths)`."""
    return self.from_embeddings(self.embed_tokens(tokens), lengths)

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """tokens [batch, L] int32 -> the input word embeddings [batch, L, E] float32.

    With `from_embeddings`, the hook pair that lets attribution (`genre_jax.attribution`)
    differentiate the logits with respect to the embeddings of the words, for any architecture.
    """
    raise NotImplementedError

  def from_embeddings(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """x [batch, L, E] float32 word embeddings, lengths [batch] int32 -> logits [batch,
    num_labels] float32: the rest of the model after `embed_tokens` (dropout only in training
    mode)."""
    raise NotImplementedError


Builder = Callable[..., Classifier]
MODELS: dict[str, Builder] = {}

# Architectures defined in other modules, imported the first time they are asked for.
_LAZY_MODULES = {'pretrained': 'genre_jax.pretrained'}


def register_model(name: str) -> Callable[[Builder], Builder]:
  """Registers a model builder under `name` (decorator)."""

  def decorator(builder: Builder) -> Builder:
    MODELS[name] = builder
    return builder

  return decorator


def known_models() -> list[str]:
  """Every architecture name, including those registered by modules imported on first use."""
  return sorted(set(MODELS) | set(_LAZY_MODULES))


def create_model(
  model_config: ml_collections.ConfigDict,
  *,
  vocab_size: int,
  num_labels: int,
  pad_id: int,
  rngs: nnx.Rngs,
) -> nnx.Module:
  """Builds the architecture named `model_config.name`.

  Args:
    model_config: the `config.model` section.
    vocab_size: number of token ids (including padding and out-of-vocabulary).
    num_labels: number of genres (logits).
    pad_id: the padding token id.
    rngs: with streams 'params' and 'dropout'.

  Returns:
    The model, an `nnx.Module` called as `model(tokens, lengths) -> logits`.

  Raises:
    GenreJaxError: unknown name, or an optional dependency of the architecture is missing.
  """
  name = model_config.name
  if name not in MODELS and name in _LAZY_MODULES:
    try:
      importlib.import_module(_LAZY_MODULES[name])
    except ImportError as e:
      raise GenreJaxError(
        f'model {name!r} needs an optional dependency that is missing ({e}); '
        "install it with `pip install -e '.[pretrained]'`"
      ) from e
  if name not in MODELS:
    known = known_models()
    raise GenreJaxError(f'unknown model {name!r}; known models: {", ".join(known)}')
  return MODELS[name](
    model_config, vocab_size=vocab_size, num_labels=num_labels, pad_id=pad_id, rngs=rngs
  )


def build_model(config: ml_collections.ConfigDict, tokenizer, num_labels: int) -> Classifier:
  """The model `config.model` names, for `tokenizer`'s ids, initialised from `config.seed`."""
  return create_model(config.model, vocab_size=tokenizer.vocab_size, num_labels=num_labels,
                      pad_id=tokenizer.pad_id,
                      rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))


def _check_pooling(kind: str) -> str:
  if kind not in layers.POOLING_KINDS:
    raise GenreJaxError(
      f'unknown model.pooling {kind!r}; known: {", ".join(layers.POOLING_KINDS)}'
    )
  return kind


def _word_dropout(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Dropout | None:
  """Drops whole token vectors (one mask value per token, `[B, L, 1]`), or None at rate 0.

  Word dropout (as in deep averaging networks) regularises like `embed_dropout` but draws
  `embed_dim` times fewer random numbers, which matters on CPU. Built only for a positive rate, so
  configs without it keep their RNG streams (and checkpoints) unchanged.
  """
  rate = cfg.get('word_dropout', 0.0)
  return nnx.Dropout(rate, broadcast_dims=(2,), rngs=rngs) if rate else None


# The parameters a model with a frozen pretrained embedding table trains: all but the table.
_ALL_BUT_TABLE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains('embedding')))


def _embedding(cfg: ml_collections.ConfigDict, vocab_size: int, pad_id: int,
               rngs: nnx.Rngs) -> tuple[nnx.Module, bool]:
  """The token embedding of `cfg.embed_dim` features and whether its table is frozen: a random
  table (`embed_init='random'`), or the pretrained encoder's input word embeddings
  (`'pretrained'`, `model.pretrained_path` or the bundled MiniLM; `embed_trainable` False freezes
  the table), projected to `embed_dim` when the encoder's width differs."""
  init = cfg.get('embed_init', 'random')
  if init == 'random':
    return layers.Embed(vocab_size, cfg.embed_dim, pad_id=pad_id, rngs=rngs), False
  if init != 'pretrained':
    raise GenreJaxError(f"unknown model.embed_init {init!r}; known: random, pretrained")
  from genre_jax import pretrained  # Optional dependencies (safetensors, tokenizers).
  table = pretrained.input_embeddings(cfg.get('pretrained_path'))
  if table.shape[0] != vocab_size:
    raise GenreJaxError(
        f'model.embed_init=pretrained: the checkpoint has {table.shape[0]} word embeddings but '
        f'the tokenizer {vocab_size} ids; use data.tokenizer=wordpiece with the same checkpoint.')
  frozen = not cfg.get('embed_trainable', True)
  return layers.ProjectedEmbed(table, cfg.embed_dim, rngs=rngs), frozen


def _maybe(layer, x: jax.Array) -> jax.Array:
  return x if layer is None else layer(x)


class WordClassifier(Classifier):
  """The base of the lstm, cnn and cnn_lstm architectures: a token embedding (random, or the
  pretrained encoder's input embeddings, see `_embedding`), then word and embedding dropout."""

  def _init_embedding(self, cfg: ml_collections.ConfigDict, vocab_size: int, pad_id: int,
                      rngs: nnx.Rngs) -> None:
    self.embed, self.embed_frozen = _embedding(cfg, vocab_size, pad_id, rngs)
    self.word_dropout = _word_dropout(cfg, rngs)
    self.embed_dropout = nnx.Dropout(cfg.embed_dropout, rngs=rngs)

  @property
  def trainable(self) -> nnx.filterlib.Filter:
    """The parameters to optimise: all, or all but a frozen pretrained embedding table."""
    return _ALL_BUT_TABLE if self.embed_frozen else nnx.Param

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """tokens [batch, L] int32 -> [batch, L, embed_dim] float32."""
    return self.embed(tokens)

  def _dropped(self, x: jax.Array) -> jax.Array:
    """x [batch, L, embed_dim] with word and embedding dropout (training mode only)."""
    return self.embed_dropout(_maybe(self.word_dropout, x))


class LSTMClassifier(WordClassifier):
  """Embedding -> [Conv1D -> average pooling] -> LSTM -> summary -> head.

  With `conv=None` this is the `lstm` architecture, otherwise `cnn_lstm`.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, *, vocab_size: int, num_labels: int,
               pad_id: int, conv: bool, rngs: nnx.Rngs):
    self.pooling = _check_pooling(cfg.pooling)
    self._init_embedding(cfg, vocab_size, pad_id, rngs)
    features = cfg.embed_dim
    if conv:
      self.conv = layers.Conv1D(features, cfg.conv_filters, cfg.conv_kernel_sizes,
                                activation=cfg.conv_activation, rngs=rngs)
      features = self.conv.out_features
    else:
      self.conv = None
    self.conv_pool_size = int(cfg.conv_pool_size) if conv else 0
    self.conv_skip = bool(conv and cfg.get('conv_skip', False))
    self.lstm = layers.LSTM(features, cfg.lstm_hidden, num_layers=cfg.lstm_layers,
                            bidirectional=cfg.bidirectional, rngs=rngs)
    summary_features = self.lstm.out_features + (features if self.conv_skip else 0)
    self.head = layers.Head(summary_features, num_labels, dense_size=cfg.dense_size,
                            activation=cfg.dense_activation, dropout=cfg.dropout, rngs=rngs)

  def from_embeddings(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """x [batch, L, embed_dim], lengths [batch] int32 -> logits [batch, num_labels] float32."""
    x = self._dropped(x)
    if self.conv is not None:
      x = self.conv(x, lengths)
      if self.conv_pool_size > 1:
        x, lengths = layers.average_pool_windows(x, lengths, self.conv_pool_size)
    outputs, final = self.lstm(x, lengths)
    if self.pooling == 'last':
      summary = final
    else:
      summary = layers.pool_over_time(outputs, lengths, self.pooling)
    if self.conv_skip:  # [B, lstm features + conv features]
      skip_pooling = 'max' if self.pooling == 'last' else self.pooling
      summary = jnp.concatenate(
          [summary, layers.pool_over_time(x, lengths, skip_pooling)], axis=-1)
    return self.head(summary)


class CNNClassifier(WordClassifier):
  """Embedding -> Conv1D (several widths) -> pooling over time -> head."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, vocab_size: int, num_labels: int,
               pad_id: int, rngs: nnx.Rngs):
    self.pooling = _check_pooling(cfg.pooling)
    self._init_embedding(cfg, vocab_size, pad_id, rngs)
    self.conv = layers.Conv1D(cfg.embed_dim, cfg.conv_filters, cfg.conv_kernel_sizes,
                              activation=cfg.conv_activation, rngs=rngs)
    self.head = layers.Head(self.conv.out_features, num_labels, dense_size=cfg.dense_size,
                            activation=cfg.dense_activation, dropout=cfg.dropout, rngs=rngs)

  def from_embeddings(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """x [batch, L, embed_dim], lengths [batch] int32 -> logits [batch, num_labels] float32."""
    x = self._dropped(x)
    x = self.conv(x, lengths)
    return self.head(layers.pool_over_time(x, lengths, self.pooling))


@register_model('lstm')
def build_lstm(cfg, *, vocab_size, num_labels, pad_id, rngs):
  return LSTMClassifier(cfg, vocab_size=vocab_size, num_labels=num_labels, pad_id=pad_id,
                        conv=False, rngs=rngs)


@register_model('cnn')
def build_cnn(cfg, *, vocab_size, num_labels, pad_id, rngs):
  return CNNClassifier(cfg, vocab_size=vocab_size, num_labels=num_labels, pad_id=pad_id,
                       rngs=rngs)


@register_model('cnn_lstm')
def build_cnn_lstm(cfg, *, vocab_size, num_labels, pad_id, rngs):
  return LSTMClassifier(cfg, vocab_size=vocab_size, num_labels=num_labels, pad_id=pad_id,
                        conv=True, rngs=rngs)


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters (`nnx.Param` leaves) of `model`."""
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
