"""genre_jax data layer: registered data sets, parsing, splits, tokenisation and batching.

CLI: `python -m genre_jax.data --list`, `python -m genre_jax.data --dataset tmdb_10k`.
"""

import importlib

# Public name -> submodule. Imported on first use, so that light users (predict) stay fast.
_EXPORTS = {
    'batches': 'batching',
    'bucket_widths': 'batching',
    'fetch': 'download',
    'load_records': 'parsers',
    'load': 'pipeline',
    'prepare': 'pipeline',
    'PreparedData': 'pipeline',
    'SplitArrays': 'batching',
    'summary': 'pipeline',
    'DatasetSpec': 'registry',
    'FORMATS': 'registry',
    'get_spec': 'registry',
    'REGISTRY': 'registry',
    'split_from_ids': 'splits',
    'split_indices': 'splits',
    'split_to_ids': 'splits',
    'SPLITS': 'splits',
    'LabelEncoder': 'text',
    'register_tokenizer': 'text',
    'tokenizer_from_dict': 'text',
    'WordTokenizer': 'text',
}


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f'genre_jax.data.{_EXPORTS[name]}'), name)
  raise AttributeError(f'module genre_jax.data has no attribute {name!r}')


def __dir__():
  return sorted(_EXPORTS)
