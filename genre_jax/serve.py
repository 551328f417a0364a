"""Serves a trained run or an export over HTTP: a JSON API and a page to try it in a browser.

  python -m genre_jax.serve --export exports/cnn [--host 127.0.0.1] [--port 8000]
  python -m genre_jax.serve --workdir runs/cnn          # also POST /v1/explain (gradients)

  curl -s localhost:8000/v1/predict -H 'Content-Type: application/json' \
      -d '{"texts": ["A retired hitman is pulled back for one last job."]}'

The routes and the batching of concurrent requests are described in `genre_jax/server.py`. The
port is bound first (a port in use is one error line), then the model is loaded and every batch
shape compiled (`serving.Model.warm_up`, quick with a warm compilation cache), then the server
prints `ready: URL` and accepts requests. --port 0 takes a free port (printed in that line).
"""

import errno
import socket
import time

from absl import flags
from absl import logging

from genre_jax import cli
from genre_jax import errors
from genre_jax import host
from genre_jax.errors import GenreJaxError

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Workdir of a trained run or an ensemble (with explain).')
flags.DEFINE_string('export', None, 'Directory written by python -m genre_jax.export.')
flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on.')
flags.DEFINE_integer('port', 8000, 'Port to listen on (0: any free port).', lower_bound=0,
                     upper_bound=65535)
flags.DEFINE_integer('max_batch', 64, 'Most texts scored in one call.', lower_bound=1,
                     upper_bound=1024)
flags.DEFINE_float('max_wait_ms', 2.0, 'How long a free worker waits to fill a batch.',
                   lower_bound=0.0, upper_bound=1000.0)
flags.DEFINE_integer('max_texts', 64, 'Most synopses in one request.', lower_bound=1)
flags.DEFINE_integer('max_chars', 20_000, 'Most characters in one synopsis.', lower_bound=1)
flags.DEFINE_integer('max_body_bytes', 1 << 20, 'Largest request body.', lower_bound=1)


def bind(host: str, port: int) -> socket.socket:
  """A listening TCP socket on host:port.

  Raises:
    GenreJaxError: the port is in use, not permitted, or the host is not an address here.
  """
  try:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=2048)
  except socket.gaierror as e:
    raise GenreJaxError(f'--host {host} is not a known address ({e.strerror}).') from None
  except OSError as e:
    if e.errno == errno.EADDRINUSE:
      raise GenreJaxError(f'port {port} on {host} is in use; stop what holds it or choose '
                          'another --port.') from None
    if e.errno == errno.EADDRNOTAVAIL:
      raise GenreJaxError(f'--host {host} is not an address of this machine.') from None
    raise GenreJaxError(f'cannot listen on {host}:{port} ({e.strerror or e}).') from None


def load_model(start: float):
  """(serving.Model, the run for explain or None), warmed up; prints what it loaded."""
  from genre_jax import serving
  if FLAGS.export:
    model, run = serving.load(FLAGS.export, FLAGS.max_batch), None
  else:
    from genre_jax import exporting, inference
    run = inference.load_run(FLAGS.workdir)
    model = exporting.in_memory(run, FLAGS.max_batch)
  shapes = model.warm_up()
  print(f'loaded {model.manifest["kind"]} {model.manifest["source_workdir"]} '
        f'({", ".join(m.spec["model"] for m in model.members)}); {shapes} batch shapes compiled, '
        f'{time.perf_counter() - start:.1f} s after start', flush=True)
  return model, run


def start_command(argv: list[str]) -> None:
  """`cli.start` without importing the training stack (flax) for an export."""
  if len(argv) > 1:
    raise GenreJaxError(f'unexpected arguments: {" ".join(argv[1:])} (flags are spelt '
                        '--name=value; see --help).')
  logging.set_verbosity(logging.FATAL)
  host.keep_freed_memory()
  from genre_jax import serving
  serving.enable_compilation_cache()


@errors.run_cli
def main(argv):
  start = time.perf_counter()
  start_command(argv)
  if bool(FLAGS.workdir) == bool(FLAGS.export):
    raise GenreJaxError('give exactly one of --workdir (a trained run) or --export (a directory '
                        'from python -m genre_jax.export).')
  import uvicorn
  from genre_jax import server
  sock = bind(FLAGS.host, FLAGS.port)
  model, run = load_model(start)
  host, port = sock.getsockname()[:2]
  url = f'http://{f"[{host}]" if ":" in host else host}:{port}'
  limits = server.Limits(max_body_bytes=FLAGS.max_body_bytes, max_texts=FLAGS.max_texts,
                         max_chars=FLAGS.max_chars)
  app = server.create_app(model, run=run, limits=limits, max_wait_s=FLAGS.max_wait_ms / 1000,
                          on_ready=lambda: print(f'ready: {url}', flush=True))
  config = uvicorn.Config(app, log_level='warning', access_log=False, lifespan='on',
                          proxy_headers=False, server_header=False, date_header=False)
  uvicorn.Server(config).run(sockets=[sock])


if __name__ == '__main__':
  cli.run(main)
