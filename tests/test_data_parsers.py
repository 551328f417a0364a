"""Tests for genre_jax.data.parsers and registry: record shape, cleaning, and bad input."""

import json

import pytest

from genre_jax import errors
from genre_jax.data import parsers
from genre_jax.data import registry

ALLMOVIE = [  # The AllMovie export's schema, genres as a list or as one string.
    dict(name='Alpha', genre=['Drama', ' Crime ', 'Drama'], released_year=1999, poster='p.jpg',
         language='English', director='A', domain='allmovie', duration=100,
         synopsis='A banker goes to prison.', trailer='', cast=['X'], url='u1', id=101),
    dict(name='Beta', genre='Comedy, Romance', released_year=2001, poster='', language='English',
         director='B', domain='allmovie', duration=90, synopsis='Two people meet.', trailer='',
         cast=[], url='u2', id=102),
    dict(name='Gamma', genre=[], released_year=2002, poster='', language='French', director='C',
         domain='allmovie', duration=80, synopsis='No genre here.', trailer='', cast=[],
         url='u3', id=103),
    dict(name='Delta', genre='Horror', released_year=2003, poster='', language='English',
         director='D', domain='allmovie', duration=85, synopsis='   ', trailer='', cast=[],
         url='u4', id=104),
]


def write_allmovie(path, rows=ALLMOVIE, lines=False):
  text = '\n'.join(json.dumps(r) for r in rows) if lines else json.dumps(rows, indent=2)
  path.write_text(text, encoding='utf-8')
  return path


@pytest.mark.parametrize('lines', [False, True], ids=['json_array', 'json_lines'])
def test_allmovie_json_array_and_lines(tmp_path, lines):
  path = write_allmovie(tmp_path / 'allmovie.json', lines=lines)
  records, report = parsers.load_records(path, 'allmovie_json')
  assert list(records.columns) == ['id', 'title', 'text', 'genres']
  assert records.to_dict('records') == [
      dict(id='101', title='Alpha', text='A banker goes to prison.', genres=('Drama', 'Crime')),
      dict(id='102', title='Beta', text='Two people meet.', genres=('Comedy', 'Romance')),
  ]
  assert report == dict(source=str(path), format='allmovie_json', n_rows=4, kept=2,
                        dropped_no_text=1, dropped_no_genre=1, duplicate_genres_removed=1,
                        merged_genre_spellings={}, truncated=0)


def test_tmdb_csv_quoted_line_breaks_and_canonical_spelling(tmp_path):
  path = tmp_path / 'tmdb.csv'
  path.write_text('id,title,genre,original_language,overview\n'
                  '7,A,"Science Fiction,Drama",en,"Line one.\nLine two."\n'
                  '8,B,TV Movie,en,\n'  # No overview: dropped.
                  '9,C,,en,Has text\n')  # No genre: dropped.
  records, report = parsers.load_records(path, 'tmdb_csv')
  assert records.to_dict('records') == [
      dict(id='7', title='A', text='Line one.\nLine two.', genres=('Science Fiction', 'Drama'))]
  assert (report['dropped_no_text'], report['dropped_no_genre']) == (1, 1)


def test_generic_csv_default_id_title_and_separator(tmp_path):
  path = tmp_path / 'my.csv'
  path.write_text('plot,tags\nfirst plot,a|b\nsecond plot,b\n')
  records, _ = parsers.load_records(path, 'csv', text_column='plot', genre_column='tags',
                                    genre_separator='|')
  assert list(records['id']) == ['1', '2'] and list(records['title']) == ['', '']
  assert list(records['genres']) == [('a', 'b'), ('b',)]


def test_jsonl_named_columns_and_max_examples(tmp_path):
  path = tmp_path / 'my.jsonl'
  path.write_text('\n'.join(json.dumps(dict(key=f'k{i}', name=f'n{i}', body=f'text {i}',
                                            labels=['x'])) for i in range(5)) + '\n\n')
  records, report = parsers.load_records(path, 'jsonl', text_column='body', genre_column='labels',
                                         id_column='key', title_column='name', max_examples=3)
  assert list(records['id']) == ['k0', 'k1', 'k2'] and records['title'][2] == 'n2'
  assert (report['kept'], report['truncated'], report['n_rows']) == (3, 2, 5)


def test_registry():
  assert registry.get_spec('tmdb_10k').relpath == 'tmdb-top10k/top10K-TMDB-movies.csv'
  assert registry.get_spec('allmovie').url is None
  assert all(spec.card and spec.format in registry.FORMATS for spec in registry.REGISTRY.values())
  with pytest.raises(errors.DataError, match='tmdb_10k'):
    registry.get_spec('imdb')


# ---- Bad input -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
  with pytest.raises(errors.DataError, match='not found: .*nope.csv'):
    parsers.load_records(tmp_path / 'nope.csv', 'tmdb_csv')


