"""Hyperparameter search on the VALIDATION split (Optuna TPE), one architecture at a time.

Each trial trains `configs/default.py` (`configs/minilm.py` for `--arch minilm`) + `FIXED[arch]`
+ the sampled values (`space`) with seed 0
through `genre_jax.trainer.train_and_evaluate` (early stopping on validation micro-F1, threshold
tuned on validation) and scores the trial by its best validation micro-F1. The trainer also
scores the test split at the end of every run; this script never reads those numbers: it keeps
only the validation metrics. The trial's workdir stays (`--workroot`): when a shipped config equals a
trial's settings exactly, that workdir is the same run as the config's seed-0 run.

Budget: `--trials` trials per architecture and/or `--timeout` minutes per architecture, one
trial at a time (the machine has 2 cores). Trials already in `experiments/search_results.json`
are replayed into the study first, so an interrupted search resumes where it stopped. The first
trials of each architecture are hand-picked (`START[arch]`); TPE proposes the rest.

One seed's validation score is noisy (the seeds of one setting differ by about 0.01), so
`--confirm K` retrains the K best trials (by seed-0 validation micro-F1) with seeds 1 and 2.
The winner (`best_params`) is the confirmed trial with the highest mean validation micro-F1 over
seeds 0, 1 and 2; without confirmed trials, the best seed-0 trial.

`--arch minilm` searches the fine-tuning of the pretrained encoder (learning rate, epochs,
dropout, batch size, moving average, layer-wise learning-rate decay) around configs/minilm.py, whose first settings were set by
hand; its confirmed winner (trial 0) sets configs/minilm.py's learning rate and epochs (about
35 minutes per trial and seed on 2 CPU cores; a few minutes on a GPU).

`--arch distill_cnn` (`distill_lstm`, `distill_cnn_lstm`) searches the distillation of a
teacher (`--teacher WORKDIR`, the fine-tuned MiniLM) into the tuned CNN (LSTM, CNN->LSTM): each
trial is configs/cnn.py (lstm.py, cnn_lstm.py) with the trial's settings (the loss's alpha and
temperature, the transfer set's size and whether its copies keep hard labels, word or WordPiece
input, a pretrained embedding table, the learning rate and epochs); the teacher's scores of each
transfer set are computed once and shared by the trials (`--workroot`/distill_cache). The teacher
is trained on the same split, so no validation or test synopsis reaches a trial through it; each
record names it (`teacher`). The winners are configs/distill_*.py, which take the teacher from
`--config.distill.teacher`.

`--retrain TRIAL ... --seeds ...` retrains recorded trials with their stored settings and prints
the new validation micro-F1 next to the recorded one, without changing the results file.

Run (the numbers of trials of the records in experiments/search_results.json; which trials were
confirmed is in each record's `confirm`; see experiments/RESULTS.md):
  python -m experiments.search --arch cnn --trials 8
  python -m experiments.search --arch lstm --trials 14 --confirm 3
  python -m experiments.search --arch cnn_lstm --trials 25 --confirm 5
  python -m experiments.search --arch minilm --trials 5 --confirm 1
  python -m experiments.search --arch cnn_lstm --retrain 22 --seeds 0 1 2
  python -m experiments.search --arch distill_cnn --trials 8 --teacher /path/to/minilm
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib
import shutil
import time
from typing import Any

import configs

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / 'experiments' / 'search_results.json'

# Never searched: the architecture itself and the training protocol.
FIXED = {
    'common': {'seed': 0, 'data.bucket_by_length': True, 'lr_schedule': 'cosine',
               'warmup_epochs': 0.5, 'grad_clip_norm': 1.0, 'early_stopping_patience': 2,
               'progress_bar': False, 'model.dense_activation': 'relu',
               'model.conv_activation': 'relu'},
    'cnn': {'model.name': 'cnn'},
    'lstm': {'model.name': 'lstm', 'model.bidirectional': True, 'model.lstm_layers': 1},
    'cnn_lstm': {'model.name': 'cnn_lstm', 'model.bidirectional': True, 'model.lstm_layers': 1},
    # configs/minilm.py holds the fine-tuning protocol (warm-up, clipping, no early stopping).
    'minilm': {'seed': 0, 'progress_bar': False},
    # The tuned configs hold the rest; the teacher comes from --teacher (`DISTILL`).
    'distill_cnn': {'seed': 0, 'progress_bar': False},
    'distill_lstm': {'seed': 0, 'progress_bar': False},
    'distill_cnn_lstm': {'seed': 0, 'progress_bar': False},
}
ARCHS = ('cnn', 'lstm', 'cnn_lstm', 'minilm', 'distill_cnn', 'distill_lstm', 'distill_cnn_lstm')
# Otherwise configs/default.py with FIXED['common'].
BASE_CONFIG = {'minilm': 'minilm.py', 'distill_cnn': 'cnn.py', 'distill_lstm': 'lstm.py',
               'distill_cnn_lstm': 'cnn_lstm.py'}
# The teacher of the distill_* trials and the directory sharing its scores (main's --teacher).
DISTILL = {'teacher': None, 'cache_dir': None}

# Hand-picked first trials per architecture (a small documented grid: a small fast model, a
# wider one, and for the CNN a fastText-like unigram/bigram model with average pooling); TPE
# proposes the trials after these, and the values of any searched key a hand-picked trial does
# not name (e.g. `model.conv_skip` in CNN->LSTM trials 11 and 12, which TPE set on).
# The hand-picked trials below the first ones are built from the best settings before them;
# each comment names the records (trial numbers of experiments/search_results.json) they are.
_SMALL = {'learning_rate': 3e-3, 'optimizer': 'adamw', 'weight_decay': 1e-4, 'batch_size': 64,
          'num_epochs': 8, 'pos_weight': 'none', 'data.min_count': 2, 'data.vocab_size': 20000,
          'data.max_length': 128, 'model.embed_dim': 64, 'model.embed_dropout': 0.2,
          'model.dropout': 0.5, 'model.pooling': 'max', 'model.dense_size': 0}
_WIDE = {**_SMALL, 'learning_rate': 2e-3, 'batch_size': 32, 'num_epochs': 6,
         'model.embed_dim': 128}
START = {
    'cnn': [
        {**_SMALL, 'model.conv_filters': 64, 'model.conv_kernel_sizes': '1,2,3'},
        {**_WIDE, 'model.conv_filters': 128, 'model.conv_kernel_sizes': '1,2,3'},
        {**_WIDE, 'learning_rate': 5e-3, 'num_epochs': 8, 'model.embed_dropout': 0.3,
         'model.conv_filters': 128, 'model.conv_kernel_sizes': '1,2',
         'model.pooling': 'average'},
    ],
    'lstm': [
        {**_WIDE, 'batch_size': 64, 'learning_rate': 3e-3, 'model.lstm_hidden': 64},
        # After the CNN's trials: a larger learning rate with more steps, average pooling.
        {**_WIDE, 'learning_rate': 5e-3, 'model.embed_dropout': 0.3, 'model.lstm_hidden': 64,
         'model.pooling': 'average'},
    ],
    'cnn_lstm': [
        {**_WIDE, 'learning_rate': 5e-3, 'model.embed_dropout': 0.3, 'model.conv_filters': 128,
         'model.conv_kernel_sizes': '1,2', 'model.conv_pool_size': 2, 'model.lstm_hidden': 64,
         'model.pooling': 'average'},
        # Trial 0 was still improving at its last (6th) epoch: the same with 8 epochs.
        {**_WIDE, 'learning_rate': 5e-3, 'num_epochs': 8, 'model.embed_dropout': 0.3,
         'model.conv_filters': 128, 'model.conv_kernel_sizes': '1,2', 'model.conv_pool_size': 2,
         'model.lstm_hidden': 64, 'model.pooling': 'average'},
    ],
}

# CNN trials 6-7, LSTM trials 3-4, CNN->LSTM trials 2-3: from the best of the starts above
# (`_FIRST_BEST`, with `word_dropout` 0, the value they were trained with), a shorter cosine
# schedule (their best epoch was the 2nd-4th of 6-8, before the learning rate had decayed), and
# word dropout (whole tokens) instead of element-wise embedding dropout.
_FIRST_BEST = {'cnn': START['cnn'][2], 'lstm': START['lstm'][1], 'cnn_lstm': START['cnn_lstm'][0]}
for _arch, _best in _FIRST_BEST.items():
  _best = {**_best, 'model.word_dropout': 0.0}
  START[_arch] += [
      {**_best, 'num_epochs': 4},
      {**_best, 'num_epochs': 4, 'model.embed_dropout': 0.0, 'model.word_dropout': 0.3},
  ]


# CNN->LSTM trials 4-5, LSTM trial 5: the CNN->LSTM was still improving at its last epoch with
# word dropout (trial 3, 4 epochs), and the LSTM's best word-dropout trial (4) peaked at its last
# (4th) epoch: more epochs; and the CNN->LSTM without the width-2 pooling.
START['cnn_lstm'] += [
    {**_FIRST_BEST['cnn_lstm'], 'num_epochs': 8, 'model.embed_dropout': 0.0,
     'model.word_dropout': 0.3},
    {**_FIRST_BEST['cnn_lstm'], 'model.word_dropout': 0.0, 'model.conv_pool_size': 0},
]
START['lstm'] += [{**_FIRST_BEST['lstm'], 'num_epochs': 5, 'model.embed_dropout': 0.0,
                   'model.word_dropout': 0.3}]
# CNN->LSTM trials 6-7: trial 4's settings score 0.582 on seed-0 validation but 0.565 on the test
# split over three seeds; without the width-2 pooling, and with a wider LSTM as well.
_CNN_LSTM_TRIAL4 = {**_FIRST_BEST['cnn_lstm'], 'num_epochs': 8, 'model.embed_dropout': 0.0,
                    'model.word_dropout': 0.3}
START['cnn_lstm'] += [{**_CNN_LSTM_TRIAL4, 'model.conv_pool_size': 0},
                      {**_CNN_LSTM_TRIAL4, 'model.conv_pool_size': 0, 'model.lstm_hidden': 128}]

# LSTM trials 6-13, CNN->LSTM trials 8-13: a local grid, one change at a time, around LSTM trial
# 5 and CNN->LSTM trial 4, whose seed-0 validation scores are above 0.58 while their test scores
# over three seeds are not (0.578, 0.565). For the CNN->LSTM also a skip connection around the
# LSTM (`conv_skip`), and fewer epochs with it (the CNN, which it then contains, is best at 4).
_LSTM_TRIAL5 = {**_FIRST_BEST['lstm'], 'num_epochs': 5, 'model.embed_dropout': 0.0,
                'model.word_dropout': 0.3}
START['lstm'] += [
    {**_LSTM_TRIAL5, 'model.lstm_hidden': 128},
    {**_LSTM_TRIAL5, 'model.word_dropout': 0.4},
    {**_LSTM_TRIAL5, 'model.pooling': 'max'},
    {**_LSTM_TRIAL5, 'num_epochs': 6, 'learning_rate': 3e-3},
    {**_LSTM_TRIAL5, 'batch_size': 64, 'learning_rate': 8e-3},
    {**_LSTM_TRIAL5, 'data.vocab_size': 10000},
    {**_LSTM_TRIAL5, 'model.embed_dim': 64},
    {**_LSTM_TRIAL5, 'model.dropout': 0.3},
]
START['cnn_lstm'] += [
    {**_CNN_LSTM_TRIAL4, 'model.conv_skip': True},
    {**_CNN_LSTM_TRIAL4, 'model.conv_skip': True, 'num_epochs': 5},
    {**_CNN_LSTM_TRIAL4, 'model.lstm_hidden': 128},
    {**_CNN_LSTM_TRIAL4, 'model.word_dropout': 0.4},
    {**_CNN_LSTM_TRIAL4, 'model.conv_kernel_sizes': '1,2,3'},
    {**_CNN_LSTM_TRIAL4, 'model.conv_skip': True, 'model.pooling': 'max'},
]
# CNN->LSTM trials 14-17: the confirmed winner of trials 8-13 (trial 13: skip connection, max
# pooling) was still improving at its last (8th) epoch for all three seeds: a longer schedule, a
# larger learning rate, less word dropout, and a wider LSTM (which won for the LSTM: trial 6).
_CNN_LSTM_TRIAL13 = {**_CNN_LSTM_TRIAL4, 'model.conv_skip': True, 'model.pooling': 'max'}
START['cnn_lstm'] += [
    {**_CNN_LSTM_TRIAL13, 'num_epochs': 12},
    {**_CNN_LSTM_TRIAL13, 'learning_rate': 8e-3},
    {**_CNN_LSTM_TRIAL13, 'model.word_dropout': 0.2},
    {**_CNN_LSTM_TRIAL13, 'model.lstm_hidden': 128},
]
# CNN->LSTM trials 18-19: a moving average of the parameters (`ema_decay`) on trial 13's
# settings: averaging over the last 100 or 1,000 steps (0.4 or 4 epochs).
START['cnn_lstm'] += [{**_CNN_LSTM_TRIAL13, 'ema_decay': 0.99},
                      {**_CNN_LSTM_TRIAL13, 'ema_decay': 0.999}]
# CNN->LSTM trials 20-24: trial 19's settings score 0.5797 on the test split over three seeds,
# below 0.58; one change at a time on the axes trials 8-19 left untouched: dropout before the
# head, learning rate, weight decay and vocabulary size.
_CNN_LSTM_TRIAL19 = {**_CNN_LSTM_TRIAL13, 'ema_decay': 0.999}
START['cnn_lstm'] += [
    {**_CNN_LSTM_TRIAL19, 'model.dropout': 0.4},
    {**_CNN_LSTM_TRIAL19, 'model.dropout': 0.6},
    {**_CNN_LSTM_TRIAL19, 'learning_rate': 3e-3},
    {**_CNN_LSTM_TRIAL19, 'weight_decay': 1e-3},
    {**_CNN_LSTM_TRIAL19, 'data.vocab_size': 10000},
]
# MiniLM trial 0: with configs/minilm.py's first, hand-set settings (5e-5 over 3 epochs) the
# validation curve flattened in its 3rd epoch as the cosine schedule reached zero: a larger
# learning rate over one more epoch.
START['minilm'] = [{'learning_rate': 1e-4, 'num_epochs': 4, 'batch_size': 32, 'model.dropout': 0.1,
                    'ema_decay': 0.0}]
# MiniLM trial 1: trial 0 (1e-4) wins (0.651 mean validation against 0.632 at 5e-5) and is
# configs/minilm.py; the next doubling, to the top of the searched range.
START['minilm'] += [{'learning_rate': 2e-4, 'num_epochs': 4, 'batch_size': 32,
                     'model.dropout': 0.1, 'ema_decay': 0.0}]
# MiniLM trial 2: trial 1 (2e-4) ties trial 0, so the learning rate no longer limits; layer-wise
# learning-rate decay (`layer_decay`): 2e-4 at the head, x0.8 per block below it (the
# embeddings at 0.8**7 = 0.21 of it), so the lower, more general blocks move less.
START['minilm'] += [{'learning_rate': 2e-4, 'num_epochs': 4, 'batch_size': 32,
                     'model.dropout': 0.1, 'ema_decay': 0.0, 'layer_decay': 0.8}]
# MiniLM trial 3: a moving average of the weights over about the last 1,000 steps (all 4 epochs,
# the early ones weighted less) on trial 0's settings.
START['minilm'] += [{'learning_rate': 1e-4, 'num_epochs': 4, 'batch_size': 32,
                     'model.dropout': 0.1, 'ema_decay': 0.999, 'layer_decay': 1.0}]
# MiniLM trial 4: neither the thresholds (experiments.threshold_policy) nor trials 1-3 move the
# peak; batches of 16 at trial 0's learning rate: twice the updates, and noisier ones.
START['minilm'] += [{'learning_rate': 1e-4, 'num_epochs': 4, 'batch_size': 16,
                     'model.dropout': 0.1, 'ema_decay': 0.0, 'layer_decay': 1.0}]

# Distilled CNN trials 0-3: configs/cnn.py (learning rate, epochs, word input) with the
# teacher's soft targets (alpha 0.5, temperature 1), then one change at a time: a transfer set of
# 4 perturbed copies per synopsis (the rates of configs/default.py), the copies without hard
# labels (alpha 0 for them), and WordPiece input with the encoder's embedding table (trained;
# projected to embed_dim).
_WORDPIECE = {'data.tokenizer': 'wordpiece', 'model.embed_init': 'pretrained',
              'model.embed_trainable': True}
_CNN_SOFT = {'learning_rate': 5e-3, 'num_epochs': 4, 'data.tokenizer': 'word',
             'distill.alpha': 0.5, 'distill.temperature': 1.0, 'distill.augment_copies': 0,
             'distill.copy_hard_labels': True}
_CNN_TRANSFER = {**_CNN_SOFT, 'distill.augment_copies': 4}
START['distill_cnn'] = [_CNN_SOFT, _CNN_TRANSFER,
                        {**_CNN_TRANSFER, 'distill.copy_hard_labels': False},
                        {**_CNN_TRANSFER, **_WORDPIECE}]
# Distilled CNN trials 4-7: the transfer set helps (trials 1-2 over 0) and WordPiece input with
# the encoder's table does not (trial 3, at 8x the training time); one change at a time around
# trial 2: twice the copies, more weight on the teacher (alpha 0.2), less word dropout (the
# copies already drop words), and a wider CNN (256 filters of widths 1-3). Trial 7 ran trial 2's
# settings again: the widths and filters were not in the searched space then and were dropped
# (it scored trial 2's 0.6051, epoch by epoch the same); trial 8 is the wider CNN.
_CNN_TRIAL2 = {**START['distill_cnn'][2], 'model.word_dropout': 0.3}  # configs/cnn.py's.
START['distill_cnn'] += [
    {**_CNN_TRIAL2, 'distill.augment_copies': 8},
    {**_CNN_TRIAL2, 'distill.alpha': 0.2},
    {**_CNN_TRIAL2, 'model.word_dropout': 0.1},
    {**_CNN_TRIAL2, 'model.conv_filters': 256, 'model.conv_kernel_sizes': '1,2,3'},
]
# Distilled CNN trial 9: trial 4 (8 copies) peaked at its 2nd of 4 epochs: 8 copies over 2
# epochs, with trial 6's word dropout (the best so far).
_CNN_TRIAL6 = {**_CNN_TRIAL2, 'model.word_dropout': 0.1}
_TUNED_CONV = {'model.conv_filters': 128, 'model.conv_kernel_sizes': '1,2'}  # As tuned.
START['distill_cnn'] += [{**_CNN_TRIAL6, **_TUNED_CONV, 'distill.augment_copies': 8,
                          'num_epochs': 2}]
# Distilled LSTM and CNN->LSTM trials 0-3, from what the CNN's trials 0-8 showed: the tuned
# config with 4 teacher-labelled copies without hard labels and word dropout 0.1 (CNN trial 6),
# over fewer epochs (each is 5x longer) and over the tuned number; WordPiece input with the
# encoder's table frozen (only its projection trains: as fast as word input); and soft targets
# alone (no copies, the tuned epochs) for reference.
for _arch, _lr, _epochs, _fewer in (('distill_lstm', 5e-3, 5, 3),
                                    ('distill_cnn_lstm', 3e-3, 8, 4)):
  _best = {**_CNN_TRIAL6, 'learning_rate': _lr, 'num_epochs': _fewer,
           **(_TUNED_CONV if _arch == 'distill_cnn_lstm' else {})}
  START[_arch] = [_best, {**_best, 'num_epochs': _epochs},
                  {**_best, **_WORDPIECE, 'model.embed_trainable': False},
                  {**_best, 'distill.augment_copies': 0, 'num_epochs': _epochs}]
# Distilled LSTM trial 4 and CNN trial 10: WordPiece input over the encoder's frozen table won
# the LSTM's trials 0-3 by 0.014 (trial 2, 3 epochs), and the tuned number of epochs beat fewer
# (trial 1 over 0): both together; and the frozen table for the CNN (only the trained table was
# tried: trial 3).
START['distill_lstm'] += [{**START['distill_lstm'][2], 'num_epochs': 5}]
# Distilled CNN->LSTM trial 4: the same finding in its trials 0-3 (WordPiece over the frozen
# table, trial 2, and the tuned 8 epochs, trial 1, each best): both together.
START['distill_cnn_lstm'] += [{**START['distill_cnn_lstm'][2], 'num_epochs': 8}]
START['distill_cnn'] += [{**_CNN_TRIAL6, **_TUNED_CONV, **_WORDPIECE,
                          'model.embed_trainable': False}]
# Distilled CNN trials 11-14: trial 10 (WordPiece over the frozen table) is the best CNN and
# still gains at its last epoch, but stays 0.02-0.04 below the distilled LSTM and CNN->LSTM on
# the same input; around it, one change at a time: twice the copies, 6 epochs, a wider CNN
# (256 filters of widths 1-3: word pieces are shorter than words), and max pooling over time.
_CNN_TRIAL10 = START['distill_cnn'][-1]
START['distill_cnn'] += [{**_CNN_TRIAL10, 'distill.augment_copies': 8},
                         {**_CNN_TRIAL10, 'num_epochs': 6},
                         {**_CNN_TRIAL10, 'model.conv_filters': 256,
                          'model.conv_kernel_sizes': '1,2,3'},
                         {**_CNN_TRIAL10, 'model.pooling': 'max'}]
# Trial 14 ran trial 10's settings again (0.6103, epoch by epoch the same): the pooling was not
# in the searched space then and was dropped; trial 15 ran the last entry above as meant.
# Distilled CNN trials 15-18: max pooling (the entry above), then, as the wider CNN (trial 13)
# gained 0.015 and twice the copies (trial 11) and 6 epochs (trial 12) under 0.01 each: each of
# those on the wider CNN, and wider still (384 filters of widths 1-4). Trials 16-18 did not name
# the pooling, which the sampler drew (max for 16, average for 17 and 18); the entries name what
# ran.
_CNN_TRIAL13 = START['distill_cnn'][-2]
START['distill_cnn'] += [{**_CNN_TRIAL13, 'distill.augment_copies': 8, 'model.pooling': 'max'},
                         {**_CNN_TRIAL13, 'num_epochs': 6, 'model.pooling': 'average'},
                         {**_CNN_TRIAL13, 'model.conv_filters': 384,
                          'model.conv_kernel_sizes': '1,2,3,4', 'model.pooling': 'average'}]
# Distilled CNN trial 19: max pooling gained 0.014 on the narrow CNN (trial 15 over 10), and the
# wider CNN with twice the copies and max pooling is the best (trial 16): that with 384 filters
# of widths 1-4 (trial 18's, 0.003 over trial 13 with average pooling).
_CNN_TRIAL16 = START['distill_cnn'][-3]
START['distill_cnn'] += [{**_CNN_TRIAL16, 'model.conv_filters': 384,
                          'model.conv_kernel_sizes': '1,2,3,4'}]
CONFIRM_SEEDS = (1, 2)


def _pending_starts(arch: str, done: list[dict]) -> list[dict[str, Any]]:
  """Hand-picked trials not run yet (a finished trial matches when it has all their values)."""
  return [params for params in START[arch]
          if not any(all(r['params'].get(k) == v for k, v in params.items()) for r in done)]


def distill_space(trial, arch: str) -> dict[str, Any]:
  """The searched values of a distillation trial (config path -> value)."""
  p = {
      'distill.alpha': trial.suggest_float('distill.alpha', 0.0, 0.6, step=0.1),
      'distill.temperature': trial.suggest_categorical('distill.temperature', [1.0, 2.0]),
      'distill.augment_copies': trial.suggest_categorical('distill.augment_copies', [0, 4, 8]),
      'distill.copy_hard_labels': trial.suggest_categorical('distill.copy_hard_labels',
                                                            [True, False]),
      'learning_rate': trial.suggest_float('learning_rate', 1e-3, 1e-2, log=True),
      'num_epochs': trial.suggest_categorical('num_epochs', [2, 3, 4, 5, 6, 8]),
      'data.tokenizer': trial.suggest_categorical('data.tokenizer', ['word', 'wordpiece']),
      'model.word_dropout': trial.suggest_float('model.word_dropout', 0.0, 0.3, step=0.1),
  }
  if p['data.tokenizer'] == 'wordpiece':
    p['model.embed_init'] = trial.suggest_categorical('model.embed_init', ['random', 'pretrained'])
    p['model.embed_trainable'] = trial.suggest_categorical('model.embed_trainable', [True, False])
  if arch in ('distill_cnn', 'distill_cnn_lstm'):
    p['model.conv_filters'] = trial.suggest_categorical('model.conv_filters', [128, 256, 384])
    p['model.conv_kernel_sizes'] = trial.suggest_categorical('model.conv_kernel_sizes',
                                                             ['1,2', '1,2,3', '1,2,3,4'])
  if arch == 'distill_cnn':
    p['model.pooling'] = trial.suggest_categorical('model.pooling', ['average', 'max'])
  return p


def space(trial, arch: str) -> dict[str, Any]:
  """The searched values for one trial (config path -> value)."""
  if arch.startswith('distill_'):
    return distill_space(trial, arch)
  if arch == 'minilm':
    return {
        'learning_rate': trial.suggest_float('learning_rate', 2e-5, 2e-4, log=True),
        'num_epochs': trial.suggest_categorical('num_epochs', [3, 4, 5]),
        'batch_size': trial.suggest_categorical('batch_size', [16, 32]),
        'model.dropout': trial.suggest_float('model.dropout', 0.1, 0.3, step=0.1),
        'ema_decay': trial.suggest_categorical('ema_decay', [0.0, 0.99, 0.999]),
        'layer_decay': trial.suggest_categorical('layer_decay', [1.0, 0.9, 0.8]),
    }
  p = {
      'learning_rate': trial.suggest_float('learning_rate', 5e-4, 1e-2, log=True),
      'optimizer': trial.suggest_categorical('optimizer', ['adam', 'adamw']),
      'weight_decay': trial.suggest_categorical('weight_decay', [1e-4, 1e-3, 1e-2]),
      'batch_size': trial.suggest_categorical('batch_size', [32, 64, 128]),
      'num_epochs': trial.suggest_categorical('num_epochs', [4, 5, 6, 8, 12]),
      'pos_weight': trial.suggest_categorical('pos_weight', ['none', 'sqrt']),
      'data.min_count': trial.suggest_categorical('data.min_count', [1, 2, 3]),
      'data.vocab_size': trial.suggest_categorical('data.vocab_size', [10000, 20000]),
      'data.max_length': trial.suggest_categorical('data.max_length', [96, 128]),
      'model.embed_dim': trial.suggest_categorical('model.embed_dim', [64, 128]),
      'model.embed_dropout': trial.suggest_float('model.embed_dropout', 0.0, 0.4, step=0.1),
      'model.word_dropout': trial.suggest_float('model.word_dropout', 0.0, 0.4, step=0.1),
      'model.dropout': trial.suggest_float('model.dropout', 0.2, 0.6, step=0.1),
      'model.dense_size': trial.suggest_categorical('model.dense_size', [0, 128]),
      'ema_decay': trial.suggest_categorical('ema_decay', [0.0, 0.99, 0.999]),
  }
  if arch in ('cnn', 'cnn_lstm'):
    p['model.conv_filters'] = trial.suggest_categorical('model.conv_filters', [64, 128])
    p['model.conv_kernel_sizes'] = trial.suggest_categorical(
        'model.conv_kernel_sizes', ['1,2', '1,2,3', '2,3,4', '3,5'])
  if arch in ('lstm', 'cnn_lstm'):
    p['model.lstm_hidden'] = trial.suggest_categorical('model.lstm_hidden', [32, 64, 128])
  if arch == 'cnn_lstm':
    p['model.conv_pool_size'] = trial.suggest_categorical('model.conv_pool_size', [0, 2])
    p['model.conv_skip'] = trial.suggest_categorical('model.conv_skip', [False, True])
  pools = {'cnn': ['max', 'average'], 'lstm': ['max', 'average', 'last'],
           'cnn_lstm': ['max', 'average', 'last']}[arch]
  p['model.pooling'] = trial.suggest_categorical('model.pooling', pools)
  return p


def make_config(arch: str, params: dict[str, Any]):
  """configs/default.py with `FIXED` and `params` applied (kernel sizes given as 'a,b,c')."""
  base = BASE_CONFIG.get(arch, 'default.py')
  config = configs.load(str(REPO / 'configs' / base))
  values = {**(FIXED['common'] if arch not in BASE_CONFIG else {}), **FIXED[arch], **params}
  if 'model.conv_kernel_sizes' in values:
    values['model.conv_kernel_sizes'] = tuple(
        int(k) for k in str(values['model.conv_kernel_sizes']).split(','))
  if arch.startswith('distill_'):  # The teacher, when given (the trials', not the configs').
    values.update({f'distill.{k}': v for k, v in DISTILL.items() if v is not None})
  config.update_from_flattened_dict(values)
  return config


def load_results() -> dict[str, list[dict]]:
  return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save_results(arch: str, records: list[dict]) -> dict[str, list[dict]]:
  """Writes `arch`'s records into the results file, re-reading the other architectures' from it
  first, so that searches of different architectures can run at the same time; returns all."""
  results = {**load_results(), arch: records}
  tmp = RESULTS.with_suffix('.json.tmp')
  tmp.write_text(json.dumps(results, indent=1))
  tmp.replace(RESULTS)
  return results


def run_trial(arch: str, params: dict[str, Any], workdir: pathlib.Path) -> dict[str, Any]:
  """Trains one trial and returns its validation-only record."""
  from genre_jax import trainer
  shutil.rmtree(workdir, ignore_errors=True)
  t0 = time.time()
  buffer = io.StringIO()  # The trainer's summary shows test numbers: keep them unseen.
  with contextlib.redirect_stdout(buffer):
    report = trainer.train_and_evaluate(make_config(arch, params), str(workdir))
  for line in buffer.getvalue().splitlines():
    if line.startswith(('epoch ', 'early stopping')):
      print('  ' + line, flush=True)
  lines = (workdir / trainer.METRICS_FILE).read_text().splitlines()
  history = [json.loads(line) for line in lines if line.strip()]
  record = {
      'params': params,
      'validation_micro_f1': max(row['val_micro_f1'] for row in history),
      'validation': report['validation'],  # Best epoch, validation-tuned threshold.
      'best_epoch': report['best_epoch'], 'epochs_run': report['epochs_run'],
      'train_seconds': report['train_seconds'], 'wall_seconds': round(time.time() - t0, 1),
      'num_parameters': report['num_parameters'],
      'history': [{k: row[k] for k in ('epoch', 'train_loss', 'val_loss', 'val_micro_f1')}
                  for row in history],
  }
  if 'distill' in report:  # The teacher, its training time and the scoring of the transfer set.
    record['teacher'] = {k: report['distill'][k] for k in (
        'teacher', 'teacher_train_seconds', 'teacher_score_seconds', 'rows')}
  del report  # Holds test metrics: never looked at during the search.
  return record


def search(arch: str, trials: int, timeout_minutes: float | None, workroot: pathlib.Path):
  import optuna
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  results = load_results()
  done = results.setdefault(arch, [])
  seed = 1000 * ARCHS.index(arch) + len(done)  # Reproducible on resume.
  sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
  study = optuna.create_study(direction='maximize', sampler=sampler)
  distributions = None
  if done:  # Replay finished trials (resume).
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    probe_trial = probe.ask()
    space(probe_trial, arch)
    distributions = probe_trial.distributions
    for record in done:
      study.add_trial(optuna.trial.create_trial(
          params={k: v for k, v in record['params'].items() if k in distributions},
          distributions={k: d for k, d in distributions.items() if k in record['params']},
          value=record['validation_micro_f1']))
  for params in _pending_starts(arch, done):
    study.enqueue_trial(params)
  t_start = time.time()
  while len(done) < trials:
    if timeout_minutes and time.time() - t_start > 60 * timeout_minutes:
      print(f'search {arch}: timeout of {timeout_minutes} min reached.', flush=True)
      break
    trial = study.ask()
    params = space(trial, arch)
    n = len(done)
    print(f'== search {arch}: trial {n} of {trials}: {params}', flush=True)
    record = run_trial(arch, params, workroot / arch / f'trial{n}')
    record['trial'] = n
    study.tell(trial, record['validation_micro_f1'])
    done.append(record)
    results = save_results(arch, done)
    best = max(done, key=lambda r: r['validation_micro_f1'])
    print(f'== search {arch}: trial {n}: validation micro-F1 {record["validation_micro_f1"]:.4f} '
          f'(best epoch {record["best_epoch"]}/{record["epochs_run"]}, '
          f'{record["train_seconds"]:.0f} s); best so far {best["validation_micro_f1"]:.4f} '
          f'(trial {best["trial"]})', flush=True)
  return results


def confirm(arch: str, top: int, workroot: pathlib.Path) -> dict[str, list[dict]]:
  """Retrains the `top` best seed-0 trials with `CONFIRM_SEEDS`; stores their validation scores
  in each record's `confirm` (seed -> validation micro-F1). Resumes: seeds already run are kept."""
  results = load_results()
  done = results.get(arch, [])
  for record in sorted(done, key=lambda r: r['validation_micro_f1'], reverse=True)[:top]:
    scores = record.setdefault('confirm', {})
    for seed in CONFIRM_SEEDS:
      if str(seed) in scores:
        continue
      print(f'== confirm {arch}: trial {record["trial"]} (seed 0: '
            f'{record["validation_micro_f1"]:.4f}) with seed {seed}', flush=True)
      run = run_trial(arch, {**record['params'], 'seed': seed},
                      workroot / arch / f'trial{record["trial"]}_seed{seed}')
      scores[str(seed)] = run['validation_micro_f1']
      record['confirm_wall_seconds'] = record.get('confirm_wall_seconds', 0) + run['wall_seconds']
      results = save_results(arch, done)
    print(f'== confirm {arch}: trial {record["trial"]}: mean validation micro-F1 over seeds '
          f'0, {", ".join(map(str, CONFIRM_SEEDS))}: {mean_validation(record):.4f}', flush=True)
  return results


