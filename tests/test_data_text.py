"""Tests for genre_jax.data.text: WordTokenizer and LabelEncoder."""

import json
import types
import warnings

import numpy as np
import pytest

from genre_jax.data import text

TRAIN = ['The cat sat.', 'The dog sat on the cat!', 'A dog, a cat; and I.']


def test_vocab_order_pad_oov_frequency_then_alphabetical():
  tok = text.WordTokenizer.fit(TRAIN, vocab_size=100)
  # the 3, cat 3, a 2, dog 2, sat 2, and 1, i 1, on 1.
  assert tok.vocab == ['<pad>', '<oov>', 'cat', 'the', 'a', 'dog', 'sat', 'and', 'i', 'on']
  assert (tok.pad_id, tok.oov_id, tok.vocab_size) == (0, 1, 10)
  assert tok.tokenize('I, a cat') == ['i', 'a', 'cat']  # One-character words are kept.


def test_vocab_size_and_min_count():
  assert text.WordTokenizer.fit(TRAIN, vocab_size=4).vocab == ['<pad>', '<oov>', 'cat', 'the']
  assert text.WordTokenizer.fit(TRAIN, vocab_size=100, min_count=3).vocab_size == 4


def test_encode_shapes_padding_truncation_and_oov():
  tok = text.WordTokenizer.fit(TRAIN, vocab_size=100)
  tokens, lengths = tok.encode(['the cat', 'zebra', '', 'the cat sat on the dog'], max_length=4)
  assert tokens.dtype == np.int32 and tokens.shape == (4, 4)
  assert lengths.dtype == np.int32 and lengths.tolist() == [2, 1, 1, 4]
  np.testing.assert_array_equal(tokens, [[3, 2, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [3, 2, 6, 9]])


def test_token_dtype_is_the_smallest_that_holds_every_id():
  assert [text.token_dtype(v) for v in (2, 256, 257, 65_536, 65_537, 250_002)] == [
      np.uint8, np.uint8, np.uint16, np.uint16, np.int32, np.int32]


def test_encode_into_narrow_tokens_and_ids_that_do_not_fit():
  tok = text.WordTokenizer.fit(TRAIN, vocab_size=100)
  expected, lengths = tok.encode(TRAIN, 5)
  tokens = np.zeros((len(TRAIN), 5), np.uint8)
  text.encode_into(tok, TRAIN, tokens, np.ones(len(TRAIN), np.int32), chunk_size=2)
  np.testing.assert_array_equal(tokens, expected)
  too_many = types.SimpleNamespace(encode=lambda texts, max_length: (
      np.full((len(texts), max_length), 256, np.int32), np.ones(len(texts), np.int32)))
  with pytest.raises(ValueError, match='does not fit uint8'):
    text.encode_into(too_many, TRAIN, tokens, lengths)


def test_tokenizer_round_trip():
  tok = text.WordTokenizer.fit(TRAIN, vocab_size=100)
  d = json.loads(json.dumps(tok.to_dict()))
  assert d['kind'] == 'word'
  again = text.tokenizer_from_dict(d)
  np.testing.assert_array_equal(again.encode(TRAIN, 8)[0], tok.encode(TRAIN, 8)[0])
  with pytest.raises(Exception, match='unknown tokenizer kind'):
    text.tokenizer_from_dict({'kind': 'nope'})


def test_label_encoder_sorted_classes_and_unknown_counts():
  labels = text.LabelEncoder.fit([['Drama', 'Crime'], ['Comedy']])
  assert labels.classes == ['Comedy', 'Crime', 'Drama']
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # sklearn's "unknown class" warning is handled.
    y, unknown = labels.transform([['Drama', 'War'], ['War', 'Comedy', 'TV Movie'], []])
  assert y.dtype == np.float32
  np.testing.assert_array_equal(y, [[0, 0, 1], [1, 0, 0], [0, 0, 0]])
  assert unknown == {'War': 2, 'TV Movie': 1}
  assert labels.inverse_transform(y) == [['Drama'], ['Comedy'], []]
  again = text.LabelEncoder.from_dict(json.loads(json.dumps(labels.to_dict())))
  assert again.classes == labels.classes


def test_word_splitting_matches_sklearn_analyzer_on_real_synopses():
  """The tokenizers-based split equals sklearn's `\\b\\w+\\b` analyzer on nearly every synopsis."""
  from sklearn.feature_extraction.text import CountVectorizer
  from genre_jax.data import download, parsers, registry
  from tests.conftest import mirror_or_skip
  mirror_or_skip()
  records, _ = parsers.load_records(download.fetch(registry.get_spec('tmdb_10k')), 'tmdb_csv')
  analyze = CountVectorizer(token_pattern=r'(?u)\b\w+\b').build_analyzer()
  tok = text.WordTokenizer([text.PAD, text.OOV])
  texts = list(records['text'])
  same = sum(tok.tokenize(t) == analyze(t) for t in texts)
  assert same / len(texts) > 0.99, same


# ---- The fast word splitting and fit against the `tokenizers` pipeline they replace ---------

UNICODE = ['ΣΊΣΥΦΟΣ ΟΔΟΣ', 'İstanbul', 'ﬁne ﬂight', 'Ｆｕｌｌｗｉｄｔｈ，ｔｅｘｔ',
           'a\u00a0b\u2003c\u3000d', 'x\x1cy\x1fz\x85w', '¿Qué? ¡Sí!', '日本語、テスト。「引用」',
           '😀 emoji🎬film', 'e\u0301te\u0301', 'ß STRASSE straße', 'a‐b–c—d', '«guillemets» ‹x›',
           'tab\tnew\nline\r\x0b\x0c', '', '   ', '...', 'Ǆ ǅ ǆ', 'x\u200by', 'a·b', '\u2028\u2029',
           'Crème Brûlée', "l'été — d’accord"]


def reference_words(lowercase=True):
  """The words as WordTokenizer found them before: the `tokenizers` pipeline, text by text."""
  from tokenizers import normalizers, pre_tokenizers
  norm = normalizers.Sequence([normalizers.NFKC()] +
                              ([normalizers.Lowercase()] if lowercase else []))
  pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                 pre_tokenizers.Punctuation(behavior='removed')])
  return lambda t: [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))]


