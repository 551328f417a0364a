"""Integrated gradients (genre_jax/attribution.py): the model hooks, completeness for every
architecture and for ensembles, per-token values against a plain loop, words, planted words."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
from experiments import attribution as experiments_attribution
from genre_jax import attribution
from genre_jax import calibration
from genre_jax import inference
from genre_jax import parallel
from genre_jax import trainer
from genre_jax.data import text as text_lib
from genre_jax.errors import GenreJaxError
from tests.conftest import tiny_config
from tests.test_models import ARCHITECTURES, _build, _tiny
from tests.test_pretrained import build as build_pretrained, tiny_dir  # noqa: F401 (fixture)

CLASSES = ['Action', 'Comedy', 'Drama', 'Horror', 'Romance']  # test_models' G = 5.
FILLER = ['a', 'the', 'space', 'crew', 'love', 'war', 'city', 'night', 'heist', 'town', 'dark',
          'in', 'of', 'and', 'old', 'new', 'man', 'woman', 'lost']  # Words the tiny BERT knows.
TEXTS = ['A lost robot in the dark city.', 'Love and war!', 'The old crew of the new ship',
         'ghost']
# Smooth versions of every architecture (tanh, average or last pooling): the quadrature converges
# fast, so the tests check the implementation to a tight tolerance. With ReLU and max pooling the
# integrand has kinks and needs more steps (measured on real data by experiments/attribution.py).
_SMOOTH = dict(conv_activation='tanh', dense_activation='tanh', conv_kernel_sizes=(2, 3))
SMOOTH = {
    'lstm': _tiny('lstm', pooling='average', bidirectional=True, **_SMOOTH),
    'lstm/last': _tiny('lstm', pooling='last', **_SMOOTH),
    'cnn': _tiny('cnn', pooling='average', **_SMOOTH),
    'cnn_lstm': _tiny('cnn_lstm', pooling='average', bidirectional=True, conv_pool_size=2,
                      conv_skip=True, **_SMOOTH),
}


def _word_tokenizer():
  return text_lib.WordTokenizer(['<pad>', '<oov>'] + FILLER + ['robot', 'ghost', 'ship'])


def _run(model, tokenizer, temperature=1.0, max_length=16):
  """A `Run` around an untrained model, with a per-genre calibration."""
  config = tiny_config()
  config.data.max_length = max_length
  model.eval()
  t = np.asarray(temperature, np.float64)
  cal = calibration.Calibration(t, 'temperature', per_genre=t.ndim == 1)
  thresholds = {'global': 0.5, 'per_genre': None, 'at_least_one': False}
  return inference.Run(None, config, model, tokenizer, text_lib.LabelEncoder(CLASSES), {},
                       thresholds, parallel.make_mesh(), cal)


def _check_records(records, run, texts, tol=1e-3):
  """Completeness within tol; probabilities those of `run.probs`; one attribution per word."""
  probs = run.probs(texts)
  for r, p in zip(records, probs):
    assert r['words'] == r['text'].split()
    for name, g in r['genres'].items():
      assert len(g['attributions']) == len(r['words'])
      delta = g['logit'] - g['baseline_logit']
      assert abs(sum(g['attributions']) - delta) <= tol * abs(delta) + 1e-6, (name, g)
      assert g['completeness_error'] < tol
      assert g['probability'] == pytest.approx(p[CLASSES.index(name)], abs=1e-5)
      assert g['probability'] == pytest.approx(1 / (1 + np.exp(-g['logit'])), abs=1e-9)


@nnx.jit
def _forward(model, tokens, lengths):
  return model(tokens, lengths)


@pytest.fixture(scope='module')
def runs():
  """Each smooth architecture as a run with per-genre temperatures (models shared by tests, so
  that their programs compile once)."""
  return {arch: _run(_build(cfg), _word_tokenizer(), [0.5, 1.0, 2.0, 1.5, 0.8])
          for arch, cfg in SMOOTH.items()}


# ---- Hooks ---------------------------------------------------------------------------------

@nnx.jit
def _both_ways(models_, tokens, lengths):
  return [(m(tokens, lengths), m.from_embeddings(m.embed_tokens(tokens), lengths))
          for m in models_]


def test_call_is_from_embeddings_of_embed_tokens():
  """Each architecture (with word and embedding dropout, which evaluation mode leaves out)."""
  archs = ['lstm/last', 'lstm/average/bi/2-layers', 'cnn/word-dropout',
           'cnn_lstm/average/bi/pool-2/skip']
  models_ = nnx.List([_build(ARCHITECTURES[arch]) for arch in archs])
  models_.eval()
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 50, (3, 7)), jnp.int32)
  lengths = jnp.asarray([7, 4, 1], jnp.int32)
  for arch, (want, got) in zip(archs, _both_ways(models_, tokens, lengths)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=arch)
  assert models_[0].embed_tokens(tokens).shape == (3, 7, 4)


def test_pretrained_hooks_compose_and_reach_a_frozen_encoder(tiny_dir):
  model = build_pretrained(tiny_dir, freeze_encoder=True)
  model.eval()
  tokens, lengths = map(jnp.asarray, pretrained_tokenizer(tiny_dir).encode(TEXTS, 12))

  @nnx.jit
  def check(model):
    x = model.embed_tokens(tokens)
    grad = jax.grad(lambda x: model.from_embeddings(x, lengths)[:, 0].sum())(x)
    return x, model.from_embeddings(x, lengths), model(tokens, lengths), grad

  x, got, want, grad = check(model)
  assert x.shape == (4, 12, 16)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(grad)).max() > 0  # Gradients pass the frozen encoder's stop_gradient.


def pretrained_tokenizer(path):
  from genre_jax import pretrained
  return pretrained.HFTokenizer.from_dir(path)


# ---- Completeness --------------------------------------------------------------------------

@pytest.mark.parametrize('arch', list(SMOOTH))
def test_completeness_for_every_architecture(arch, runs):
  """Attributions add up to logit - baseline_logit; the logit is the calibrated model logit,
  the baseline's the same of padding at every word."""
  run = runs[arch]
  texts = TEXTS + ['Robot ' * 20]  # Longer than max_length: the words past it get 0.
  records = attribution.explain(run, texts, genres=['Action', 'horror,Comedy'])
  _check_records(records, run, texts)
  assert list(records[0]['genres']) == ['Action', 'Horror', 'Comedy']
  assert records[4]['genres']['Action']['attributions'][16:] == [0.0] * 4
  assert records[0]['calibration'] == 'temperature'
  assert records[0]['steps'] == attribution.DEFAULT_STEPS
  tokens, lengths = run.tokenizer.encode(texts, 16)
  for key, ids in (('logit', tokens), ('baseline_logit', np.zeros_like(tokens))):
    z = run.calibration.logits(np.asarray(_forward(run.model, ids, lengths)))
    np.testing.assert_allclose([r['genres']['Horror'][key] for r in records], z[:, 3],
                               rtol=1e-5, atol=1e-6)


