"""Tests for genre_jax.data.text: WordTokenizer and LabelEncoder."""

import json
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
