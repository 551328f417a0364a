"""The HTTP JSON API and the page of `python -m genre_jax.serve` (Starlette).

  POST /v1/predict  {"texts": [...], "top_k": 5}  -> {"labels", "predictions": [record per text]}
  POST /v1/explain  {"texts": [...], "genres": [...], "steps": 32}  -> {"explanations": [...]}
  GET  /healthz     -> {"status": "ok", "labels", "explain", "limits", ...}
  GET  /            -> the page (genre_jax/static/)

A prediction record is `predict --json`'s (`records.prediction_records`) with every genre's
probability ('probabilities') and the threshold in use ('threshold': a number, or one per genre).
Explanations are `attribution.explain`'s records; they need the run's gradients, so only a server
started with --workdir gives them (otherwise 501).

Concurrent requests are scored together (`Batcher`): their texts are queued, and one worker thread
scores up to `max_batch` texts at a time, waiting at most `max_wait_s` for more once it is free, so
the event loop keeps accepting requests while a batch runs. Every bad request gets a 4xx JSON
`{"error": message}` naming the problem; 500 is kept for faults of the server itself.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import pathlib
from typing import Any, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from genre_jax import records
from genre_jax.errors import GenreJaxError

STATIC = pathlib.Path(__file__).parent / 'static'


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may ask for."""
  max_body_bytes: int = 1 << 20
  max_texts: int = 64
  max_chars: int = 20_000  # Per text.
  max_explain_texts: int = 8
  max_queued_texts: int = 4096  # Beyond this the server answers 503 (busy) instead of queueing.