def test_not_utf8_names_offset_and_line(tmp_path):
  path = tmp_path / 'latin1.csv'
  path.write_bytes('text,genres\nok,a\ncaf\xe9,b\n'.encode('latin-1'))
  with pytest.raises(errors.DataError, match=r'latin1.csv is not valid UTF-8: byte 0xe9 at '
                     r'offset 20 \(line 3\)'):
    parsers.load_records(path, 'csv')


def test_missing_column_lists_expected_and_found(tmp_path):
  path = tmp_path / 'my.csv'
  path.write_text('plot,genres\nx,y\n')
  with pytest.raises(errors.DataError) as e:
    parsers.load_records(path, 'csv')
  assert "lacks column(s) 'text'" in str(e.value) and "found: 'plot', 'genres'" in str(e.value)


def test_empty_after_cleaning_says_why(tmp_path):
  path = tmp_path / 'my.csv'
  path.write_text('text,genres\n,a\nx,\n  ,\n')
  with pytest.raises(errors.DataError, match=r'all 3 rows were dropped \(2 without text .*1 '
                     'without any genre'):
    parsers.load_records(path, 'csv')


def test_empty_file(tmp_path):
  (tmp_path / 'empty.jsonl').write_text('')
  with pytest.raises(errors.DataError, match='holds no records'):
    parsers.load_records(tmp_path / 'empty.jsonl', 'jsonl')


def test_duplicated_ids_named_with_rows(tmp_path):
  rows = ALLMOVIE[:2] + [dict(ALLMOVIE[1], name='Copy')]
  path = write_allmovie(tmp_path / 'dup.json', rows, lines=True)
  with pytest.raises(errors.DataError, match=r"1 duplicated ids: '102' \(rows 2, 3\)"):
    parsers.load_records(path, 'allmovie_json')


def test_malformed_json_line_names_line(tmp_path):
  path = tmp_path / 'bad.jsonl'
  path.write_text('{"text": "a", "genres": ["x"]}\n\n{"text": "b", "genres": [}\n')
  with pytest.raises(errors.DataError, match='bad.jsonl line 3 is not valid JSON'):
    parsers.load_records(path, 'jsonl')


def test_malformed_json_array_and_non_objects(tmp_path):
  path = tmp_path / 'bad.json'
  path.write_text('[\n{"text": "a"},\n{"text": }\n]')
  with pytest.raises(errors.DataError, match='not valid JSON: .* line 3'):
    parsers.load_records(path, 'jsonl')
  path.write_text('[{"text": "a", "genres": "x"}, 5]')
  with pytest.raises(errors.DataError, match='element 2 of the JSON array is a JSON int'):
    parsers.load_records(path, 'jsonl')


def test_malformed_csv(tmp_path):
  path = tmp_path / 'bad.csv'
  path.write_text('text,genres\na,b\nc,d,e,f\n')
  with pytest.raises(errors.DataError, match='bad.csv is not a well-formed CSV file'):
    parsers.load_records(path, 'csv')


def test_genres_equal_up_to_case_are_merged_to_the_most_frequent_spelling(tmp_path):
  path = tmp_path / 'd.jsonl'
  rows = [{'id': '1', 'text': 'a', 'genres': ['Comedy', ' drama ']},
          {'id': '2', 'text': 'b', 'genres': ['comedy', 'COMEDY']},
          {'id': '3', 'text': 'c', 'genres': ['Comedy', 'Drama']},
          {'id': '4', 'text': 'd', 'genres': ['drama']}]
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  records, report = parsers.load_records(path, 'jsonl')
  assert list(records['genres']) == [('Comedy', 'drama'), ('Comedy',), ('Comedy', 'drama'),
                                     ('drama',)]
  assert records['genres'][0] is records['genres'][2]  # Equal genre rows share one tuple.
  assert report['merged_genre_spellings'] == {'Comedy': ['COMEDY', 'comedy'],
                                              'drama': ['Drama']}


@pytest.mark.parametrize('genre, shown', [
    ({'a': 1}, '{"a": 1} is of type dict'),
    ([['Drama']], '["Drama"] is of type list'),
    (7, '7 is of type int'),
    (['Drama', 3.5], '3.5 is of type float'),
])
def test_non_string_genres_are_an_error_naming_the_record(tmp_path, genre, shown):
  path = tmp_path / 'd.jsonl'
  path.write_text(json.dumps({'id': 'x1', 'text': 'a', 'genres': ['Drama']}) + '\n' +
                  json.dumps({'id': 'x2', 'text': 'b', 'genres': genre}) + '\n')
  with pytest.raises(errors.DataError, match='record 2') as e:
    parsers.load_records(path, 'jsonl', id_column='id')
  assert shown in str(e.value) and "'x2'" in str(e.value)
