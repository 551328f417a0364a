"""Data parallelism: 4 CPU devices give the same losses as 1 device (subprocesses, XLA_FLAGS)."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO

SCRIPT = r'''
import json, sys
import jax, numpy as np, optax
from flax import nnx
sys.path.insert(0, {repo!r})
from tests.conftest import tiny_config, synthetic_records
from genre_jax import inference, models, optim, parallel, train_step
from genre_jax.data import text as text_lib
from genre_jax.errors import GenreJaxError

config = tiny_config(batch_size={batch_size})
records = synthetic_records(64)
tok = text_lib.WordTokenizer.fit([r['text'] for r in records], vocab_size=100)
labels = text_lib.LabelEncoder.fit([r['genres'] for r in records])
tokens, lengths = tok.encode([r['text'] for r in records], 16)
y, _ = labels.transform([r['genres'] for r in records])
mesh = parallel.make_mesh()
try:
  parallel.check_batch_size(config.batch_size, mesh)
except GenreJaxError as e:
  print(json.dumps({{'error': str(e)}})); sys.exit(0)
model = models.build_model(config, tok, len(labels.classes))
optimizer = nnx.Optimizer(model, optim.make_optimizer(config, 10), wrt=nnx.Param)
parallel.replicate(model, mesh); parallel.replicate(optimizer, mesh)
model.train()
step = train_step.TrainStep(model, optimizer, nnx.Param)
out = []
for i in range(5):
  sl = slice(8 * i, 8 * i + 8)
  batch = {{'tokens': tokens[sl], 'lengths': lengths[sl], 'labels': y[sl],
           'mask': np.ones(8, np.float32)}}
  out.append(float(step(parallel.shard_batch(batch, mesh), None)))
print(json.dumps({{'devices': jax.device_count(), 'losses': out}}))
'''


def _run(devices, batch_size=8):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') +
                       f' --xla_force_host_platform_device_count={devices}')}
  proc = subprocess.run([sys.executable, '-c', SCRIPT.format(repo=str(REPO),
                                                             batch_size=batch_size)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_devices_match_one_device():
  one, four = _run(1), _run(4)
  assert one['devices'] == 1 and four['devices'] == 4
  assert np.all(np.isfinite(one['losses']))
  np.testing.assert_allclose(four['losses'], one['losses'], atol=1e-5, rtol=0)
  assert one['losses'][-1] < one['losses'][0]  # Training actually moved.


def test_batch_not_divisible_by_devices_is_clear_error():
  result = _run(4, batch_size=6)
  assert 'not divisible by the number of devices (4)' in result['error']