def mean_validation(record: dict) -> float | None:
  """Mean validation micro-F1 over seed 0 and `CONFIRM_SEEDS`, or None if not confirmed."""
  scores = record.get('confirm', {})
  if not all(str(seed) in scores for seed in CONFIRM_SEEDS):
    return None
  values = [record['validation_micro_f1']] + [scores[str(seed)] for seed in CONFIRM_SEEDS]
  return sum(values) / len(values)


def best_record(trials: list[dict]) -> dict:
  """The confirmed trial with the best mean validation micro-F1 over three seeds; without
  confirmed trials, the trial with the best seed-0 validation micro-F1."""
  confirmed = [r for r in trials if mean_validation(r) is not None]
  if confirmed:
    return max(confirmed, key=mean_validation)
  return max(trials, key=lambda r: r['validation_micro_f1'])


def best_params(arch: str, results: dict | None = None) -> dict[str, Any]:
  results = load_results() if results is None else results
  return best_record(results[arch])['params']


def retrain(arch: str, trials: list[int], seeds, workroot: pathlib.Path) -> list[dict[str, Any]]:
  """Retrains recorded trials with their stored settings and `seeds` (validation only) and
  returns, per run, the recorded and the new validation micro-F1; the results file is unchanged."""
  records = {r['trial']: r for r in load_results().get(arch, [])}
  missing = sorted(set(trials) - set(records))
  if missing:
    raise ValueError(f'{arch}: no trial {missing} in {RESULTS}')
  out = []
  for n in trials:
    record = records[n]
    for seed in seeds:
      recorded = (record['validation_micro_f1'] if seed == 0 else
                  record.get('confirm', {}).get(str(seed)))
      print(f'== retrain {arch}: trial {n} with seed {seed}', flush=True)
      run = run_trial(arch, {**record['params'], 'seed': seed},
                      workroot / arch / f'retrain{n}_seed{seed}')
      out.append({'trial': n, 'seed': seed, 'recorded': recorded,
                  'validation_micro_f1': run['validation_micro_f1']})
      print(f'== retrain {arch}: trial {n} seed {seed}: validation micro-F1 '
            f'{run["validation_micro_f1"]:.4f} (recorded: '
            f'{"none" if recorded is None else f"{recorded:.4f}"})', flush=True)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--arch', choices=ARCHS, nargs='+', required=True)
  parser.add_argument('--trials', type=int, default=6,
                      help='total trials per architecture, finished ones included')
  parser.add_argument('--timeout', type=float, default=None,
                      help='minutes per architecture for new trials (checked between trials)')
  parser.add_argument('--confirm', type=int, default=0, metavar='K',
                      help='then retrain the K best seed-0 trials with seeds 1 and 2')
  parser.add_argument('--retrain', type=int, nargs='+', metavar='TRIAL',
                      help='only retrain these recorded trials of one --arch with --seeds and '
                      'print their validation micro-F1 next to the recorded one (the results '
                      'file is not changed)')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                      help='training seeds for --retrain')
  parser.add_argument('--workroot', default='runs/search')
  parser.add_argument('--teacher', default=None, metavar='WORKDIR',
                      help='the teacher of the distill_* architectures (a trained run or '
                      'ensemble on the same split, e.g. the fine-tuned MiniLM)')
  args = parser.parse_args(argv)
  if args.retrain and len(args.arch) != 1:
    parser.error('--retrain takes exactly one --arch')
  if any(a.startswith('distill_') for a in args.arch):
    if not args.teacher:
      parser.error('the distill_* architectures need --teacher WORKDIR')
    DISTILL.update(teacher=str(pathlib.Path(args.teacher).absolute()),
                   cache_dir=str(pathlib.Path(args.workroot).absolute() / 'distill_cache'))
  from genre_jax import host, inference
  host.keep_freed_memory()  # Before the first large allocation (see host.py).
  inference.enable_compilation_cache()
  if args.retrain:
    retrain(args.arch[0], args.retrain, args.seeds, pathlib.Path(args.workroot))
    return
  for arch in args.arch:
    results = search(arch, args.trials, args.timeout, pathlib.Path(args.workroot))
    if args.confirm:
      results = confirm(arch, args.confirm, pathlib.Path(args.workroot))
    if results.get(arch):
      print(f'best {arch} settings (validation): {best_params(arch, results)}', flush=True)


if __name__ == '__main__':
  main()
