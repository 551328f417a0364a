"""Experiments: baselines, hyperparameter search, the reproduction of the results table.

  python -m experiments.reproduce          # every row x seeds 0, 1, 2, then RESULTS.md
  python -m experiments.search --arch cnn  # the search (validation split only), separately
  python -m experiments.report             # RESULTS.md and figures from finished runs only
"""
