"""Tests of the benchmark command: the report (fast) and a `--quick` smoke run (slow, torch)."""

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
  text = out.read_text()
  assert 'Smoke run' in text and 'genre_jax / PyTorch' in text


@pytest.mark.skipif(importlib.util.find_spec('torch') is None,
                    reason='the PyTorch reference needs torch (pip install -e ".[bench]")')
@pytest.mark.parametrize('name', ['seed_lstm', 'seed_cnn', 'seed_cnn_lstm', 'lstm', 'cnn',
                                  'cnn_lstm'])
def test_torch_reference_has_the_same_parameters(name):
  """The PyTorch reference builds the same model: its parameter count equals genre_jax's (PyTorch's
  LSTM has two bias vectors per gate set where genre_jax has one: counted once)."""
  import runpy

  from flax import nnx

  from benchmarks import torch_reference
  from genre_jax import models

  config = runpy.run_path(f'configs/{name}.py')['get_config']()
  ours = models.count_params(nnx.eval_shape(lambda: models.create_model(
      config.model, vocab_size=500, num_labels=18, pad_id=0, rngs=nnx.Rngs(0))))
  ref = torch_reference.Classifier(config.model, 500, 18)
  theirs = sum(p.numel() for n, p in ref.named_parameters() if 'bias_hh' not in n)
  assert theirs == ours
