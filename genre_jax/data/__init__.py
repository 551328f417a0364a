"""genre_jax data layer: registered data sets, parsing, splits, tokenisation and batching.

CLI: `python -m genre_jax.data --list`, `python -m genre_jax.data --dataset tmdb_10k`.
"""

from genre_jax.data.batching import batches
from genre_jax.data.batching import bucket_widths
from genre_jax.data.download import fetch
from genre_jax.data.parsers import load_records
from genre_jax.data.pipeline import load
from genre_jax.data.pipeline import prepare
from genre_jax.data.pipeline import PreparedData
from genre_jax.data.pipeline import SplitArrays
from genre_jax.data.pipeline import summary
from genre_jax.data.registry import DatasetSpec
from genre_jax.data.registry import FORMATS
from genre_jax.data.registry import get_spec
from genre_jax.data.registry import REGISTRY
from genre_jax.data.splits import split_from_ids
from genre_jax.data.splits import split_indices
from genre_jax.data.splits import split_to_ids
from genre_jax.data.splits import SPLITS
from genre_jax.data.text import LabelEncoder
from genre_jax.data.text import register_tokenizer
from genre_jax.data.text import tokenizer_from_dict
from genre_jax.data.text import WordTokenizer
