"""Benchmark workers: each runs in its own process and prints one JSON line (see `run.py`).

  python -m benchmarks.workers jax_train '{"config": "cnn", ...}'

Kinds:
  jax_train / torch_train   train-step throughput at fixed shapes (batches padded to
                            max_length), one end-to-end epoch, and (jax) compile times, the CNN's
                            GFLOP/s against a large float32 matmul, and a step breakdown.
  torch_compile_train       torch_train with `torch.compile(model)` (default backend, inductor),
                            its compile time apart from the steady-state steps.
  evaluate                  `evaluation.evaluate_test_split` throughput of a trained workdir.
"""

import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_config(name, overrides):
  import configs
  config = configs.load(name)
  config.update_from_flattened_dict(overrides)
  return config


def load_data(path):
  import numpy as np
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def fixed_batches(data, batch_size, count, seed=0):
  """`count` batches of real training rows, padded to max_length (the same for both frameworks)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  out = []
  n = len(data['lengths'])
  for _ in range(count):
    rows = rng.choice(n, batch_size, replace=False)
    out.append({'tokens': data['tokens'][rows].astype(np.int32),
                'lengths': data['lengths'][rows].astype(np.int32),
                'labels': data['labels'][rows].astype(np.float32),
                'mask': np.ones(batch_size, np.float32)})
  return out


def step_runner(step, batches):
  """`run_steps(k)`: `k` calls of the train step on the batches in turn (continuing where the
  last call stopped), then waits for the result."""
  import jax
  counter = [0]

  def run_steps(k):
    loss = None
    for _ in range(k):
      loss = step(batches[counter[0] % len(batches)], None)
      counter[0] += 1
    jax.block_until_ready(loss)

  return run_steps


def timed_repeats(run_steps, spec):
  """Median seconds per step over `repeats` timed runs of about `step_seconds` each.

  One untimed probe step sizes the runs (at least 2 steps each).
  """
  t = time.perf_counter()
  run_steps(1)
  probe = time.perf_counter() - t
  steps = max(2, round(spec['step_seconds'] / max(probe, 1e-4)))
  repeats = spec['repeats']
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    run_steps(steps)
    times.append((time.perf_counter() - t) / steps)
  return statistics.median(times), times


def page_faults_per_step(run_steps, steps=20):
  """Minor page faults of this process per train step, over `steps` more steps (`getrusage`).

  About zero when freed memory is reused (`genre_jax.host.keep_freed_memory`); thousands a step
  when each step's large buffers are fresh pages from the kernel.
  """
  import resource
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  run_steps(steps)
  return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def matmul_timer(n=None):
  """A function that times one n x n x n float32 jnp.matmul and returns its GFLOP/s (compiled
  and warmed up here), and n.

  n: 2048 on a CPU; 8192 on an accelerator (a 2048-cube takes well under a millisecond there).
  """
  import jax
  import jax.numpy as jnp
  n = n or (2048 if jax.default_backend() == 'cpu' else 8192)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()

  def gflops():
    t = time.perf_counter()
    f(a, b).block_until_ready()
    return 2 * n ** 3 / (time.perf_counter() - t) / 1e9

  return gflops, n


def paired_matmul_fraction(run_steps, steps, flops_per_step, repeats, matmul_calls=3):
  """The train step's GFLOP/s as a fraction of the matmul's, measured in pairs.

  Each of `repeats` pairs times `steps` train steps and then `matmul_calls` matmuls (their median),
  back to back, so both halves of a pair see the same machine (other tenants, clock); the
  fraction is the median over the pairs. Returns (median fraction, median matmul GFLOP/s, the
  pairs as [step GFLOP/s, matmul GFLOP/s], matmul n).
  """
  gflops, n = matmul_timer()
  pairs = []
  for _ in range(repeats):
    t = time.perf_counter()
    run_steps(steps)
    step_gflops = flops_per_step * steps / (time.perf_counter() - t) / 1e9
    pairs.append([step_gflops, statistics.median(gflops() for _ in range(matmul_calls))])
  fraction = statistics.median(s / m for s, m in pairs)
  return fraction, statistics.median(m for _, m in pairs), pairs, n


def cnn_train_flops(config, batch, length):
  """FLOPs of one CNN train step counted from the shapes: convolutions and head, fwd + bwd.

  conv forward = 2 * B * L * E * F * sum(k); backward = 2 x forward (input and kernel grads);
  head = 2 * B * (in * dense + dense * G) (or in * G) forward, x3 with the backward.
  """
  m = config.model
  conv = 2 * batch * length * m.embed_dim * m.conv_filters * sum(m.conv_kernel_sizes)
  feat = m.conv_filters * len(m.conv_kernel_sizes)
  g = 18
  head = 2 * batch * (feat * m.dense_size + m.dense_size * g if m.dense_size else feat * g)
  return 3 * (conv + head)


def jax_train(spec):
  import jax
  jax.config.update('jax_enable_compilation_cache', False)  # Compile times measured cold.
  import numpy as np
  from flax import nnx
  from genre_jax import inference, models, optim, parallel, train_step
  from genre_jax.data import batching, pipeline

  config = load_config(spec['config'], spec.get('overrides', {}))
  data = load_data(spec['data'])
  num_labels = data['labels'].shape[1]
  max_length = data['tokens'].shape[1]
  mesh = parallel.make_mesh()
  steps_per_epoch = -(-len(data['lengths']) // config.batch_size)
  out = {'framework': 'genre_jax', 'config': spec['config'], 'steps': {},
         'devices': [str(d) for d in jax.devices()], 'backend': jax.default_backend(),
         'device_kind': jax.devices()[0].device_kind}

  def fresh(wrt=nnx.Param):
    model = models.create_model(config.model, vocab_size=int(data['vocab_size']),
                                 num_labels=num_labels, pad_id=0,
                                 rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    model.train()
    optimizer = nnx.Optimizer(model, optim.make_optimizer(config, steps_per_epoch), wrt=wrt)
    parallel.replicate(model, mesh)
    parallel.replicate(optimizer, mesh)
    return model, optimizer

  for bs in spec['batch_sizes']:
    model, optimizer = fresh()
    step = train_step.TrainStep(model, optimizer, nnx.Param)
    batches = [parallel.shard_batch(b, mesh) for b in fixed_batches(data, bs, 8)]
    t = time.perf_counter()
    jax.block_until_ready(step(batches[0], None))
    first = time.perf_counter() - t
    for i in range(spec['warmup']):
      step(batches[i % 8], None)
    jax.block_until_ready(step(batches[0], None))
    run_steps = step_runner(step, batches)
    med, times = timed_repeats(run_steps, spec)
    row = {'batch_size': bs, 'length': max_length, 'seconds_per_step': med,
           'examples_per_second': bs / med, 'repeat_seconds_per_step': times,
           'first_step_seconds': first, 'page_faults_per_step': page_faults_per_step(run_steps)}
    if config.model.name == 'cnn':
      row['flops_per_step'] = cnn_train_flops(config, bs, max_length)
      row['gflops'] = row['flops_per_step'] / med / 1e9
      (row['fraction_of_matmul'], row['matmul_gflops'], row['matmul_pairs'],
       out['matmul_size']) = paired_matmul_fraction(
           run_steps, max(2, round(spec['step_seconds'] / med)), row['flops_per_step'],
           spec['repeats'])
      # What the embedding table costs: the same step with the table frozen (no embedding
      # gradient, so no input-gradient matmuls, no scatter, no update of the table and moments).
      frozen = nnx.All(nnx.Param, nnx.Not(nnx.PathContains('embed')))
      run_frozen = step_runner(train_step.TrainStep(*fresh(frozen), frozen), batches)
      run_frozen(spec['warmup'] + 1)  # Compilation and warm-up.
      row['seconds_per_step_embedding_frozen'] = timed_repeats(run_frozen, spec)[0]
      if spec.get('trace_dir'):  # Where a CNN step's time goes, operation by operation.
        row['profile'] = xla_profile(lambda: step(batches[0], None),
                                     f'{spec["trace_dir"]}_{bs}')
    out['steps'][str(bs)] = row

  # Compile time of the eval step (first call at eval_batch_size x max_length).
  model, optimizer = fresh()
  model.eval()
  eb = fixed_batches(data, config.eval_batch_size, 1)[0]
  eb = parallel.shard_batch(eb, mesh)
  t = time.perf_counter()
  jax.block_until_ready(inference.eval_step(model, eb, None))
  out['eval_first_call_seconds'] = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(inference.eval_step(model, eb, None))
  out['eval_step_seconds'] = time.perf_counter() - t
  out['eval_compile_seconds'] = out['eval_first_call_seconds'] - out['eval_step_seconds']
  if spec['batch_sizes']:
    s0 = out['steps'][str(spec['batch_sizes'][0])]
    out['train_compile_seconds'] = s0['first_step_seconds'] - s0['seconds_per_step']

  # One end-to-end epoch with the real pipeline (bucketing per config), as trainer.py runs it.
  if spec.get('epoch', True):
    model, optimizer = fresh()
    step = train_step.TrainStep(model, optimizer, nnx.Param)
    train = pipeline.SplitArrays(ids=[''] * len(data['lengths']), texts=[''] * len(data['lengths']),
                                 tokens=data['tokens'], lengths=data['lengths'],
                                 labels=data['labels'])
    widths = (batching.bucket_widths(train.lengths, max_length, config.data.num_buckets)
              if config.data.bucket_by_length else None)
    # Warm-up: compile every batch width the epoch will use (one step on each), with batches
    # from the pipeline itself so the compiled signatures are the ones the epoch sees.
    seen_widths = set()
    for batch in batching.batches(train, config.batch_size, shuffle=True, seed=config.seed,
                                  epoch=0, bucket_by_length=widths is not None, widths=widths):
      if batch['tokens'].shape[1] not in seen_widths:
        seen_widths.add(batch['tokens'].shape[1])
        jax.block_until_ready(step(parallel.shard_batch(batch, mesh), None))
    epoch_times = []
    for epoch in range(1, spec['epoch_repeats'] + 1):
      t = time.perf_counter()
      pending, seen = [], []
      for batch in batching.batches(train, config.batch_size, shuffle=True, seed=config.seed,
                                    epoch=epoch, bucket_by_length=widths is not None,
                                    widths=widths):
        pending.append(step(parallel.shard_batch(batch, mesh), None))
        if len(pending) == 20:
          seen += [float(v) for v in pending]
          pending = []
      seen += [float(v) for v in pending]
      epoch_times.append(time.perf_counter() - t)
    out['epoch_seconds'] = statistics.median(epoch_times)
    out['epoch_repeat_seconds'] = epoch_times
    out['epoch_widths'] = widths or [max_length]
    out['epoch_final_loss'] = float(np.mean(seen[-20:]))

  if spec.get('breakdown'):
    out['breakdown'] = jax_breakdown(config, data, mesh, fresh, spec)
  return out


def jax_breakdown(config, data, mesh, fresh, spec):
  """Milliseconds per call of forward, forward + backward, and the full step (fixed shapes)."""
  import jax
  from flax import nnx
  from genre_jax import losses, optim, parallel, train_step

  model, optimizer = fresh()
  bs = config.batch_size
  batch = parallel.shard_batch(fixed_batches(data, bs, 1)[0], mesh)

  @nnx.jit
  def forward(model, batch):
    logits = model(batch['tokens'], batch['lengths'])
    return losses.sigmoid_bce(logits, batch['labels'], batch['mask'])

  @nnx.jit
  def forward_backward(model, batch):
    def loss_fn(model):
      return losses.sigmoid_bce(model(batch['tokens'], batch['lengths']), batch['labels'],
                                batch['mask'])
    return nnx.value_and_grad(loss_fn)(model)

  step = train_step.TrainStep(model, optimizer, nnx.Param)
  fns = {'forward': lambda: forward(model, batch),
         'forward_backward': lambda: forward_backward(model, batch),
         'train_step': lambda: step(batch, None)}
  out = {}
  for name, fn in fns.items():
    jax.block_until_ready(fn())
    jax.block_until_ready(fn())

    def run_steps(k, fn=fn):
      r = None
      for _ in range(k):
        r = fn()
      jax.block_until_ready(r)

    out[name + '_ms'] = timed_repeats(run_steps, spec)[0] * 1e3
  out['backward_ms'] = out['forward_backward_ms'] - out['forward_ms']
  out['optimizer_update_ms'] = out['train_step_ms'] - out['forward_backward_ms']
  # Data pipeline: building the batches of one epoch (numpy), no training.
  from genre_jax.data import batching, pipeline
  n = len(data['lengths'])
  train = pipeline.SplitArrays(ids=[''] * n, texts=[''] * n, tokens=data['tokens'],
                               lengths=data['lengths'], labels=data['labels'])
  widths = (batching.bucket_widths(train.lengths, data['tokens'].shape[1], config.data.num_buckets)
            if config.data.bucket_by_length else None)
  t = time.perf_counter()
  count = 0
  for b in batching.batches(train, bs, shuffle=True, seed=0, epoch=1,
                            bucket_by_length=widths is not None, widths=widths):
    parallel.shard_batch(b, mesh)
    count += 1
  out['pipeline_ms_per_batch'] = (time.perf_counter() - t) / count * 1e3
  out['batch_size'] = bs
  if spec.get('trace_dir'):
    out['profile'] = xla_profile(lambda: step(batch, None), spec['trace_dir'])
  return out


def xla_profile(fn, trace_dir, calls=20, top=12):
  """The XLA:CPU operations (thunks) that take the most time in `calls` calls of `fn`.

  A `jax.profiler` trace (Python tracer off); returns the `top` operation names by total time,
  in ms per call, with the HLO op names as XLA printed them (fusions named by their root ops).
  """
  import collections
  import glob
  import gzip
  import jax
  options = jax.profiler.ProfileOptions()
  options.python_tracer_level = 0
  jax.block_until_ready(fn())
  jax.profiler.start_trace(trace_dir, profiler_options=options)
  for _ in range(calls):
    r = fn()
  jax.block_until_ready(r)
  jax.profiler.stop_trace()
  files = sorted(glob.glob(f'{trace_dir}/**/*.trace.json.gz', recursive=True))
  if not files:
    return None
  events = json.load(gzip.open(files[-1]))['traceEvents']
  total = collections.Counter()
  skip = ('ThunkExecutor', 'PjitFunction', 'PjRt', 'Execute')
  for e in events:
    if e.get('ph') == 'X' and not any(k in e['name'] for k in skip):
      total[e['name']] += e['dur']
  return [{'op': name, 'ms_per_call': us / calls / 1e3} for name, us in total.most_common(top)]


def compile_counters():
  """Dynamo's running totals in this process: graphs compiled, and graph breaks by reason (the
  first line of each; Dynamo files breaks under 'graph_break' or, for code it cannot trace such
  as `nn.LSTM`, under 'unimplemented')."""
  from torch._dynamo.utils import counters
  breaks = {}
  for key in ('graph_break', 'unimplemented'):
    for reason, n in counters[key].items():
      reason = str(reason).strip().splitlines()[0] if str(reason).strip() else key
      breaks[reason] = breaks.get(reason, 0) + int(n)
  return {'graphs': int(counters['stats'].get('unique_graphs', 0)), 'graph_breaks': breaks}


def torch_train(spec):
  """The PyTorch reference: eager, or with `torch.compile(model)` (spec['compile']).

  Compiled: `torch.compile(model)` with spec['compile_backend'] (default: PyTorch's default,
  inductor); the loss, backward call, clipping and optimizer step stay as the eager reference
  writes them (AOTAutograd compiles the model's backward with it). Dynamo is reset for every fresh
  model of the step measurements, so each compiles from scratch; inductor's on-disk caches go to
  $TORCHINDUCTOR_CACHE_DIR, which run.py points at an empty folder per worker. Compilation
  happens in the first step: its time is reported apart (`first_step_seconds`,
  `compile_seconds` = first step minus a steady-state step), and the timed steps must compile
  nothing (`graphs_compiled_timed`, 0 when they do not).
  """
  import numpy as np
  import torch
  torch.set_num_threads(spec.get('threads', 2))
  from benchmarks import torch_reference as ref
  # On a GPU machine the reference runs on CUDA, with TF32 matmuls allowed as XLA:GPU allows them
  # for float32 by default (cuDNN convolutions allow TF32 in PyTorch by default).
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  if device.type == 'cuda':
    torch.set_float32_matmul_precision('high')
  compiled = bool(spec.get('compile', False))
  backend = spec.get('compile_backend', 'inductor')

  def sync():
    if device.type == 'cuda':
      torch.cuda.synchronize()

  config = load_config(spec['config'], spec.get('overrides', {}))
  data = load_data(spec['data'])
  num_labels = data['labels'].shape[1]
  max_length = data['tokens'].shape[1]
  steps_per_epoch = -(-len(data['lengths']) // config.batch_size)
  out = {'framework': 'pytorch', 'compiled': compiled, 'config': spec['config'], 'steps': {},
         'torch_threads': torch.get_num_threads(), 'device': str(device),
         'device_name': torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}
  if compiled:
    out['compile_backend'] = backend

  def fresh(reset=True):
    torch.manual_seed(config.seed)
    model = ref.Classifier(config.model, int(data['vocab_size']), num_labels).to(device)
    opt, sched = ref.make_optimizer(config, model, steps_per_epoch)
    if compiled:
      if reset:
        torch._dynamo.reset()  # Nothing compiled for an earlier model is reused.
      model = torch.compile(model, backend=backend)  # Same parameters, compiled forward.
    return ref.make_train_step(config, model, opt, sched)

  def to_torch(b):
    return (torch.from_numpy(b['tokens'].astype(np.int64)).to(device),
            torch.from_numpy(b['lengths'].astype(np.int64)).to(device),
            torch.from_numpy(b['labels']).to(device), torch.from_numpy(b['mask']).to(device))

  for bs in spec['batch_sizes']:
    step = fresh()
    batches = [to_torch(b) for b in fixed_batches(data, bs, 8)]
    start = compile_counters() if compiled else None
    t = time.perf_counter()
    step(*batches[0]).item()
    first = time.perf_counter() - t
    graphs_first = compile_counters()['graphs'] - start['graphs'] if compiled else None
    t = time.perf_counter()
    for i in range(1, spec['warmup'] + 1):
      step(*batches[i % 8])
    sync()
    warmup = (time.perf_counter() - t) / max(1, spec['warmup'])
    before = compile_counters() if compiled else None
    counter = [1 + spec['warmup']]

    def run_steps(k):
      for _ in range(k):
        loss = step(*batches[counter[0] % 8])
        counter[0] += 1
      loss.item()

    med, times = timed_repeats(run_steps, spec)
    row = {'batch_size': bs, 'length': max_length, 'seconds_per_step': med,
           'examples_per_second': bs / med, 'repeat_seconds_per_step': times,
           'first_step_seconds': first, 'warmup_seconds_per_step': warmup,
           'page_faults_per_step': page_faults_per_step(run_steps)}
    if compiled:
      after = compile_counters()
      row.update(compile_seconds=first - med, graphs_compiled_first_step=graphs_first,
                 graphs_compiled_warmup=before['graphs'] - start['graphs'] - graphs_first,
                 graphs_compiled_timed=after['graphs'] - before['graphs'],
                 graph_breaks=after['graph_breaks'])
    out['steps'][str(bs)] = row
  if compiled and spec['batch_sizes']:
    s0 = out['steps'][str(spec['batch_sizes'][0])]
    out['train_compile_seconds'] = s0['compile_seconds']

  # One epoch with a plain padded pipeline: shuffle, slice, pad to max_length (as Keras did).
  if spec.get('epoch', True):
    # Compiled: what the step measurement compiled may serve (its compile time is reported
    # there); the untimed warm-up steps absorb any compilation left.
    step = fresh(reset=False)
    n = len(data['lengths'])
    bs = config.batch_size
    for b in fixed_batches(data, bs, 2):  # Compiles (torch.compile) and warms up, untimed.
      step(*to_torch(b))
    sync()
    epoch_times = []
    for epoch in range(1, spec['epoch_repeats'] + 1):
      t = time.perf_counter()
      order = np.random.default_rng((config.seed, epoch)).permutation(n)
      losses = []
      for i in range(0, n, bs):
        rows = order[i:i + bs]
        real = len(rows)
        rows = np.concatenate([rows, np.zeros(bs - real, np.int64)])
        mask = (np.arange(bs) < real).astype(np.float32)
        batch = {'tokens': data['tokens'][rows], 'lengths': data['lengths'][rows],
                 'labels': data['labels'][rows], 'mask': mask}
        losses.append(step(*to_torch(batch)).item())
      epoch_times.append(time.perf_counter() - t)
    out['epoch_seconds'] = statistics.median(epoch_times)
    out['epoch_repeat_seconds'] = epoch_times
    out['epoch_final_loss'] = float(np.mean(losses[-20:]))
  return out


def torch_compile_train(spec):
  """`torch_train` with `torch.compile(model)`; a failure to compile is a result, not a crash."""
  import traceback
  try:
    return torch_train({**spec, 'compile': True})
  except Exception as e:  # pylint: disable=broad-except
    lines = [l for l in traceback.format_exception_only(type(e), e) if l.strip()]
    return {'framework': 'pytorch', 'compiled': True, 'config': spec['config'],
            'compile_backend': spec.get('compile_backend', 'inductor'),
            'error': ' '.join(' '.join(lines).split())[:2000]}


def evaluate(spec):
  """evaluate_test_split throughput (end to end, and the model scoring alone)."""
  from genre_jax import evaluation, inference
  from genre_jax.data import pipeline
  inference.enable_compilation_cache()
  run = inference.load_run(spec['workdir'])
  evaluation.evaluate_test_split(run)  # Warm-up (compiles).
  times = []
  for _ in range(spec['repeats']):
    t = time.perf_counter()
    result = evaluation.evaluate_test_split(run)
    times.append(time.perf_counter() - t)
  n = result['summary']['n']
  data = pipeline.prepare(run.config.data, tokenizer_factory=lambda texts: run.tokenizer,
                          split=run.meta['split'])
  test = data.arrays['test']
  score_times = []
  for _ in range(spec['repeats']):
    t = time.perf_counter()
    inference.predict_probs(run.model, test.tokens, test.lengths, test.labels,
                            batch_size=run.config.eval_batch_size, mesh=run.mesh)
    score_times.append(time.perf_counter() - t)
  return {'n_test': n, 'evaluate_seconds': statistics.median(times),
          'evaluate_synopses_per_second': n / statistics.median(times),
          'scoring_seconds': statistics.median(score_times),
          'scoring_synopses_per_second': n / statistics.median(score_times),
          'eval_batch_size': run.config.eval_batch_size}


KINDS = {'jax_train': jax_train, 'torch_train': torch_train,
         'torch_compile_train': torch_compile_train, 'evaluate': evaluate}

if __name__ == '__main__':
  kind, spec = sys.argv[1], json.loads(sys.argv[2])
  from genre_jax import host
  # Both frameworks alike, as every genre_jax command does (unless run.py --default-malloc).
  kept = host.keep_freed_memory() if spec.get('keep_freed_memory', True) else False
  result = KINDS[kind](spec)
  result['keep_freed_memory'] = kept
  print('RESULT ' + json.dumps(result))