def test_completeness_for_the_pretrained_architecture(tiny_dir):
  run = _run(build_pretrained(tiny_dir), pretrained_tokenizer(tiny_dir), 1.3)
  records = attribution.explain(run, TEXTS, genres=CLASSES)
  _check_records(records, run, TEXTS)


def test_token_attributions_match_a_plain_loop(runs):
  """Per-token integrated gradients against a loop of jax.grad (midpoint rule, 500 points)."""
  run = runs['lstm']
  text = 'A lost robot in the dark city'
  got = attribution.explain(run, [text], genres=['Romance'], steps=64)[0]
  tokens, lengths = map(jnp.asarray, run.tokenizer.encode([text], 16))
  model = run.model
  x, b = model.embed_tokens(tokens), model.embed_tokens(jnp.zeros_like(tokens))
  grad = nnx.jit(lambda m, p: jax.grad(lambda p: m.from_embeddings(p, lengths)[0, 4] / 0.8)(p))
  alphas = (np.arange(500) + 0.5) / 500
  mean_grad = sum(grad(model, b + a * (x - b)) for a in alphas) / len(alphas)
  want = np.asarray(((x - b) * mean_grad).sum(-1))[0, :7]
  np.testing.assert_allclose(got['genres']['Romance']['attributions'], want, rtol=2e-3,
                             atol=1e-5)


def test_path_segments_are_halved_until_complete():
  """A ReLU CNN with max pooling (a piecewise-constant gradient along the path, with large
  jumps): 8 points miss the logit change by over 10%; halving the worst segments (at most
  MAX_SEGMENTS) brings every genre within TOLERANCE."""
  model = _build(ARCHITECTURES['cnn/max/widths-2-3'])
  model.embed.embedding.embedding[...] = model.embed.embedding.embedding[...] * 10
  run = _run(model, _word_tokenizer())
  errors = lambda records: [g['completeness_error'] for r in records for g in r['genres'].values()]
  plain = attribution.explain(run, TEXTS, genres=CLASSES, steps=8, max_segments=1)
  assert [r['segments'] for r in plain] == [1] * 4 and max(errors(plain)) > 0.1
  adaptive = attribution.explain(run, TEXTS, genres=CLASSES, steps=8)
  assert all(1 < r['segments'] <= attribution.MAX_SEGMENTS for r in adaptive)
  assert max(errors(adaptive)) <= attribution.TOLERANCE
  _check_records(adaptive, run, TEXTS, tol=attribution.TOLERANCE)