def reference_fit(texts, vocab_size, min_count=1, lowercase=True):
  """The vocabulary as `WordTokenizer.fit` built it before (a Counter over those words)."""
  import collections
  words = reference_words(lowercase)
  counts = collections.Counter(w for t in texts for w in words(t))
  ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
  return [text.PAD, text.OOV] + ranked[:vocab_size - 2]


@pytest.mark.parametrize('lowercase', [True, False])
def test_words_equal_the_tokenizers_pipeline(lowercase):
  tok = text.WordTokenizer([text.PAD, text.OOV], lowercase)
  ref = reference_words(lowercase)
  for t in UNICODE + [f'a{chr(c)}b' for c in range(128)]:
    assert tok.tokenize(t) == ref(t), repr(t)
  every = ' '.join(f'a{chr(c)}b{chr(c)}' for c in range(0x80, 0x3100))  # Learnt in one go.
  assert tok.tokenize(every) == ref(every)


@pytest.mark.parametrize('vocab_size, min_count', [(20_000, 1), (40, 1), (30, 3), (2, 1)])
def test_fit_equals_the_counter_reference(vocab_size, min_count):
  from tests.conftest import synthetic_records
  texts = [r['text'] for r in synthetic_records(300)] + UNICODE * 3
  fitted = text.WordTokenizer.fit(texts, vocab_size, min_count)
  assert fitted.vocab == reference_fit(texts, vocab_size, min_count)


def test_fit_equals_the_counter_reference_on_real_synopses():
  from genre_jax.data import download, parsers, registry
  from tests.conftest import mirror_or_skip
  mirror_or_skip()
  records, _ = parsers.load_records(download.fetch(registry.get_spec('tmdb_10k')), 'tmdb_csv')
  texts = list(records['text'])
  for vocab_size, min_count in [(20_000, 1), (20_000, 2), (5_000, 1)]:
    assert text.WordTokenizer.fit(texts, vocab_size, min_count).vocab == reference_fit(
        texts, vocab_size, min_count)


def test_chunked_encoding_equals_one_chunk_and_the_reference_words():
  from tests.conftest import synthetic_records
  texts = [r['text'] for r in synthetic_records(50)] + UNICODE + ['word ' * 40]
  tok = text.WordTokenizer.fit(texts[::2], vocab_size=60)
  whole = tok.encode(texts, 12, chunk_size=10_000)
  for chunk_size in (1, 7):
    for a, b in zip(tok.encode(texts, 12, chunk_size=chunk_size), whole):
      np.testing.assert_array_equal(a, b)
  for row, words in enumerate(map(reference_words(), texts)):
    ids = [tok.vocab.index(w) if w in tok.vocab else 1 for w in words][:12] or [1]
    assert whole[1][row] == len(ids) and whole[0][row].tolist() == ids + [0] * (12 - len(ids))
  tokens, lengths = np.zeros((len(texts), 12), np.int32), np.ones(len(texts), np.int32)
  text.encode_into(tok, texts, tokens, lengths, chunk_size=5)
  np.testing.assert_array_equal(tokens, whole[0])
  np.testing.assert_array_equal(lengths, whole[1])
