"""Fixed-shape batches for jit: static batch size, a few static widths, masked padding rows.

Every batch has exactly `batch_size` rows (a final partial batch is padded with rows whose
`mask` is 0 and `index` is -1; nothing is dropped), so a jitted step compiles once per width.
With bucketing, examples are grouped by length and each group is cut to one of a few fixed widths
(`bucket_widths`), which saves most of the padding compute of short synopses.
"""

from collections.abc import Iterator, Sequence
import dataclasses

import numpy as np


@dataclasses.dataclass
class SplitArrays:
  """One split, encoded.

  Attributes:
    ids: n record ids.
    texts: n synopses.
    tokens: [n, L] token ids, padded with the tokenizer's pad id, stored as the smallest dtype
      that holds the vocabulary (`text.token_dtype(vocab_size)`: uint16 up to 65,536 ids);
      `batches` converts them to int32.
    lengths: [n] int32 number of real tokens, >= 1.
    labels: [n, G] float32 multi-hot genres (columns = `PreparedData.labels.classes`).
    reference_lengths: [n_train] int32 training lengths that bucket widths are computed from, so
      that every split is batched to the same few widths (None when the training split was not
      encoded: then the split's own lengths).
  """
  ids: list[str]
  texts: list[str]
  tokens: np.ndarray
  lengths: np.ndarray
  labels: np.ndarray
  reference_lengths: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.ids)


def bucket_widths(lengths: np.ndarray, max_length: int, num_buckets: int) -> list[int]:
  """Fixed batch widths: length quantiles rounded up to a multiple of 8, the last = max_length.

  Args:
    lengths: [n] int token counts (of the training split, so every split uses the same widths).
    max_length: the padded length L of the token arrays.
    num_buckets: the maximum number of widths.

  Returns:
    Sorted distinct widths (at most `num_buckets`), the last one `max_length`.
  """
  quantiles = np.quantile(lengths, np.arange(1, num_buckets) / num_buckets) if len(lengths) else []
  widths = {min(max_length, max(8, -(-int(np.ceil(q)) // 8) * 8)) for q in quantiles}
  return sorted(widths | {max_length})


def local_rows(index: np.ndarray, part: tuple[int, int]) -> np.ndarray:
  """Part p of P of a global batch's `index` [B]: its rows p * B / P ... (p + 1) * B / P."""
  return np.array_split(index, part[1])[part[0]]


def _plan(arrays, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
          bucket_by_length: bool, num_buckets: int,
          widths: Sequence[int] | None) -> list[tuple[int, np.ndarray]]:
  """One epoch's batches as (width, the split's rows [<= B]), in the order `batches` yields."""
  n, max_length = arrays.tokens.shape
  if bucket_by_length:
    if widths is None:
      reference = getattr(arrays, 'reference_lengths', None)
      widths = bucket_widths(arrays.lengths if reference is None else reference, max_length,
                             num_buckets)
    widths = np.asarray(sorted(widths))
    if widths[-1] < max_length:
      widths = np.append(widths, max_length)
    bucket = np.searchsorted(widths, arrays.lengths)  # Smallest width >= length.
  else:
    widths, bucket = np.asarray([max_length]), np.zeros(n, np.int64)
  rng = np.random.default_rng((seed, epoch)) if shuffle else None
  plan = []  # (width, example indices) per batch.
  for b, width in enumerate(widths):
    members = np.flatnonzero(bucket == b)
    if rng is not None:
      members = rng.permutation(members)
    plan += [(int(width), members[i:i + batch_size]) for i in range(0, len(members), batch_size)]
  if rng is not None:
    plan = [plan[i] for i in rng.permutation(len(plan))]
  return plan


def batches(arrays, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
            bucket_by_length: bool = False, num_buckets: int = 1, pad_final: bool = True,
            widths: Sequence[int] | None = None,
            part: tuple[int, int] = (0, 1)) -> Iterator[dict[str, np.ndarray]]:
  """Yields one epoch of batches of a split.

  Args:
    arrays: a `pipeline.SplitArrays` (tokens [n, L] uint8, uint16 or int32, lengths [n] int32,
      labels [n, G] float32, and `reference_lengths`, the training lengths the bucket widths
      come from).
    batch_size: B.
    shuffle: shuffle examples (within buckets) and the order of batches, with
      `np.random.default_rng((seed, epoch))`; else examples in order, buckets by width.
    seed, epoch: together select the shuffle.
    bucket_by_length: cut batches to bucket widths; else every batch has width L.
    num_buckets: number of widths when bucketing (see `bucket_widths`).
    pad_final: pad the last partial batch (of each bucket) to B rows; if False it is shorter.
    widths: explicit bucket widths (overrides `num_buckets` and the reference lengths).
    part: (p, P): yield only the p-th of P equal blocks of rows of every batch (a process's share
      of a global batch; see `parallel.process_part`). Every part sees the same batches.

  Yields:
    dict of numpy arrays, b = B / P rows of this part: tokens [b, W] int32, lengths [b] int32,
    labels [b, G] float32, mask [b] float32 (1 real, 0 padding row); and index [B] int64, the
    split's row of every row of the global batch (-1 padding). Padding rows have tokens 0 and
    length 1.
  """
  plan = _plan(arrays, batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
               bucket_by_length=bucket_by_length, num_buckets=num_buckets, widths=widths)
  for width, members in plan:
    size = batch_size if pad_final else len(members)
    index = np.full(size, -1, np.int64)
    index[:len(members)] = members
    mine = local_rows(index, part)
    real = mine >= 0
    rows = np.where(real, mine, 0)
    yield {
        'tokens': np.where(real[:, None], arrays.tokens[rows, :width], 0).astype(np.int32),
        'lengths': np.where(real, arrays.lengths[rows], 1).astype(np.int32),
        'labels': np.where(real[:, None], arrays.labels[rows], 0).astype(np.float32),
        'mask': real.astype(np.float32),
        'index': index,
    }