def _ensemble(members, weights, temperature):
  ens = inference.Ensemble(None, members, {'global': 0.5, 'per_genre': None,
                                           'at_least_one': False}, {}, weights)
  ens.calibration = calibration.Calibration(temperature, 'temperature')
  return ens


def test_ensemble_completeness_across_tokenizers(tiny_dir, runs):
  """A word CNN, a word LSTM and a WordPiece encoder, weighted: the members' shares of each word
  add up to the ensemble's calibrated logit minus its baseline's."""
  members = [runs['cnn'], _run(_build(SMOOTH['lstm'], seed=3), _word_tokenizer(), 1.2,
                               max_length=5),
             _run(build_pretrained(tiny_dir), pretrained_tokenizer(tiny_dir), 1.5)]
  ens = _ensemble(members, np.array([0.5, 0.2, 0.3]), 1.4)
  records = attribution.explain(ens, TEXTS, genres=CLASSES)
  _check_records(records, ens, TEXTS)
  # The ensemble's baseline logit, computed from the members' models directly.
  base = []
  for m in members:
    tokens, lengths = m.tokenizer.encode(TEXTS[:1], m.config.data.max_length)
    if m is members[2]:  # [CLS] ... [SEP] keep their ids, the word pieces become [PAD].
      tokens[0, 1:lengths[0] - 1] = 0
    else:
      tokens[:] = 0
    base.append(m.calibration.probs(np.asarray(_forward(m.model, tokens, lengths))))
  want = ens.calibration.logits(calibration.logit(ens.combine(base)))[0, 1]
  assert records[0]['genres']['Comedy']['baseline_logit'] == pytest.approx(float(want), abs=1e-4)


# ---- Words -----------------------------------------------------------------------------------

def test_word_pieces_and_words_map_to_whitespace_words(tiny_dir):
  text = 'The space ships!  Lost\u00a0robot'
  spans = attribution.word_spans(text)
  assert [text[s:e] for s, e in spans] == ['The', 'space', 'ships!', 'Lost', 'robot']
  hf = pretrained_tokenizer(tiny_dir)  # [CLS] the space ship ##s ! lost robot [SEP]
  tokens, lengths = hf.encode([text], 32)
  owners = attribution.token_words(hf, text, spans, 32, int(lengths[0]))
  assert owners.tolist() == [-1, 0, 1, 2, 2, 2, 3, 4, -1]
  assert attribution.token_words(hf, text, spans, 5, 5).tolist() == [-1, 0, 1, 2, -1]
  word = _word_tokenizer()  # the space ships lost robot (no punctuation)
  assert attribution.token_words(word, text, spans, 16, 5).tolist() == [0, 1, 2, 3, 4]
  text = "Don't stop-the crew"
  spans = attribution.word_spans(text)
  assert attribution.token_words(word, text, spans, 3, 3).tolist() == [0, 0, 1]
  assert attribution.token_words(word, '...', attribution.word_spans('...'), 4, 1).tolist() == [-1]


def test_a_text_without_words_has_zero_attributions(runs):
  (record,) = attribution.explain(runs['cnn'], ['... !!!'], genres=['Drama'])
  g = record['genres']['Drama']
  assert g['attributions'] == [0.0, 0.0] and g['logit'] == g['baseline_logit']


def test_default_genres_are_the_predicted_ones(runs):
  run = dataclasses.replace(runs['cnn'], thresholds=dict(runs['cnn'].thresholds))
  probs = run.probs(TEXTS)
  run.thresholds['global'] = float(np.sort(probs[0])[-4:-2].mean())  # Text 0: three genres.
  records = attribution.explain(run, TEXTS)
  for r, p in zip(records, probs):
    want = [CLASSES[g] for g in np.argsort(-p) if p[g] >= run.threshold] or [
        CLASSES[int(np.argmax(p))]]
    assert list(r['genres']) == want
  assert len(records[0]['genres']) == 3


@pytest.mark.parametrize('texts, genres, steps, message', [
    ([], None, None, 'non-empty list'), ('a text', None, None, 'non-empty list'),
    (['ok', '  '], None, None, 'synopsis 2 is empty'), (['ok', 3], None, None, 'synopsis 2'),
    (['ok'], ['Western'], None, "unknown genre 'Western'"), (['ok'], [3], None, 'strings'),
    (['ok'], None, 0, 'steps'), (['ok'], None, 2.5, 'steps'), (['ok'], None, 10**6, 'steps')])
