"""Tests for genre_jax.data.download against a local HTTP server (never the internet)."""

import dataclasses
import functools
import hashlib
import http.server
import socket
import threading

import pytest

from genre_jax import errors
from genre_jax.data import download
from genre_jax.data import registry

CONTENT = b'id,title,genre,overview\n1,A,Drama,Some text\n'


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  """Serves a directory with `file.csv` on 127.0.0.1; yields the base URL."""
  root = tmp_path_factory.mktemp('www')
  (root / 'file.csv').write_bytes(CONTENT)
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
  handler.log_message = lambda *args: None
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  yield f'http://127.0.0.1:{httpd.server_address[1]}'
  httpd.shutdown()
  httpd.server_close()


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
  monkeypatch.delenv(download.MIRROR_ENV, raising=False)
  monkeypatch.delenv(download.CACHE_ENV, raising=False)


def make_spec(url, content=CONTENT):
  return registry.DatasetSpec(name='toy', format='tmdb_csv', relpath='toy/file.csv', url=url,
                              sha256=hashlib.sha256(content).hexdigest(), size=len(content))


def test_download_then_cache(server, tmp_path):
  spec = make_spec(f'{server}/file.csv')
  path = download.fetch(spec, cache_dir=tmp_path)
  assert path == tmp_path / 'toy' / 'file.csv' and path.read_bytes() == CONTENT
  assert sorted(p.name for p in path.parent.iterdir()) == ['file.csv']  # No temporary left.
  # Second call: served from the cache (the URL is now unreachable).
  assert download.fetch(dataclasses.replace(spec, url=f'{server}/gone'), cache_dir=tmp_path) == path


def test_cache_dir_from_env(server, tmp_path, monkeypatch):
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / 'env_cache'))
  path = download.fetch(make_spec(f'{server}/file.csv'))
  assert path == tmp_path / 'env_cache' / 'toy' / 'file.csv'


def test_wrong_checksum_leaves_nothing(server, tmp_path):
  spec = make_spec(f'{server}/file.csv', content=b'something else')
  with pytest.raises(errors.DataError, match='checksum mismatch .*Nothing was saved'):
    download.fetch(spec, cache_dir=tmp_path)
  assert not any(p.is_file() for p in tmp_path.rglob('*'))


def test_unreachable_server_says_what_to_do(tmp_path):
  with socket.socket() as s:  # A port with nothing listening.
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}/file.csv'
  with pytest.raises(errors.DataError) as e:
    download.fetch(make_spec(url), cache_dir=tmp_path, timeout=5)
  message = str(e.value)
  assert f'download {url}' in message
  assert str(tmp_path / 'toy' / 'file.csv') in message
  assert 'set GENRE_JAX_MIRROR to a directory holding toy/file.csv' in message
  assert not any(p.is_file() for p in tmp_path.rglob('*'))


def test_http_error_is_a_data_error(server, tmp_path):
  with pytest.raises(errors.DataError, match='cannot download'):
    download.fetch(make_spec(f'{server}/missing.csv'), cache_dir=tmp_path)


def test_mirror_first_and_checked(tmp_path, monkeypatch):
  mirror = tmp_path / 'mirror'
  (mirror / 'toy').mkdir(parents=True)
  (mirror / 'toy' / 'file.csv').write_bytes(CONTENT)
  spec = make_spec('http://127.0.0.1:9/never')
  assert download.fetch(spec, cache_dir=tmp_path / 'c', mirror=mirror) == mirror / 'toy/file.csv'
  monkeypatch.setenv(download.MIRROR_ENV, str(mirror))
  assert download.fetch(spec, cache_dir=tmp_path / 'c') == mirror / 'toy/file.csv'
  (mirror / 'toy' / 'file.csv').write_bytes(b'damaged')
  with pytest.raises(errors.DataError, match='checksum mismatch .*mirror'):
    download.fetch(spec, cache_dir=tmp_path / 'c')


def test_corrupt_cache_is_downloaded_again(server, tmp_path):
  (tmp_path / 'toy').mkdir()
  (tmp_path / 'toy' / 'file.csv').write_bytes(b'truncated')
  path = download.fetch(make_spec(f'{server}/file.csv'), cache_dir=tmp_path)
  assert path.read_bytes() == CONTENT


def test_no_public_address(tmp_path):
  with pytest.raises(errors.DataError, match='no public address.*--dataset allmovie --path data/'):
    download.fetch(registry.get_spec('allmovie'), cache_dir=tmp_path)
