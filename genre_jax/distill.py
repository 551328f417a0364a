"""Knowledge distillation: a trained run (or ensemble) teaches a student run.

`trainer.prepare_inputs` calls `attach(config, data, workdir)` when `config.distill.teacher`
names a workdir. It
  1. refuses a teacher trained on another data source, split or label set (one line), so that no
     validation or test synopsis reaches training through the teacher;
  2. builds the transfer set: the training synopses and `distill.augment_copies` perturbed copies
     of each (`transfer.py`), from the training split only;
  3. gets the teacher's logits on them, computed once: from WORKDIR/distill_targets.npz when it
     holds them for this teacher and transfer set, else from `distill.cache_dir` (a directory
     runs share, one file per block: the synopses, each copy of them), else scored by the
     teacher in chunks; written atomically with the identity of what they belong to and the
     SHA-256 of the array;
  4. returns the training split with the copies appended (a copy's labels are its original's)
     and, per row, the soft targets `sigmoid(teacher logits / temperature)` and the weight of the
     hard labels (`alpha`; 0 for the copies with `copy_hard_labels=False`). They travel with each
     batch row (`batch_targets`) into `losses.distillation_bce`.

The teacher's identity is its workdir's path and the SHA-256 of the files that fix its logits:
commit.json (which holds the checksums of the best checkpoint's files); for an ensemble,
ensemble.json and each member's commit.json and calibration.json. The logits are those of
`Run.logits_and_loss` (before calibration; for an ensemble, the logit of its combined
probabilities). A run keeps the key of its targets in its checkpoints (`meta['distill_key']`):
resuming it after the teacher's files changed is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import time
from typing import Any
import zipfile

import ml_collections
import numpy as np

from genre_jax import checkpoint
from genre_jax import faults
from genre_jax import inference
from genre_jax import parallel
from genre_jax import transfer
from genre_jax import workdir as workdir_lib
from genre_jax.data import batching
from genre_jax.errors import GenreJaxError

CACHE_FILE = 'distill_targets.npz'
FORMAT = 1
SCORE_CHUNK = 2048  # Synopses per call of the teacher (which batches them itself).
# Data fields that choose records and the split; `check_teacher` compares the split itself.
_SPLIT_FIELDS = ('max_examples', 'split_seed', 'split_sizes')


@dataclasses.dataclass
class Targets:
  """Per training row (originals, then copies): what the distillation loss reads.

  Attributes:
    soft: [n, G] float32, the teacher's probabilities at the distillation temperature.
    hard_weight: [n] float32, the weight of the hard labels (alpha, or 0).
  """
  soft: np.ndarray
  hard_weight: np.ndarray


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` distils (its `distill.teacher` names a workdir)."""
  section = config.get('distill')
  return bool(section is not None and section.get('teacher'))


