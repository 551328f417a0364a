"""Shared test fixtures: a tiny synthetic data set with learnable genres, and the tiny config."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

# Tests compile many tiny programs and run them briefly: cheaper XLA optimisation saves minutes.
# Subprocesses started by tests inherit this.
os.environ.setdefault(
    'XLA_FLAGS', '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true')

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

GENRE_WORDS = {
    'Action': ['explosion', 'chase', 'fight', 'gun'],
    'Comedy': ['funny', 'laugh', 'joke', 'prank'],
    'Drama': ['family', 'grief', 'struggle', 'tears'],
    'Horror': ['ghost', 'blood', 'haunted', 'scream'],
    'Romance': ['love', 'kiss', 'wedding', 'heart'],
    'Science Fiction': ['alien', 'spaceship', 'robot', 'planet'],
}
FILLER = ['the', 'a', 'man', 'woman', 'city', 'town', 'year', 'night', 'day', 'story', 'must',
          'find', 'when', 'after', 'with', 'their', 'old', 'new', 'young', 'life']


def synthetic_records(n: int, seed: int = 0) -> list[dict]:
  """`n` records whose genres are signalled by genre words mixed into filler text."""
  rng = np.random.default_rng(seed)
  names = list(GENRE_WORDS)
  out = []
  for i in range(n):
    k = int(rng.integers(1, 4))
    genres = sorted(rng.choice(len(names), size=k, replace=False).tolist())
    words = list(rng.choice(FILLER, size=int(rng.integers(4, 14))))
    for g in genres:
      words += list(rng.choice(GENRE_WORDS[names[g]], size=2))
    rng.shuffle(words)
    out.append({'id': f'm{i}', 'title': f'Movie {i}', 'text': ' '.join(words),
                'genres': [names[g] for g in genres]})
  return out


@pytest.fixture(scope='session')
def synthetic_jsonl(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp('data') / 'synthetic.jsonl'
  with open(path, 'w') as f:
    for r in synthetic_records(240):
      f.write(json.dumps(r) + '\n')
  return path


def tiny_config(data_path: pathlib.Path | None = None, **overrides):
  """configs/tiny.py, pointed at `data_path` (a synthetic JSON-lines file) when given."""
  import configs
  config = configs.load('tiny')
  if data_path is not None:
    config.data.path = str(data_path)
    config.data.format = 'jsonl'
    config.data.max_examples = None
  config.progress_bar = False
  config.update_from_flattened_dict(overrides)
  return config


def mirror_or_skip() -> str:
  mirror = os.environ.get('GENRE_JAX_MIRROR')
  if not mirror or not os.path.isdir(mirror):
    pytest.skip('GENRE_JAX_MIRROR is not set to the data mirror (CI sets it to ../shared/data).')
  return mirror


def run_module(module, *args, env=None, check=True):
  """Runs `python -m module args` from the repo root; returns the CompletedProcess."""
  full_env = {**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})}
  proc = subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f'{module} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
  return proc


def config_args(data_path, *extra):
  return ['--config', 'configs/tiny.py', f'--config.data.path={data_path}',
          '--config.data.format=jsonl', '--config.data.max_examples=240',
          '--config.progress_bar=False', *extra]