def test_mistakes_are_genre_jax_errors(texts, genres, steps, message, runs):
  with pytest.raises(GenreJaxError, match=message):
    attribution.explain(runs['cnn'], texts, genres, steps)


# ---- Planted words -------------------------------------------------------------------------

def planted_records(n, seed=0):
  """'Robot' iff the text holds 'robot', 'Ghost' iff it holds 'ghost', 'Plain' iff neither."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    words = list(rng.choice(FILLER, size=int(rng.integers(4, 12))))
    robot, ghost = rng.uniform(size=2) < 0.4
    for planted, present in (('robot', robot), ('ghost', ghost)):
      if present:
        words.insert(int(rng.integers(0, len(words) + 1)), planted)
    genres = [g for g, p in (('Robot', robot), ('Ghost', ghost)) if p] or ['Plain']
    out.append({'id': f'p{i}', 'title': f'P {i}', 'text': ' '.join(words), 'genres': genres})
  return out


@pytest.fixture(scope='module')
def planted_jsonl(tmp_path_factory):
  path = tmp_path_factory.mktemp('planted') / 'planted.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in planted_records(300)))
  return path


def _planted_texts():
  return [r['text'] for r in planted_records(40, seed=1) if 'robot' in r['text'].split()][:6]


@pytest.mark.parametrize('arch', ['lstm', 'cnn', 'cnn_lstm'])
def test_a_planted_word_gets_the_top_attribution(arch, planted_jsonl, tmp_path):
  config = tiny_config(planted_jsonl, num_epochs=4, batch_size=16, learning_rate=2e-2)
  config.model.name = arch
  config.model.dense_size = 0
  trainer.train_and_evaluate(config, str(tmp_path / arch))
  _check_planted(inference.load_run(tmp_path / arch))


def test_a_planted_word_gets_the_top_attribution_pretrained(planted_jsonl, tiny_dir, tmp_path):
  config = configs.load('minilm')
  config.update_from_flattened_dict({
      'model.pretrained_path': str(tiny_dir), 'data.path': str(planted_jsonl),
      'data.format': 'jsonl', 'data.max_length': 24, 'num_epochs': 6, 'batch_size': 16,
      'learning_rate': 5e-3, 'eval_batch_size': 64, 'train_eval_examples': 0,
      'progress_bar': False, 'num_examples_to_show': 0})
  trainer.train_and_evaluate(config, str(tmp_path / 'pretrained'))
  _check_planted(inference.load_run(tmp_path / 'pretrained'))


def _check_planted(run):
  texts = _planted_texts()
  assert len(texts) == 6
  records = attribution.explain(run, texts, genres=['Robot'])
  for r in records:
    g = r['genres']['Robot']
    assert g['probability'] > 0.5, r  # The model learnt the rule ...
    top = r['words'][int(np.argmax(g['attributions']))]
    assert top == 'robot', (top, r)  # ... and the attribution names the word.
  # Deleting the top word loses the genre; deleting a random word hardly changes it.
  drop = experiments_attribution.comprehensiveness(run, records, ks=(1,), draws=3)['1']
  assert drop['pairs'] == 6 and drop['top'] > 0.3 and drop['met'], drop


def test_results_section_states_the_targets():
  stats = dict(pairs=10, mean=0.002, median=0.001, p95=0.004, max=0.02, over_1pct=1,
               max_absolute=0.01, max_of_mass=0.003, segments=2.5, seconds_per_synopsis=0.1)
  comp = {str(k): dict(pairs=10, top=0.2, random=0.01, ratio=20.0, met=True) for k in (1, 3, 5)}
  comp['3'] = dict(pairs=10, top=0.02, random=-0.01, ratio=None, met=True)
  model = dict(label='Tuned CNN', test_texts=100, load_average={'start': [1.0, 1.0, 1.0]}, test_split_size=1005, subsample_seed=0,
               steps=16, tolerance=0.005, max_segments=32, completeness=stats,
               comprehensiveness=comp, command='python -m experiments.attribution',
               study={'texts': 5, 'completeness': {'adaptive': {'16': stats},
                                                    'plain': {'16': stats}}})
  md = '\n'.join(experiments_attribution.section(
      {'models': [model], 'draws': 3, 'seed': 0, 'machine': {'cpu': 'x', 'cores': 2}}))
  assert '| Tuned CNN | 100 of 1005 (seed 0) | 10 |' in md
  assert '**met** for the mean (2.00e-03), **NOT met** for every decision (max 2.00e-02' in md
  assert 'random: **met** (random deletion raises the probability)' in md
  assert experiments_attribution.section(None) == []
