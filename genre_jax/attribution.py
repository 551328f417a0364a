"""Why a genre: per-word integrated gradients of a run's (or an ensemble's) calibrated logits.

For a synopsis whose word embeddings are x [L, E] and a baseline b of the same length that holds
the padding embedding at every word position (special tokens such as [CLS] and [SEP] are kept),
the attribution of position l to genre g is

  a_g[l] = sum_e (x - b)[l, e] * integral_0^1 d f_g(b + alpha (x - b)) / d x[l, e] d alpha,

(Sundararajan et al., 2017). f is the calibrated logit, `run.calibration.logits(model(...))`, so
sigmoid(f) is the probability `predict` prints, and completeness holds: sum_l a_g[l] =
f_g(x) - f_g(b), up to the quadrature error reported per genre as `completeness_error`. Every
architecture is handled the same way through the models' `embed_tokens` / `from_embeddings`
hooks (a pretrained encoder's word embeddings are interpolated; its position and token-type
embeddings are kept).

The integral is taken by adaptive composite Gauss-Legendre quadrature: `steps` points on the
whole path, then, while the attributions of a genre miss f(x) - f(b) by more than TOLERANCE of
it, the path segments whose own sums miss their own f(hi) - f(lo) the most are halved (up to
MAX_SEGMENTS segments). A plain fixed number of points is not enough for every model: along the
path an LSTM's logit can jump by a logit or more within a thousandth of it (its gates switching),
which points spread evenly miss or over-weight; a ReLU network's gradient is piecewise constant.

An ensemble's f is the logit of its calibrated probability, `ens.calibration.logits(logit(sum_m
w_m sigmoid(f_m)))` with f_m the members' calibrated logits, integrated along the joint straight
path of all members' embeddings from their baselines: each member's tokens get their share, and
the shares of all members add up to the ensemble's f(x) - f(b).

Words are the synopsis split at whitespace ("Paris." is one word). The attribution of each token
is added to the word it comes from: a word tokenizer's words by position, a WordPiece tokenizer's
pieces by their character offsets; words past a model's `max_length` get 0 (it does not see them).

`explain(run, texts, genres, steps)` returns one JSON-able record per synopsis:
  {'text', 'words', 'calibration', 'steps', 'segments', 'genres': {name: {'probability',
   'logit', 'baseline_logit', 'attributions' (one per word), 'completeness_error'}}}.
The computation is batched (path segments x quadrature points x genres) and jitted, one compiled
program per padded width and batch shape.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genre_jax import calibration as calibration_lib
from genre_jax import thresholds as thresholds_lib
from genre_jax.errors import GenreJaxError

DEFAULT_STEPS = 16  # Quadrature points per path segment.
MAX_STEPS = 1024
TOLERANCE = 0.005  # Segments are split until the completeness error is below this ...
MAX_SEGMENTS = 32  # ... or a text's path has this many segments.
WIDTH_MULTIPLE = 32  # Texts are padded to a multiple of this (at most max_length): few programs.
TOKEN_BUDGET = 8192  # Path points x padded width per compiled call, summed over members.
# Unicode White_Space, as the tokenizers' WhitespaceSplit and BERT's pre-tokenizer split on it.
_WORD = re.compile('[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+')
_LOGIT_LIMIT = float(calibration_lib.logit(np.array([1 - calibration_lib.EPS]))[0])


# ---- Words -------------------------------------------------------------------------------------

def word_spans(text: str) -> list[tuple[int, int]]:
  """The (start, end) character offsets of the whitespace-separated words of `text`."""
  return [m.span() for m in _WORD.finditer(text)]


@functools.lru_cache(maxsize=8)
def _offsets_tokenizer(tokenizer_json: str, max_length: int):
  """A `tokenizers.Tokenizer` that truncates as `HFTokenizer.encode` does, for its offsets."""
  import tokenizers
  tok = tokenizers.Tokenizer.from_str(tokenizer_json)
  tok.no_padding()
  tok.enable_truncation(max_length)
  return tok


def token_words(tokenizer, text: str, spans: list[tuple[int, int]], max_length: int,
                length: int) -> np.ndarray:
  """The word (index into `spans`) of each of the `length` tokens `tokenizer.encode` gives
  `text`: [length] int64, -1 for tokens of no word (special tokens, a word-less text's token)."""
  owner = np.full(length, -1, np.int64)
  if getattr(tokenizer, 'kind', None) == 'hf':  # pretrained.HFTokenizer: by the pieces' offsets.
    enc = _offsets_tokenizer(tokenizer.to_dict()['tokenizer_json'], max_length).encode(text)
    starts = [s for s, _ in spans]
    for i, ((start, _), special) in enumerate(zip(enc.offsets[:length],
                                                  enc.special_tokens_mask)):
      if not special and starts:
        owner[i] = max(bisect.bisect_right(starts, start) - 1, 0)
    return owner
  # A word tokenizer's words never cross whitespace: count them word by word.
  counts = [len(tokenizer.tokenize(text[s:e])) for s, e in spans]
  seen = min(len(tokenizer.tokenize(text)), length)
  per_token = np.repeat(np.arange(len(spans)), counts)[:seen]
  owner[:len(per_token)] = per_token
  owner[len(per_token):seen] = len(spans) - 1  # Only if a split ever disagreed: keep the sum.
  return owner


# ---- Genres, texts and steps (what a caller may get wrong) -----------------------------------

def resolve_genres(classes: Sequence[str], names: Sequence[str] | None,
                   what: str = 'genre') -> list[int] | None:
  """Genre indices of `names` (case-insensitive; an entry may be a comma-separated list), None
  for none given (then `explain` uses the predicted genres).

  Raises:
    GenreJaxError naming `what` (e.g. the flag) and the run's genres, for an unknown genre.
  """
  if not names:
    return None
  index = {c.casefold(): i for i, c in enumerate(classes)}
  out = []
  for entry in names:
    if not isinstance(entry, str):
      raise GenreJaxError(f'{what}: genres are strings, not {entry!r}.')
    for name in filter(None, (n.strip() for n in entry.split(','))):
      if name.casefold() not in index:
        raise GenreJaxError(f'{what}: unknown genre {name!r}; this run predicts: '
                            f'{", ".join(classes)}.')
      if index[name.casefold()] not in out:
        out.append(index[name.casefold()])
  return out or None


def _check_texts(texts) -> list[str]:
  if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
    raise GenreJaxError('texts: give a non-empty list of synopses.')
  for i, t in enumerate(texts):
    if not isinstance(t, str) or not t.strip():
      raise GenreJaxError(f'synopsis {i + 1} is empty or not text; give some text to explain.')
  return list(texts)


def _check_steps(steps) -> int:
  if steps is None:
    return DEFAULT_STEPS
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not (
      1 <= steps <= MAX_STEPS):
    raise GenreJaxError(f'steps must be an integer from 1 to {MAX_STEPS}, not {steps!r}.')
  return int(steps)


def quadrature(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Gauss-Legendre nodes and weights on [0, 1]: two [steps] float32 arrays."""
  t, w = np.polynomial.legendre.leggauss(steps)
  return ((t + 1) / 2).astype(np.float32), (w / 2).astype(np.float32)


# ---- The compiled computation ------------------------------------------------------------------

def _calibrated_logits(models, calib, xs, lengths, ensemble: bool) -> jax.Array:
  """f: the calibrated logits [B, G] of the members' word embeddings xs (each [B, W_m, E_m])."""
  zs = [m.from_embeddings(x, n) / t for m, x, n, t in zip(models, xs, lengths,
                                                           calib['temperatures'])]
  if not ensemble:
    return zs[0]
  z = jnp.stack(zs)  # [M, B, G]
  w = calib['weights'][:, None, None]
  # logit(sum_m w_m sigmoid(z_m)) without rounding sigmoid to 1: log p - log(1 - p).
  log_p = jax.nn.logsumexp(-jax.nn.softplus(-z), axis=0, b=w)
  log_q = jax.nn.logsumexp(-jax.nn.softplus(z), axis=0, b=w)
  # Clipped as calibration.logit clips the combined probability.
  return jnp.clip(log_p - log_q, -_LOGIT_LIMIT, _LOGIT_LIMIT) / calib['temperature']


@functools.partial(jax.jit, static_argnames=('graphdef', 'ensemble'))
def _logits(graphdef, state, calib, tokens, lengths, *, ensemble: bool) -> jax.Array:
  """Calibrated logits [N, G] of token ids (per member [N, W_m] int32, lengths [N] int32)."""
  models = nnx.merge(graphdef, state)
  xs = [m.embed_tokens(t) for m, t in zip(models, tokens)]
  return _calibrated_logits(models, calib, xs, lengths, ensemble)


@functools.partial(jax.jit, static_argnames=('graphdef', 'ensemble'))
def _integrate(graphdef, state, calib, tokens, base, lengths, genres, alphas, weights, ends, *,
               ensemble: bool):
  """Integrated gradients over one segment of the path for each of N rows (texts, or pieces of
  their paths), K genres each, every quadrature point in one batch.

  Args:
    graphdef, state: `nnx.split` of the list of member models (one for a run).
    calib: 'temperatures' (per member [G] float32), 'weights' [M], 'temperature' [G].
    tokens, base: per member [N, W_m] int32, the input and the baseline token ids.
    lengths: per member [N] int32.
    genres: [N, K] int32, the genres to attribute in each row.
    alphas, weights: [N, S] float32, each row's quadrature points (the fraction of the way from
      the baseline to the input) and weights.
    ends: [N, 2] float32, the points of the path whose f is returned (the segment's ends).

  Returns:
    attributions: per member [N, K, W_m] float32; f at `ends`: [N, 2, G] float32.
  """
  models = nnx.merge(graphdef, state)
  xs = [m.embed_tokens(t) for m, t in zip(models, tokens)]
  bs = [m.embed_tokens(t) for m, t in zip(models, base)]
  (n, k), s = genres.shape, alphas.shape[1]

  def points(at):  # Per member [N * P, W_m, E_m]: the path at `at` [N, P].
    return [(b[:, None] + at[:, :, None, None] * (x - b)[:, None]).reshape(-1, *x.shape[1:])
            for x, b in zip(xs, bs)]

  def f(at, *path):
    lens = [jnp.repeat(m, at.shape[1]) for m in lengths]
    return _calibrated_logits(models, calib, path, lens, ensemble)

  out, vjp = jax.vjp(functools.partial(f, alphas), *points(alphas))
  select = jnp.repeat(jax.nn.one_hot(genres, out.shape[1], dtype=out.dtype), s, axis=0)
  grads = jax.vmap(vjp, in_axes=1)(select)  # Per member [K, N * S, W_m, E_m].
  attributions = [
      jnp.einsum('knswe,ns,nwe->nkw', g.reshape(k, n, s, *g.shape[2:]), weights, x - b)
      for g, x, b in zip(grads, xs, bs)]
  return attributions, f(ends, *points(ends)).reshape(n, 2, -1)


# ---- A run or an ensemble, ready to explain ------------------------------------------------

@dataclasses.dataclass
class _Encoded:
  """Every member's view of the texts: ids [n, max_length], lengths [n], token words."""
  tokens: list[np.ndarray]
  lengths: list[np.ndarray]
  owners: list[list[np.ndarray]]  # Per member, per text: [length] word of each token.
  base: list[np.ndarray]  # Per member [n, max_length]: padding at every word position.
  widths: np.ndarray | None = None  # [n, members]: the padded width each text is run at.


class Explainer:
  """A run's or an ensemble's models as one `nnx` state, with the calibration f applies."""

  def __init__(self, run):
    self.members = list(getattr(run, 'members', [run]))
    self.ensemble = hasattr(run, 'members')
    self.classes = list(run.labels.classes)
    g = len(self.classes)
    models = [m.model for m in self.members]
    for model in models:
      model.eval()
    self.graphdef, self.state = nnx.split(models)
    per_genre = lambda t: np.broadcast_to(np.asarray(t, np.float32), (g,)).copy()
    m = len(self.members)
    weights = run.weights if self.ensemble and run.weights is not None else np.full(m, 1 / m)
    self.calib = {
        'temperatures': [per_genre(r.calibration.temperature) for r in self.members],
        'weights': np.asarray(weights, np.float32),
        'temperature': per_genre(run.calibration.temperature)}

  def encode(self, texts: list[str], spans: list[list[tuple[int, int]]]) -> _Encoded:
    """Every member's token ids of `texts`, their words (`spans`: `word_spans` of each text) and
    the baseline ids."""
    enc = _Encoded([], [], [], [])
    for r in self.members:
      max_length = r.config.data.max_length
      tokens, lengths = r.tokenizer.encode(texts, max_length)
      owners = [token_words(r.tokenizer, t, s, max_length, int(n))
                for t, s, n in zip(texts, spans, lengths)]
      words = np.zeros(tokens.shape, bool)
      for i, o in enumerate(owners):
        words[i, :len(o)] = o >= 0
      enc.tokens.append(tokens)
      enc.lengths.append(lengths.astype(np.int32))
      enc.owners.append(owners)
      enc.base.append(np.where(words, r.tokenizer.pad_id, tokens).astype(np.int32))
    enc.widths = np.stack([np.minimum(-(-n // WIDTH_MULTIPLE) * WIDTH_MULTIPLE, t.shape[1])
                           for n, t in zip(enc.lengths, enc.tokens)], axis=1)
    return enc

  def _calls(self, enc: _Encoded, texts: list[int], steps: int):
    """Splits rows (of texts `texts`, which may repeat) into compiled calls: rows of equal padded
    widths, at most TOKEN_BUDGET path tokens, the row count a power of two (repeating the first
    row to fill). Yields (row positions, padded row positions, per member width)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for pos, i in enumerate(texts):
      groups.setdefault(tuple(enc.widths[i].tolist()), []).append(pos)
    for key, rows in groups.items():
      most = _floor_power_of_two(max(1, TOKEN_BUDGET // (steps * sum(key))))
      for start in range(0, len(rows), most):
        chunk = rows[start:start + most]
        yield chunk, chunk + [chunk[0]] * (_ceil_power_of_two(len(chunk)) - len(chunk)), list(key)

  def logits(self, enc: _Encoded) -> np.ndarray:
    """Calibrated logits [n, G] float32 of the encoded texts."""
    n = len(enc.lengths[0])
    out = np.zeros((n, len(self.classes)), np.float32)
    for chunk, rows, widths in self._calls(enc, list(range(n)), 1):
      z = _logits(self.graphdef, self.state, self.calib,
                  [t[rows, :w] for t, w in zip(enc.tokens, widths)],
                  [m[rows] for m in enc.lengths], ensemble=self.ensemble)
      out[chunk] = np.asarray(z)[:len(chunk)]
    return out

  def _segments(self, enc: _Encoded, genres: list[list[int]], todo, steps: int):
    """Integrated gradients over path segments `todo` [(text, lo, hi)]: per segment, each member's
    token attributions [K_i, tokens] float64 and f [G] at lo and at hi."""
    nodes, node_weights = quadrature(steps)
    out = [None] * len(todo)
    for chunk, rows, widths in self._calls(enc, [i for i, _, _ in todo], steps):
      ids = [todo[r][0] for r in rows]
      lo, hi = (np.array([todo[r][c] for r in rows], np.float32) for c in (1, 2))
      k = min(_ceil_power_of_two(max(len(genres[i]) for i in ids)), len(self.classes))
      attrs, f = _integrate(
          self.graphdef, self.state, self.calib, [t[ids, :w] for t, w in zip(enc.tokens, widths)],
          [b[ids, :w] for b, w in zip(enc.base, widths)], [m[ids] for m in enc.lengths],
          np.array([(genres[i] * k)[:k] for i in ids], np.int32),
          lo[:, None] + (hi - lo)[:, None] * nodes, (hi - lo)[:, None] * node_weights,
          np.stack([lo, hi], axis=1), ensemble=self.ensemble)
      attrs, f = [np.asarray(a, np.float64) for a in attrs], np.asarray(f, np.float64)
      for j, pos in enumerate(chunk):
        i = ids[j]
        out[pos] = ([a[j, :len(genres[i]), :len(o[i])] for a, o in zip(attrs, enc.owners)],
                    f[j, 0], f[j, 1])
    return out

  def integrate(self, enc: _Encoded, genres: list[list[int]], steps: int,
                num_words: list[int], max_segments: int = MAX_SEGMENTS):
    """Adaptive integrated gradients (see the module docstring).

    Returns:
      per text i: word attributions [len(genres[i]), num_words[i]] float64, f(x) and f(b) [G]
      float64, and the number of path segments used.
    """
    parts = [{} for _ in genres]  # Per text: (lo, hi) -> (attributions, |error| per genre).
    ends = [None] * len(genres)  # Per text: (f(b), f(x)).
    todo = [(i, 0.0, 1.0) for i in range(len(genres))]
    while todo:
      for (i, lo, hi), (attrs, f_lo, f_hi) in zip(todo, self._segments(enc, genres, todo, steps)):
        if (lo, hi) == (0.0, 1.0):
          ends[i] = (f_lo, f_hi)
        g = genres[i]
        parts[i][lo, hi] = attrs, np.abs(sum(a.sum(axis=1) for a in attrs) - (f_hi[g] - f_lo[g]))
      touched = sorted({i for i, _, _ in todo})
      todo = [seg for i in touched for seg in _refine(i, parts[i], ends[i], genres[i],
                                                      max_segments)]
    results = []
    for i, (p, (f_b, f_x)) in enumerate(zip(parts, ends)):
      tokens = [sum(attrs[m] for attrs, _ in p.values()) for m in range(len(self.members))]
      results.append((_to_words(tokens, [o[i] for o in enc.owners], num_words[i]), f_x, f_b,
                      len(p)))
    return results


def _refine(i: int, parts: dict, ends, genres: list[int], max_segments: int) -> list:
  """The halves of text i's worst path segments, [(i, lo, hi)], while the segments' summed
  completeness errors exceed TOLERANCE of |f(x) - f(b)| for a genre and fewer than
  `max_segments` are used. Removes the segments it splits from `parts`."""
  delta = np.maximum(np.abs(ends[1][genres] - ends[0][genres]), 1e-6)
  errors = {seg: e / delta for seg, (_, e) in parts.items()}  # [K] each.
  if np.max(sum(errors.values())) <= TOLERANCE:
    return []
  worst = {seg: float(e.max()) for seg, e in errors.items()}
  top, out = max(worst.values()), []
  for (lo, hi) in sorted(worst, key=worst.get, reverse=True):
    if worst[lo, hi] < top / 2 or len(parts) + len(out) + 1 > max_segments:
      break
    del parts[lo, hi]
    mid = (lo + hi) / 2
    out += [(i, lo, mid), (i, mid, hi)]
  return out


def _to_words(tokens: list[np.ndarray], owners: list[np.ndarray], num_words: int) -> np.ndarray:
  """Token attributions (per member [K, tokens]) summed per word: [K, num_words]."""
  words = np.zeros((tokens[0].shape[0], num_words))
  for a, o in zip(tokens, owners):
    real = o >= 0
    np.add.at(words.T, o[real], a[:, real].T)
  return words


def _ceil_power_of_two(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def _floor_power_of_two(n: int) -> int:
  return 1 << (n.bit_length() - 1)


# ---- Records -----------------------------------------------------------------------------------

def completeness_error(attributions: np.ndarray, logit: float, baseline_logit: float) -> float:
  """|sum(attributions) - (logit - baseline_logit)| relative to |logit - baseline_logit|."""
  delta = logit - baseline_logit
  return float(abs(np.sum(attributions) - delta) / max(abs(delta), 1e-6))


def explain(run, texts: list[str], genres: list[str] | None = None,
            steps: int | None = None, *, max_segments: int = MAX_SEGMENTS) -> list[dict]:
  """Per-word attributions of a run's or an ensemble's calibrated logits.

  Args:
    run: an `inference.Run` or `inference.Ensemble`.
    texts: synopses (non-empty strings).
    genres: genre names (case-insensitive; entries may be comma-separated lists), or None (or
      empty) for each synopsis's predicted genres (`thresholds.apply` with the run's thresholds;
      at least the most probable one), most probable first.
    steps: quadrature points per path segment (1 to MAX_STEPS), default DEFAULT_STEPS.
    max_segments: the most segments a path is cut into (1: plain `steps`-point quadrature).

  Returns:
    One record per text: 'text', 'words' (the text split at whitespace), 'calibration' (the
    run's method), 'steps', 'segments' (of its path), and 'genres': {name: {'probability'
    (sigmoid of 'logit'), 'logit' (calibrated), 'baseline_logit', 'attributions' (one float per
    word), 'completeness_error' (`completeness_error`)}}.

  Raises:
    GenreJaxError: empty texts, an unknown genre or a bad `steps`.
  """
  texts, steps = _check_texts(texts), _check_steps(steps)
  explainer = Explainer(run)
  wanted = resolve_genres(explainer.classes, genres)
  spans = [word_spans(t) for t in texts]
  enc = explainer.encode(texts, spans)
  if wanted is None:
    probs = _sigmoid(explainer.logits(enc))
    predicted = thresholds_lib.apply(probs, run.threshold, at_least_one=True)
    per_text = [sorted(np.flatnonzero(row).tolist(), key=lambda g, p=p: -p[g])
                for row, p in zip(predicted, probs)]
  else:
    per_text = [wanted] * len(texts)
  results = explainer.integrate(enc, per_text, steps, [len(s) for s in spans], max_segments)
  return [_record(text, s, explainer.classes, chosen, result, run.calibration.method, steps)
          for text, s, chosen, result in zip(texts, spans, per_text, results)]


def _record(text: str, spans, classes: list[str], genres: list[int], result, method: str,
            steps: int) -> dict[str, Any]:
  words, fx, fb, segments = result
  out = {}
  for k, g in enumerate(genres):
    out[classes[g]] = {
        'probability': float(_sigmoid(fx[g])), 'logit': float(fx[g]),
        'baseline_logit': float(fb[g]), 'attributions': words[k].tolist(),
        'completeness_error': completeness_error(words[k], fx[g], fb[g])}
  return {'text': text, 'words': [text[s:e] for s, e in spans], 'calibration': method,
          'steps': steps, 'segments': segments, 'genres': out}


def _sigmoid(z):
  return np.exp(-np.logaddexp(0.0, -np.asarray(z, np.float64)))  # No overflow for any z.