class ApiError(Exception):
  """A request the API refuses: HTTP `status` and a message naming the problem."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


class Batcher:
  """Scores the texts of concurrent requests together in one worker thread.

  `await score(texts)` queues the texts and returns their [n, G] probabilities. The worker takes
  everything queued (up to `max_batch` texts; a larger request is scored alone); when that is
  fewer than `max_batch` and its previous batch held several requests (requests are arriving
  concurrently), it waits up to `max_wait_s` for more before scoring. A lone client's request is
  scored at once.
  """

  def __init__(self, score_fn: Callable[[list[str]], np.ndarray], max_batch: int,
               max_wait_s: float, max_queued: int):
    self._score_fn, self.max_batch, self.max_wait_s = score_fn, max_batch, max_wait_s
    self.max_queued = max_queued
    self._items: collections.deque = collections.deque()
    self._queued = 0
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='scorer')
    self._arrived: asyncio.Event | None = None
    self._shared = False  # Whether the last batch held more than one request.
    self._task: asyncio.Task | None = None

  async def start(self) -> None:
    self._arrived = asyncio.Event()
    self._task = asyncio.create_task(self._run())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
      with contextlib.suppress(asyncio.CancelledError):
        await self._task
    self._executor.shutdown(wait=True)

  async def score(self, texts: list[str]) -> np.ndarray:
    """[n, G] float32 probabilities of the texts, scored with those of other requests."""
    if self._queued + len(texts) > self.max_queued:
      raise ApiError(503, f'the server is busy ({self._queued} texts queued); retry shortly.')
    future = asyncio.get_running_loop().create_future()
    self._items.append((texts, future))
    self._queued += len(texts)
    self._arrived.set()
    return await future

  def _take(self, batch: list, count: int) -> int:
    """Moves queued requests into `batch` while they fit in max_batch (the first always)."""
    while self._items and (not batch or count + len(self._items[0][0]) <= self.max_batch):
      texts, future = self._items.popleft()
      self._queued -= len(texts)
      if not future.cancelled():  # Its client went away.
        batch.append((texts, future))
        count += len(texts)
    return count

  async def _next_batch(self) -> list:
    loop = asyncio.get_running_loop()
    batch, count = [], 0
    while not batch:
      self._arrived.clear()
      count = self._take(batch, count)
      if not batch:
        await self._arrived.wait()
    deadline = loop.time() + (self.max_wait_s if self._shared else 0.0)
    while count < self.max_batch and not self._items:
      remaining = deadline - loop.time()
      if remaining <= 0:
        break
      self._arrived.clear()
      with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(self._arrived.wait(), remaining)
      count = self._take(batch, count)
    return batch

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = await self._next_batch()
      self._shared = len(batch) > 1
      texts = [t for item, _ in batch for t in item]
      try:
        probs = await loop.run_in_executor(self._executor, self._score_fn, texts)
      except Exception as e:  # A fault of the server: each waiting request gets a 500.
        for _, future in batch:
          if not future.done():
            future.set_exception(e)
        continue
      start = 0
      for item, future in batch:
        if not future.done():
          future.set_result(probs[start:start + len(item)])
        start += len(item)


# ---- Request checking --------------------------------------------------------------------------

async def read_json(request: Request, limits: Limits) -> dict[str, Any]:
  """The request's JSON object, read within `limits.max_body_bytes`.

  Raises:
    ApiError: 415 not JSON content, 413 too large, 400 not a JSON object.
  """
  kind = request.headers.get('content-type', '').split(';')[0].strip().lower()
  if kind != 'application/json':
    raise ApiError(415, f'Content-Type must be application/json, not {kind or "missing"}.')
  declared = request.headers.get('content-length')
  if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
    raise ApiError(413, f'the body has {int(declared)} bytes; the limit is '
                        f'{limits.max_body_bytes}.')
  body = bytearray()
  async for chunk in request.stream():
    body += chunk
    if len(body) > limits.max_body_bytes:
      raise ApiError(413, f'the body is larger than the limit of {limits.max_body_bytes} bytes.')
  try:
    payload = json.loads(body.decode('utf-8'))
  except UnicodeDecodeError:
    raise ApiError(400, 'the body is not UTF-8 text.') from None
  except (ValueError, RecursionError) as e:
    raise ApiError(400, f'the body is not valid JSON ({str(e)[:100] or "nested too deeply"}).'
                   ) from None
  if not isinstance(payload, dict):
    raise ApiError(400, 'the body must be a JSON object such as {"texts": ["a synopsis"]}.')
  return payload


def check_fields(payload: dict[str, Any], allowed: tuple[str, ...]) -> None:
  unknown = sorted(set(payload) - set(allowed))
  if unknown:
    raise ApiError(400, f'unknown field(s) {", ".join(map(repr, unknown))}; this endpoint takes '
                        f'{", ".join(allowed)}.')


def check_texts(payload: dict[str, Any], max_texts: int, max_chars: int) -> list[str]:
  """`payload['texts']`: 1 to max_texts non-empty strings of at most max_chars characters."""
  if 'texts' not in payload:
    raise ApiError(400, 'missing field "texts": give a list of synopses.')
  texts = payload['texts']
  if not isinstance(texts, list):
    raise ApiError(400, f'"texts" must be a list of strings, not {_json_type(texts)}.')
  if not texts:
    raise ApiError(400, '"texts" is empty; give at least one synopsis.')
  if len(texts) > max_texts:
    raise ApiError(413, f'"texts" has {len(texts)} synopses; the limit is {max_texts} a request.')
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise ApiError(400, f'texts[{i}] must be a string, not {_json_type(text)}.')
    if not text.strip():
      raise ApiError(400, f'texts[{i}] is empty; give some text to classify.')
    if len(text) > max_chars:
      raise ApiError(413, f'texts[{i}] has {len(text)} characters; the limit is {max_chars}.')
    try:
      text.encode('utf-8')
    except UnicodeEncodeError:
      raise ApiError(400, f'texts[{i}] is not valid Unicode (an unpaired surrogate escape).'
                     ) from None
  return texts


def check_int(payload: dict[str, Any], name: str, low: int, high: int) -> int | None:
  value = payload.get(name)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
    raise ApiError(400, f'"{name}" must be an integer from {low} to {high}, not '
                        f'{json.dumps(value)[:40]}.')
  return value


def _json_type(value) -> str:
  names = {dict: 'an object', list: 'a list', str: 'a string', bool: 'a boolean',
           int: 'a number', float: 'a number', type(None): 'null'}
  return names.get(type(value), type(value).__name__)


# ---- The application ---------------------------------------------------------------------------

def prediction_records(model, texts: list[str], probs: np.ndarray,
                       top_k: int) -> list[dict[str, Any]]:
  """`records.prediction_records` with every genre's probability and the threshold in use."""
  labels, threshold = model.labels, model.threshold
  shown = (round(float(threshold), records.DIGITS) if np.ndim(threshold) == 0 else
           {g: round(float(t), records.DIGITS) for g, t in zip(labels, threshold)})
  out = records.prediction_records(texts, probs, labels, model.thresholds,
                                   model.calibration_method, top_k)
  for record, p in zip(out, probs):
    record['probabilities'] = {g: round(float(q), records.DIGITS) for g, q in zip(labels, p)}
    record['threshold'] = shown
  return out


