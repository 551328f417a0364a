"""Tests of the benchmark command: the report and the compiled PyTorch path (fast), and a
`--quick` smoke run (slow, torch)."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _results(step_ratio_torch_eps=100.0, predict_seconds=2.0):
  step = {'batch_size': 32, 'length': 128, 'seconds_per_step': 0.1, 'examples_per_second': 320.0,
          'repeat_seconds_per_step': [0.1], 'first_step_seconds': 5.1, 'flops_per_step': 6e9,
          'gflops': 60.0, 'fraction_of_matmul': 0.6}
  return {
      'command': 'python -m benchmarks.run', 'quick': False, 'started': '2026-01-01T00:00:00',
      'wall_seconds': 10.0, 'loadavg_start': [0.1, 0.1, 0.1], 'loadavg_end': [0.2, 0.2, 0.2],
      'machine': {'cpu_model': 'CPU', 'logical_cpus': 2, 'usable_cpus': 2, 'platform': 'linux',
                  'versions': {'jax': '0.10.2', 'torch': '2.13.0'}},
      'train_examples': 100, 'train_examples_full': 100, 'torch_available': True,
      'mode': {'warmup': 3, 'repeats': 5, 'step_seconds': 1.0, 'epoch_repeats': 3},
      'rows': [{'config': 'cnn', 'vocab_size': 14558,
                'jax': {'steps': {'32': step}, 'epoch_seconds': 4.0, 'epoch_widths': [32, 128],
                        'train_compile_seconds': 5.0, 'eval_compile_seconds': 1.0,
                        'matmul_gflops': 100.0},
                'torch': {'steps': {'32': {**step, 'examples_per_second': step_ratio_torch_eps}},
                          'epoch_seconds': 10.0}}],
      'breakdown': {'config': 'cnn', 'batch_size': 32, 'forward_ms': 30.0, 'backward_ms': 60.0,
                    'forward_backward_ms': 90.0, 'optimizer_update_ms': 10.0,
                    'train_step_ms': 100.0, 'pipeline_ms_per_batch': 2.0,
                    'profile': [{'op': 'convolution', 'ms_per_call': 25.0}]},
      'inference': {'train_command': 'x', 'n_test': 10, 'evaluate_synopses_per_second': 50.0,
                    'scoring_synopses_per_second': 500.0, 'eval_batch_size': 256,
                    'predict_seconds': predict_seconds, 'predict_first_seconds': 4.0},
  }


def test_report_renders_every_section_and_flags_missed_targets():
  from benchmarks import report
  met = report.markdown(_results())
  for heading in ('Training step throughput', 'One training epoch', "CNN train step",
                  'Compile time', 'Inference', 'Where the time goes', 'Targets'):
    assert heading in met
  assert '| cnn | 14,558 | 32 | 128 | 320.0 | 100.0 | 3.20 | yes |' in met
  assert 'Every target measured in this run was met.' in met
  assert '| `convolution` | 25.00 | 25% |' in met  # The profile of the slowest step.
  missed = report.markdown(_results(step_ratio_torch_eps=640.0, predict_seconds=5.0))
  assert 'train step cnn batch 32: ratio 0.50 < 1.0' in missed
  assert 'predict: 5.00 s > 3 s' in missed


def _timing(s):
  return {'seconds': s, 'cpu_seconds': s - 0.1, 'first_seconds': s + 4, 'repeat_seconds': [s] * 5}


def test_explain_section_shows_both_commands_and_the_verdict():
  from benchmarks import report
  r = {'command': 'python -m benchmarks.explain --workdir w', 'date': '2026-01-01',
       'machine': {'cpu_model': 'x', 'usable_cpus': 2}, 'workdir': 'w', 'synopsis': 'A.',
       'target_seconds': 3.0, 'load_average_at_start': [0.5], 'load_average_at_end': [0.7],
       'explain': _timing(2.5), 'predict': _timing(2.0)}
  text = report.explain_section(r)
  assert '| explain | 2.50 | 2.40 | 6.50 | 5 |' in text and '| predict | 2.00 |' in text
  assert 'cold process, warm cache: met (2.50 s)' in text
  r['explain'] = _timing(3.2)
  assert 'warm cache: **not met** (3.20 s)' in report.explain_section(r)


def test_paired_matmul_fraction_pairs_each_step_run_with_a_matmul():
  import statistics
  import time
  from benchmarks import workers
  calls = []

  def run_steps(k):  # A "train step" of 1 GFLOP taking 10 ms: 100 GFLOP/s.
    calls.append(k)
    time.sleep(0.01 * k)

  fraction, matmul, pairs, n = workers.paired_matmul_fraction(run_steps, 3, 1e9, repeats=3,
                                                              matmul_calls=1)
  assert calls == [3, 3, 3] and len(pairs) == 3 and n == 2048
  assert all(50 < step < 101 and m > 0 for step, m in pairs)
  assert fraction == statistics.median(step / m for step, m in pairs)
  assert matmul == statistics.median(m for _, m in pairs)


def test_report_says_how_the_matmul_was_measured():
  from benchmarks import report
  results = _results()
  assert 'after the train steps (median of 7 calls)' in report.markdown(results)
  results['rows'][0]['jax']['steps']['32'].update(
      matmul_gflops=120.0, fraction_of_matmul=0.496, matmul_pairs=[[60.0, 120.0], [54.0, 120.0]])
  text = report.markdown(results)
  # One decimal (49.6% must not print as the 50% target) and the spread of the pairs.
  assert 'in pairs' in text and '| 60.0 | 120.0 | 49.6% | 45%–50% | **no** |' in text
  assert 'embedding table frozen' not in text
  results['rows'][0]['jax']['steps']['32']['seconds_per_step_embedding_frozen'] = 0.06
  text = report.markdown(results)
  assert '`cnn` batch 32: 100.00 ms → 60.00 ms (the table: 40% of the step)' in text


def test_report_shows_host_memory_setting_and_page_faults():
  from benchmarks import report
  results = _results()
  text = report.markdown(results)
  assert 'keep_freed_memory' not in text and 'page faults' not in text  # Older result files.
  results['rows'][0]['jax'].update(keep_freed_memory=True)
  results['rows'][0]['jax']['steps']['32']['page_faults_per_step'] = 0.5
  results['rows'][0]['torch']['steps']['32']['page_faults_per_step'] = 2700.0
  text = report.markdown(results)
  assert 'first calls `genre_jax.host.keep_freed_memory()`' in text
  assert 'genre_jax: cnn 0.5; PyTorch: cnn 2,700.0.' in text
  results['rows'][0]['jax'].update(keep_freed_memory=False)
  assert "glibc malloc's defaults in every worker process" in report.markdown(results)


def test_page_faults_per_step_counts_fresh_pages():
  import mmap
  from benchmarks import workers
  assert workers.page_faults_per_step(lambda k: None, steps=4) < 1

  def touch_fresh_pages(k):  # A new 16 MB anonymous mapping a step, one byte written per page.
    for _ in range(k):
      with mmap.mmap(-1, 16 << 20) as m:
        for offset in range(0, len(m), mmap.PAGESIZE):
          m[offset] = 1

  assert workers.page_faults_per_step(touch_fresh_pages, steps=3) > 1000


def _with_compiled(results, eps, repeats=None, epoch_seconds=5.0, error=None):
  """`results` with a torch.compile row: `eps` examples/s (timed repeats `repeats`)."""
  if error:
    results['rows'][0]['torch_compile'] = {'compiled': True, 'error': error}
    return results
  step = {'batch_size': 32, 'length': 128, 'seconds_per_step': 32 / eps,
          'examples_per_second': eps, 'repeat_seconds_per_step': repeats or [32 / eps],
          'first_step_seconds': 40.0, 'compile_seconds': 39.5, 'graphs_compiled_first_step': 2,
          'graphs_compiled_timed': 0,
          'graph_breaks': {'Attempted to wrap RNN, GRU, or LSTM': 1}}
  results['rows'][0]['torch_compile'] = {
      'compiled': True, 'compile_backend': 'inductor', 'steps': {'32': step},
      'epoch_seconds': epoch_seconds, 'train_compile_seconds': 39.5}
  results['machine']['cxx'] = 'c++ (Debian 12.2.0-14) 12.2.0'
  results['torch_compile'] = True
  return results


def test_report_without_torch_compile_keeps_the_eager_table():
  from benchmarks import report
  text = report.markdown(_results())  # A results file without compiled figures (the GPU one).
  assert '| genre_jax / PyTorch | ≥ 1.0 |\n' in text and 'torch.compile ex/s' not in text
  assert 'Against `torch.compile`' not in text
  assert '- PyTorch compiled (`torch.compile`): not measured in this run.' in text
  gpu = report.markdown({**_results(), 'backend': 'gpu'})
  assert '- PyTorch: eager on CUDA' in gpu and 'shown for comparison only' in gpu


def test_report_shows_torch_compile_next_to_eager_in_every_row():
  from benchmarks import report
  # genre_jax 320 ex/s (its repeats: 0.1 s a step); torch.compile 200 ex/s, repeats apart.
  text = report.markdown(_with_compiled(_results(), 200.0, repeats=[0.15, 0.16, 0.17]))
  assert ('| genre_jax ex/s | PyTorch ex/s | genre_jax / PyTorch | ≥ 1.0 | torch.compile ex/s '
          '| genre_jax / torch.compile | genre_jax ahead of torch.compile? |') in text
  assert '| cnn | 14,558 | 32 | 128 | 320.0 | 100.0 | 3.20 | yes | 200.0 | 1.60 | yes |' in text
  # Epoch: genre_jax 4.0 s, eager 10.0 s, compiled 5.0 s.
  assert '| cnn | 4.00 | 32, 128 | 10.00 | 2.50 | yes | 5.00 | 1.25 | yes |' in text
  assert 'genre_jax is ahead of the compiled PyTorch reference in every row' in text
  assert '`torch.compile(model)` (backend: inductor' in text and 'c++ (Debian' in text
  # Compile time apart: its own column, not in the step times.
  assert '| config | train step s | eval step s | torch.compile train step s |' in text
  assert '| cnn | 5.00 | 1.00 | 39.50 |' in text
  assert ('`cnn` 2 graphs, 1 graph break (`Attempted to wrap RNN, GRU, or LSTM` ×1)' in text)


def test_report_says_in_words_where_torch_compile_is_ahead():
  from benchmarks import report
  text = report.markdown(_with_compiled(_results(), 400.0, epoch_seconds=3.0))
  row = next(l for l in text.splitlines() if l.startswith('| cnn | 14,558'))
  assert row.endswith('| 400.0 | 0.80 | **no: torch.compile is ahead**, 25% more examples/s '
                      'than genre_jax |')
  epoch = next(l for l in text.splitlines() if l.startswith('| cnn | 4.00'))
  assert epoch.endswith('| 3.00 | 0.75 | **no: torch.compile is ahead**, its epoch takes 25% '
                        'less time than genre_jax\'s |')
  assert 'genre_jax is **not** ahead of the compiled PyTorch reference' in text
  assert ('- train step cnn batch 32: **no: torch.compile is ahead**, 25% more examples/s than '
          'genre_jax (320.0 against 400.0 examples/s)') in text
  assert '- epoch cnn: **no: torch.compile is ahead**' in text
  assert 'every row' not in text
  # Ahead on the medians, but the repeats overlap: said so, and listed.
  text = report.markdown(_with_compiled(_results(), 300.0, repeats=[0.09, 0.107, 0.12]))
  assert ('| 300.0 | 1.07 | ahead on the medians by 7%, but the timed repeats overlap: not '
          'clearly ahead |') in text
  assert '- train step cnn batch 32: ahead on the medians by 7%' in text


def test_report_shows_a_torch_compile_failure_with_its_error():
  from benchmarks import report
  text = report.markdown(_with_compiled(_results(), 0, error='InductorError: no C++ compiler'))
  row = next(l for l in text.splitlines() if l.startswith('| cnn | 14,558'))
  assert row.endswith('| — | — | **torch.compile failed** (below) |')
  assert ('`torch.compile` failed for `cnn` on this machine, so it has no compiled figures: '
          '`InductorError: no C++ compiler`') in text
  assert '| cnn | 5.00 | 1.00 | failed |' in text


def test_against_compiled_words():
  from benchmarks import report
  jax_step = {'examples_per_second': 100.0, 'seconds_per_step': 0.32,
              'repeat_seconds_per_step': [0.31, 0.32, 0.33]}
  assert report.against_compiled(jax_step, None) == (None, '—')
  ahead = {'examples_per_second': 50.0, 'seconds_per_step': 0.64,
           'repeat_seconds_per_step': [0.6, 0.64, 0.7]}
  assert report.against_compiled(jax_step, ahead) == (2.0, 'yes')
  ratio, words = report.against_compiled(jax_step, {**ahead, 'examples_per_second': 125.0})
  assert ratio == 0.8 and words.startswith('**no: torch.compile is ahead**')
  overlap = {'examples_per_second': 99.0, 'repeat_seconds_per_step': [0.30, 0.323, 0.34]}
  assert 'not clearly ahead' in report.against_compiled(jax_step, overlap)[1]


def test_run_takes_the_data_only_from_the_environment(monkeypatch):
  from benchmarks import run
  monkeypatch.delenv('GENRE_JAX_MIRROR', raising=False)
  assert 'GENRE_JAX_MIRROR' not in run.env()  # genre_jax.data.download's cache, then.
  monkeypatch.setenv('GENRE_JAX_MIRROR', '/some/mirror')
  assert run.env()['GENRE_JAX_MIRROR'] == '/some/mirror'
  assert run.env(TORCHINDUCTOR_CACHE_DIR='/c')['TORCHINDUCTOR_CACHE_DIR'] == '/c'


def test_a_failing_compiled_worker_is_recorded_not_fatal(monkeypatch, tmp_path):
  from benchmarks import run
  seen = {}

  def worker(kind, spec, **extra_env):
    seen.update(kind=kind, **extra_env)
    raise RuntimeError('worker torch_compile_train cnn failed:\nInductorError: no compiler')

  monkeypatch.setattr(run, 'worker', worker)
  out = run.compiled_worker({'config': 'cnn'}, tmp_path / 'inductor_cnn')
  assert seen == {'kind': 'torch_compile_train',
                  'TORCHINDUCTOR_CACHE_DIR': str(tmp_path / 'inductor_cnn')}
  assert out['compiled'] and 'InductorError: no compiler' in out['error']


_needs_torch = pytest.mark.skipif(importlib.util.find_spec('torch') is None,
                                  reason="PyTorch not installed (pip install -e '.[bench]')")


def _tiny_torch_spec(tmp_path, **extra):
  """A worker spec for configs/cnn.py made tiny, on 48 synthetic rows of 16 tokens."""
  import numpy as np
  rng = np.random.default_rng(0)
  n, length = 48, 16
  path = tmp_path / 'train.npz'
  np.savez(path, tokens=rng.integers(1, 60, (n, length)), lengths=rng.integers(4, length + 1, n),
           labels=(rng.random((n, 18)) < 0.2).astype(np.float32), vocab_size=60, n_train=n)
  overrides = {'model.embed_dim': 8, 'model.conv_filters': 4, 'model.dropout': 0.0,
               'model.word_dropout': 0.0, 'batch_size': 8}
  return {'config': 'cnn', 'overrides': overrides, 'data': str(path), 'batch_sizes': [8],
          'warmup': 2, 'repeats': 3, 'step_seconds': 0.02, 'epoch_repeats': 1, **extra}


@_needs_torch
def test_torch_compile_worker_times_compilation_apart(tmp_path):
  """The compiled path: torch.compile'd model, compile time in the first step and reported apart,
  nothing compiled during the timed steps, and the same training as eager on the same batches.
  The 'eager' Dynamo backend keeps the test fast (no C++ code generation); run.py uses inductor."""
  from benchmarks import workers
  spec = _tiny_torch_spec(tmp_path, compile_backend='eager')
  compiled = workers.torch_compile_train(spec)
  assert 'error' not in compiled, compiled.get('error')
  eager = workers.torch_train(spec)
  assert compiled['compiled'] and compiled['compile_backend'] == 'eager'
  assert not eager['compiled'] and 'compile_backend' not in eager
  step = compiled['steps']['8']
  assert step['graphs_compiled_first_step'] >= 1  # The first step compiled the model ...
  assert step['graphs_compiled_timed'] == 0  # ... and the timed steps compiled nothing.
  assert step['compile_seconds'] == step['first_step_seconds'] - step['seconds_per_step']
  assert step['compile_seconds'] > 0  # Tracing made the first step the slowest.
  assert compiled['train_compile_seconds'] == step['compile_seconds']
  assert step['examples_per_second'] == 8 / step['seconds_per_step']
  assert compiled['epoch_seconds'] > 0 and 'compile_seconds' not in eager['steps']['8']
  # Same model, batches and optimizer (no dropout): the same losses as eager.
  assert compiled['epoch_final_loss'] == pytest.approx(eager['epoch_final_loss'], rel=1e-4)


@_needs_torch
def test_torch_compile_failure_is_a_result_with_the_error(tmp_path):
  from benchmarks import workers
  out = workers.torch_compile_train(_tiny_torch_spec(tmp_path, compile_backend='no_such_backend'))
  assert out['compiled'] and 'steps' not in out
  assert 'no_such_backend' in out['error']


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec('torch') is None,
                    reason="PyTorch not installed (pip install '.[bench]')")
def test_quick_benchmark_run(tmp_path):
  out, js = tmp_path / 'BENCHMARKS.md', tmp_path / 'results.json'
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.run', '--quick', '--out', str(out),
                         '--json', str(js)], cwd=REPO, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(js.read_text())
  row = results['rows'][0]
  assert row['jax']['steps']['32']['examples_per_second'] > 0
  assert row['torch']['steps']['32']['examples_per_second'] > 0
  assert row['jax']['epoch_seconds'] > 0 and row['torch']['epoch_seconds'] > 0
  assert results['inference']['predict_seconds'] > 0
  compiled = row['torch_compile']
  assert 'error' not in compiled, compiled.get('error')
  assert compiled['steps']['32']['examples_per_second'] > 0 and compiled['epoch_seconds'] > 0
  assert compiled['train_compile_seconds'] > 0
  text = out.read_text()
  assert 'Smoke run' in text and 'genre_jax / PyTorch' in text
  assert 'genre_jax / torch.compile' in text


@pytest.mark.skipif(importlib.util.find_spec('torch') is None,
                    reason='the PyTorch reference needs torch (pip install -e ".[bench]")')
@pytest.mark.parametrize('name', ['seed_lstm', 'seed_cnn', 'seed_cnn_lstm', 'lstm', 'cnn',
                                  'cnn_lstm'])
def test_torch_reference_has_the_same_parameters(name):
  """The PyTorch reference builds the same model: its parameter count equals genre_jax's (PyTorch's
  LSTM has two bias vectors per gate set where genre_jax has one: counted once)."""
  from flax import nnx

  import configs
  from benchmarks import torch_reference
  from genre_jax import models

  config = configs.load(name)
  ours = models.count_params(nnx.eval_shape(lambda: models.create_model(
      config.model, vocab_size=500, num_labels=18, pad_id=0, rngs=nnx.Rngs(0))))
  ref = torch_reference.Classifier(config.model, 500, 18)
  theirs = sum(p.numel() for n, p in ref.named_parameters() if 'bias_hh' not in n)
  assert theirs == ours
