"""Exports a trained run or ensemble as a self-contained directory for `genre_jax.serving`.

  python -m genre_jax.export --workdir runs/cnn --out exports/cnn
  python -m genre_jax.export --workdir runs/ens --out exports/ens --platforms=cpu

The directory (see `serving`) holds each model's scoring function serialised by `jax.export`
(tokens and lengths -> calibrated probabilities, any batch size and width), its parameters and
tokenizer, and a manifest with the labels, thresholds, calibration, versions and checksums.
`serving.load(DIR)` runs it with jax, numpy and tokenizers alone; `python -m genre_jax.serve
--export DIR` serves it over HTTP. An earlier export at --out is replaced; the export is checked
against the run (token ids and probabilities on a few probe texts) before it is renamed into place.
"""

import pathlib

from absl import flags

from genre_jax import cli
from genre_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Workdir of a trained run or of an ensemble.')
flags.DEFINE_string('out', None, 'Directory to write the export to (replaced if an export).')
flags.DEFINE_list('platforms', ['cpu', 'cuda', 'tpu'],
                  'Platforms to lower the scoring functions for (jax.export).')
flags.mark_flags_as_required(['workdir', 'out'])


@errors.run_cli
def main(argv):
  cli.start(argv)
  from genre_jax import exporting, inference
  exporting.check_platforms(FLAGS.platforms)  # Mistakes in --out or --platforms before loading.
  exporting.check_out(pathlib.Path(FLAGS.out).absolute())
  run = inference.load_run(FLAGS.workdir)
  manifest = exporting.write(run, FLAGS.out, FLAGS.platforms)
  members = manifest['members']
  print(f'exported {manifest["kind"]} {manifest["source_workdir"]} to {FLAGS.out}: '
        f'{len(members)} scorer(s) ({", ".join(m["model"] for m in members)}) for '
        f'{", ".join(members[0]["platforms"])}, {len(manifest["labels"])} genres, calibration '
        f'{manifest["calibration"]["method"]}', flush=True)


if __name__ == '__main__':
  cli.run(main)