def batch_targets(targets: Targets, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """This process's rows of `targets` for a batch of `batching.batches` (by its `index`, -1 on
  padding rows, which get zeros): soft_targets [b, G] float32, hard_weight [b] float32."""
  mine = batching.local_rows(batch['index'], parallel.process_part())
  real = mine >= 0
  rows = np.where(real, mine, 0)
  return {'soft_targets': np.where(real[:, None], targets.soft[rows], 0.0).astype(np.float32),
          'hard_weight': np.where(real, targets.hard_weight[rows], 0.0).astype(np.float32)}


# ---- The teacher ---------------------------------------------------------------------------

def teacher_path(config: ml_collections.ConfigDict) -> pathlib.Path:
  """`config.distill.teacher` as an absolute path, checked to hold a finished run or ensemble."""
  path = pathlib.Path(os.path.abspath(os.path.expanduser(config.distill.teacher)))
  flag = f'config.distill.teacher {path}'
  if not path.is_dir():
    raise GenreJaxError(f'{flag} is not a directory; give the workdir of a trained run or '
                        'ensemble.')
  if workdir_lib.kind(path) is None:
    raise GenreJaxError(f'{flag} holds no trained run or ensemble; give the workdir of one.')
  if not (path / 'report.json').is_file():
    raise GenreJaxError(f'{flag} has not finished (no report.json); finish it first (rerun its '
                        'command).')
  return path


def _member_dirs(path: pathlib.Path) -> list[str]:
  """The member directories of an ensemble workdir (relative), [] for a run."""
  if workdir_lib.kind(path) != workdir_lib.ENSEMBLE:
    return []
  try:
    return [m['dir'] for m in json.loads((path / inference.ENSEMBLE_FILE).read_text())['members']]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise GenreJaxError(f'{path / inference.ENSEMBLE_FILE} is not a valid ensemble file '
                        f'({e!r:.200}).') from None


def teacher_identity(path: pathlib.Path) -> dict[str, Any]:
  """{'workdir', 'files': {name: SHA-256 or None}} of the files that fix the teacher's logits."""
  members = _member_dirs(path)
  names = ([inference.ENSEMBLE_FILE] + [f'{m}/{name}' for m in members
                                       for name in (checkpoint.COMMIT_FILE, 'calibration.json')]
           if members else [checkpoint.COMMIT_FILE])
  files = {}
  for name in names:
    try:
      files[name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    except FileNotFoundError:
      files[name] = None
  return {'workdir': str(path), 'files': files}


def teacher_meta(path: pathlib.Path) -> dict[str, Any]:
  """The best checkpoint's metadata (config, labels, and 'split') of the teacher run, or of an
  ensemble's first member (its members share the split and labels)."""
  members = _member_dirs(path)
  ckpts = checkpoint.RunCheckpoints(path / members[0] if members else path)
  meta = ckpts.read_meta(checkpoint.BEST)
  meta['split'] = ckpts.read_split(meta)
  return meta


def check_teacher(path: pathlib.Path, meta: dict[str, Any], data,
                  config: ml_collections.ConfigDict) -> None:
  """Refuses a teacher whose split, data source or label set differ from the student's `data`:
  each split must hold the same record ids, read from the same file with the same columns (the
  fields that choose the records and the split, such as `max_examples` and `split_seed`, may
  differ as long as the split is the same).

  Raises:
    GenreJaxError naming the teacher and what differs.
  """
  flag = f'config.distill.teacher {path}'
  ours = data.split_ids
  differ = [k for k in sorted(set(ours) | set(meta['split']))
            if set(meta['split'].get(k, ())) != set(ours.get(k, ()))]
  if differ:
    raise GenreJaxError(f'{flag} was trained on another split (its {", ".join(differ)} '
                        'hold other records than this run\'s): its scores could carry validation '
                        'or test synopses into training. Use a teacher trained on this split.')
  theirs = inference._data_source(ml_collections.ConfigDict(meta['config']))  # pylint: disable=protected-access
  ours = inference._data_source(config)  # pylint: disable=protected-access
  diff = [k for k in inference.DATA_SOURCE_FIELDS
          if k not in _SPLIT_FIELDS and theirs[k] != ours[k]]
  if diff:
    raise GenreJaxError(f'{flag} was trained on another data set (' + ', '.join(
        f'data.{k}: {theirs[k]!r} there, {ours[k]!r} here' for k in diff) + '); a teacher must '
        'be trained on this run\'s data and split.')
  if list(meta['labels']['classes']) != list(data.labels.classes):
    raise GenreJaxError(f'{flag} predicts other genres ({len(meta["labels"]["classes"])} '
                        f'labels there, {len(data.labels.classes)} here); a teacher must share '
                        'the student\'s label set.')


def score(teacher, texts: list[str], chunk: int = SCORE_CHUNK) -> np.ndarray:
  """The teacher's logits [n, G] float32 (before calibration) on `texts`, `chunk` at a time."""
  out, t0 = [], time.time()
  for start in range(0, len(texts), chunk):
    out.append(_logits(teacher, texts[start:start + chunk]))
    done = start + len(out[-1])
    print(f'distill: teacher scored {done}/{len(texts)} synopses '
          f'({done / max(time.time() - t0, 1e-9):.0f}/s)', flush=True)
  classes = len(teacher.labels.classes)
  return np.concatenate(out) if out else np.zeros((0, classes), np.float32)


def _logits(teacher, texts: list[str]) -> np.ndarray:
  """One chunk's logits; a single run's in length buckets (padding changes no logit)."""
  if not isinstance(teacher, inference.Run):
    return np.asarray(teacher.logits_and_loss(texts)[0], np.float32)
  tokens, lengths = teacher.tokenizer.encode(texts, teacher.config.data.max_length)
  widths = batching.bucket_widths(lengths, tokens.shape[1], 4)
  zeros = np.zeros((len(texts), len(teacher.labels.classes)), np.float32)
  z, _ = inference.predict_logits(teacher.model, tokens, lengths, zeros, mesh=teacher.mesh,
                                  batch_size=teacher.config.eval_batch_size, bucket_widths=widths)
  return np.asarray(z, np.float32)


# ---- The cache -------------------------------------------------------------------------------

def _sha256(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_cache(path: pathlib.Path, meta: dict[str, Any], logits: np.ndarray, *,
                in_workdir: bool) -> None:
  """Writes logits [n, G] float32 and `meta` (with their SHA-256) to `path` atomically."""
  buffer = io.BytesIO()
  meta = {**meta, 'logits_sha256': _sha256(logits)}
  np.savez(buffer, logits=logits, meta=np.array(json.dumps(meta)))
  hook = (lambda: faults.reached('distill_tmp_written')) if in_workdir else None
  workdir_lib.write_bytes(path, buffer.getvalue(), before_rename=hook)
  if in_workdir:
    faults.reached('distill_written')


def read_cache(path: pathlib.Path) -> tuple[dict[str, Any], np.ndarray] | None:
  """(meta, logits [n, G] float32) of a cache file, None when there is none.

  Raises:
    GenreJaxError: the file is unreadable or its logits fail their checksum.
  """
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      meta, logits = json.loads(str(f['meta'])), np.asarray(f['logits'], np.float32)
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
    raise GenreJaxError(f'{path} (cached teacher scores) is unreadable ({e!s:.200}); delete it '
                        'and the teacher scores the synopses again.') from None
  if _sha256(logits) != meta.get('logits_sha256'):
    raise GenreJaxError(f'{path} (cached teacher scores) is corrupt (its checksum differs); '
                        'delete it and the teacher scores the synopses again.')
  return meta, logits


def _digest(texts: list[str]) -> str:
  return hashlib.sha256('\0'.join(texts).encode('utf-8')).hexdigest()


def _block_logits(teacher, path: pathlib.Path, block: list[str], identity: dict[str, Any],
                  cache_dir: str | None) -> tuple[np.ndarray, float, Any]:
  """One block's logits (the synopses, or one copy of each), from `cache_dir` or scored; returns
  them, the seconds the teacher took to score them, and the (loaded on first use) teacher."""
  key = hashlib.sha256(json.dumps([identity, _digest(block)]).encode()).hexdigest()
  shared = pathlib.Path(cache_dir).expanduser() / f'{key}.npz' if cache_dir else None
  found = read_cache(shared) if shared is not None else None
  if found is not None and found[0].get('key') == key:
    return found[1], found[0].get('score_seconds', 0.0), teacher
  teacher = teacher if teacher is not None else inference.load_run(path)
  t0 = time.time()
  logits = score(teacher, block)
  seconds = round(time.time() - t0, 2)
  if shared is not None and parallel.is_lead():
    shared.parent.mkdir(parents=True, exist_ok=True)
    write_cache(shared, {'format': FORMAT, 'key': key, 'teacher': identity, 'rows': len(block),
                         'score_seconds': seconds}, logits, in_workdir=False)
  return logits, seconds, teacher


def teacher_logits(path: pathlib.Path, blocks: list[list[str]], meta: dict[str, Any],
                   workdir: pathlib.Path, cache_dir: str | None
                   ) -> tuple[np.ndarray, dict[str, Any]]:
  """The teacher's logits [n, G] on the texts of `blocks` (the training synopses, then each
  copy of them), and their cache meta: the workdir's cache when it holds them, else block by
  block from the shared `cache_dir` (so runs with other seeds or numbers of copies share the
  blocks they have in common) or scored now; then written to the workdir.

  `meta['score_seconds']` is the teacher's time to score all the blocks (when they were scored).
  """
  own = workdir / CACHE_FILE
  found = read_cache(own)
  if found is not None and found[0].get('key') == meta['key']:
    print(f'distill: the teacher\'s scores of {len(found[1])} synopses read from {own}.',
          flush=True)
    return found[1], found[0]
  parts, seconds, teacher = [], 0.0, None
  for block in blocks:
    logits, took, teacher = _block_logits(teacher, path, block, meta['teacher'], cache_dir)
    parts.append(logits)
    seconds += took
  logits = np.concatenate(parts)
  meta = {**meta, 'score_seconds': round(seconds, 2)}
  if parallel.is_lead():
    write_cache(own, meta, logits, in_workdir=True)
  return logits, meta


# ---- The transfer set and the targets ----------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
  return np.exp(-np.logaddexp(0.0, -x)).astype(np.float32)


def extend(train: batching.SplitArrays, copies: transfer.Copies, tokenizer,
           max_length: int) -> batching.SplitArrays:
  """The training split with the copies appended, encoded by the student's `tokenizer`; a copy's
  labels are its original's, its id `ID#copyK`."""
  if not copies.texts:
    return train
  tokens, lengths = tokenizer.encode(copies.texts, max_length)
  return batching.SplitArrays(
      ids=list(train.ids) + [f'{train.ids[s]}#copy{k}' for s, k in zip(copies.source,
                                                                      copies.copy)],
      texts=list(train.texts) + copies.texts,
      tokens=np.concatenate([train.tokens, tokens.astype(train.tokens.dtype)]),
      lengths=np.concatenate([train.lengths, lengths.astype(train.lengths.dtype)]),
      labels=np.concatenate([train.labels, train.labels[copies.source]]),
      reference_lengths=train.reference_lengths)


def attach(config: ml_collections.ConfigDict, data, workdir: pathlib.Path,
           expected_key: str | None = None
           ) -> tuple[batching.SplitArrays, Targets, dict[str, Any]]:
  """The student's training split with the transfer set, its `Targets`, and what the report
  states (see the module docstring).

  Args:
    config: the student's config (its `distill` section, `seed`, `data.max_length`).
    data: the student's `pipeline.PreparedData`.
    workdir: the student's workdir (the cache file goes there).
    expected_key: the key a resumed run was trained with (`meta['distill_key']`), or None.
  """
  d, train = config.distill, data.train
  path = teacher_path(config)
  check_teacher(path, teacher_meta(path), data, config)
  copies = transfer.perturbed_copies(train.ids, train.texts, int(d.augment_copies),
                                     transfer.Perturbation.from_config(d), config.seed)
  n = len(train.texts)
  blocks = [list(train.texts)] + [copies.texts[k * n:(k + 1) * n]
                                  for k in range(int(d.augment_copies))]
  texts = [t for block in blocks for t in block]
  spec = {'copies': int(d.augment_copies), 'seed': int(config.seed), 'rows': len(texts),
          'texts_sha256': _digest(texts)}
  if copies.texts:
    spec['perturbation'] = dataclasses.asdict(transfer.Perturbation.from_config(d))
  identity = teacher_identity(path)
  key = hashlib.sha256(json.dumps([identity, spec], sort_keys=True).encode()).hexdigest()
  if expected_key is not None and key != expected_key:
    raise GenreJaxError(
        f'config.distill.teacher {path} changed since workdir {workdir} started (its files or '
        'the transfer set differ from those its soft targets came from); the run cannot resume '
        'with other targets. Use a new --workdir.')
  meta = {'format': FORMAT, 'key': key, 'teacher': identity, 'transfer': spec,
          'classes': list(data.labels.classes)}
  logits, meta = teacher_logits(path, blocks, meta, workdir, d.get('cache_dir'))
  weights = np.full(len(texts), d.alpha, np.float32)
  if not d.copy_hard_labels:
    weights[len(train.texts):] = 0.0
  targets = Targets(_sigmoid(logits / float(d.temperature)), weights)
  return extend(train, copies, data.tokenizer, config.data.max_length), targets, {
      'teacher': str(path), 'key': key, 'rows': len(texts), 'copies': int(d.augment_copies),
      'teacher_score_seconds': meta.get('score_seconds'),
      'teacher_train_seconds': _train_seconds(path)}


def _train_seconds(path: pathlib.Path) -> float | None:
  """The teacher's training time: its report's train_seconds (None when it has none)."""
  try:
    return json.loads((path / 'report.json').read_text()).get('train_seconds')
  except (OSError, ValueError, AttributeError):
    return None