class Api:
  """The routes' handlers over one model (and run, for explanations), its batcher and limits."""

  def __init__(self, model, run, limits: Limits, max_wait_s: float,
               on_ready: Callable[[], None] | None):
    self.model, self.run, self.limits, self.on_ready = model, run, limits, on_ready
    self.batcher = Batcher(model.probabilities, model.max_batch, max_wait_s,
                           limits.max_queued_texts)
    self.explain_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='explain')

  @contextlib.asynccontextmanager
  async def lifespan(self, app):
    await self.batcher.start()
    if self.on_ready is not None:
      self.on_ready()
    try:
      yield
    finally:
      await self.batcher.stop()
      self.explain_pool.shutdown(wait=False, cancel_futures=True)

  async def predict(self, request: Request) -> JSONResponse:
    payload = await read_json(request, self.limits)
    check_fields(payload, ('texts', 'top_k'))
    texts = check_texts(payload, self.limits.max_texts, self.limits.max_chars)
    top_k = check_int(payload, 'top_k', 1, len(self.model.labels)) or 5
    probs = await self.batcher.score(texts)
    return JSONResponse({'labels': self.model.labels,
                         'predictions': prediction_records(self.model, texts, probs, top_k)})

  async def explain(self, request: Request) -> JSONResponse:
    if self.run is None:
      raise ApiError(501, 'explanations need the model\'s gradients, which an export does not '
                          'hold: start the server with --workdir to get them.')
    payload = await read_json(request, self.limits)
    check_fields(payload, ('texts', 'genres', 'steps'))
    texts = check_texts(payload, self.limits.max_explain_texts, self.limits.max_chars)
    genres = check_genres(payload.get('genres'), self.model.labels)
    steps = check_int(payload, 'steps', 1, 256)
    from genre_jax import attribution
    try:
      out = await asyncio.get_running_loop().run_in_executor(
          self.explain_pool,
          lambda: attribution.explain(self.run, texts, genres=genres, steps=steps))
    except GenreJaxError as e:
      raise ApiError(400, str(e)) from None
    return JSONResponse({'labels': self.model.labels, 'explanations': out})

  async def healthz(self, request: Request) -> JSONResponse:
    model = self.model
    return JSONResponse({
        'status': 'ok', 'kind': model.manifest['kind'], 'labels': model.labels,
        'models': [m.spec['model'] for m in model.members],
        'source_workdir': model.manifest['source_workdir'], 'explain': self.run is not None,
        'calibration': model.calibration_method, 'max_batch': model.max_batch,
        'limits': dataclasses.asdict(self.limits)})

  async def page(self, request: Request) -> FileResponse:
    return FileResponse(STATIC / 'index.html')


def create_app(model, *, run=None, limits: Limits = Limits(), max_wait_s: float = 0.002,
               on_ready: Callable[[], None] | None = None) -> Starlette:
  """The Starlette application serving `model` (a `serving.Model`).

  Args:
    model: scores texts (`probabilities`) and knows the labels and thresholds.
    run: the loaded run or ensemble (`inference.load_run`) for /v1/explain, or None.
    limits: what one request may ask for.
    max_wait_s: how long a free worker waits to fill a batch while requests arrive together.
    on_ready: called once the batcher runs (the server then accepts requests).
  """
  api = Api(model, run, limits, max_wait_s, on_ready)
  routes = [Route('/', api.page), Route('/healthz', api.healthz),
            Route('/v1/predict', api.predict, methods=['POST']),
            Route('/v1/explain', api.explain, methods=['POST']),
            Mount('/static', StaticFiles(directory=STATIC), name='static')]
  handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _server_error}
  return Starlette(routes=routes, exception_handlers=handlers, lifespan=api.lifespan)


def check_genres(value, labels: list[str]) -> list[str] | None:
  """`genres` of an explain request: null or a list of this model's genres (any case)."""
  if value is None:
    return None
  if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
    raise ApiError(400, f'"genres" must be a list of genre names, not {_json_type(value)}.')
  known = {g.casefold() for g in labels}
  unknown = [g for g in value if g.strip().casefold() not in known]
  if unknown:
    raise ApiError(400, f'unknown genre(s) {", ".join(map(repr, unknown[:5]))}; this model '
                        f'predicts {", ".join(labels)}.')
  return value or None


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
  return JSONResponse({'error': str(exc)}, status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
  if exc.status_code == 404:
    message = f'no such route: {request.method} {request.url.path} (see GET /healthz).'
  elif exc.status_code == 405:
    allowed = (exc.headers or {}).get('Allow', '')
    message = f'{request.method} is not allowed on {request.url.path}; use {allowed}.'
  else:
    message = str(exc.detail)
  return JSONResponse({'error': message}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
  return JSONResponse({'error': f'internal server error ({type(exc).__name__}).'},
                      status_code=500)
