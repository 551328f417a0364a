"""The genre_jax architectures written in PyTorch (CPU or CUDA), for the benchmarks only.

Same shapes, masking, loss and optimizer as genre_jax (`genre_jax.models`, `genre_jax.losses`,
`genre_jax.optim.make_optimizer`), written the usual PyTorch way: `nn.Embedding`, `nn.Conv1d`
('same' padding, inputs zeroed at padded positions), `nn.LSTM` over packed sequences, masked
pooling, `BCEWithLogitsLoss` averaged over the real rows, `torch.optim` with a `LambdaLR`
schedule and `clip_grad_norm_`. The benchmarks run it eager and with `torch.compile(model)`
(`benchmarks/workers.py`). PyTorch is an optional benchmark dependency (`pip install
'.[bench]'`), never imported by genre_jax itself.
"""

import math

import torch
from torch import nn
from torch.nn.utils import rnn as rnn_utils

ACTIVATIONS = {'relu': torch.relu, 'tanh': torch.tanh, 'sigmoid': torch.sigmoid,
               'gelu': nn.functional.gelu, 'elu': nn.functional.elu,
               'swish': nn.functional.silu, 'linear': lambda x: x}


def pool_over_time(x, lengths, kind):
  """x [B, L, F], lengths [B] int64 -> [B, F], ignoring padded positions."""
  mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[..., None]
  if kind == 'max':
    return x.masked_fill(~mask, float('-inf')).amax(1)
  if kind == 'average':
    return x.masked_fill(~mask, 0.0).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)
  if kind == 'last':
    idx = (lengths - 1).clamp(min=0)[:, None, None].expand(-1, 1, x.shape[2])
    return x.gather(1, idx)[:, 0]
  raise ValueError(kind)


class Conv(nn.Module):
  """Parallel Conv1d of several widths ('same' padding), inputs zeroed at padded positions."""

  def __init__(self, in_features, filters, kernel_sizes, activation):
    super().__init__()
    self.convs = nn.ModuleList(
        nn.Conv1d(in_features, filters, k, padding='same') for k in kernel_sizes)
    self.activation = ACTIVATIONS[activation]
    self.out_features = filters * len(kernel_sizes)

  def forward(self, x, lengths):
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[..., None]
    x = x.masked_fill(~mask, 0.0).transpose(1, 2)  # [B, E, L]
    y = torch.cat([self.activation(conv(x)) for conv in self.convs], 1)
    return y.transpose(1, 2)  # [B, L, F]


class Head(nn.Module):

  def __init__(self, in_features, num_labels, dense_size, activation, dropout):
    super().__init__()
    self.dense = nn.Linear(in_features, dense_size) if dense_size > 0 else None
    self.activation = ACTIVATIONS[activation]
    self.dropout = nn.Dropout(dropout)
    self.logits = nn.Linear(dense_size if dense_size > 0 else in_features, num_labels)

  def forward(self, x):
    if self.dense is not None:
      x = self.activation(self.dense(x))
    return self.logits(self.dropout(x))


class Classifier(nn.Module):
  """lstm | cnn | cnn_lstm, as configured by a genre_jax `config.model` section."""

  def __init__(self, cfg, vocab_size, num_labels):
    super().__init__()
    self.name, self.pooling = cfg.name, cfg.pooling
    self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
    rate = cfg.get('word_dropout', 0.0)
    # Whole tokens: Dropout1d zeroes whole "channels" of [B, C, W], here the L tokens of [B, L, E].
    self.word_dropout = nn.Dropout1d(rate) if rate else None
    self.embed_dropout = nn.Dropout(cfg.embed_dropout)
    features = cfg.embed_dim
    self.conv = None
    if cfg.name in ('cnn', 'cnn_lstm'):
      self.conv = Conv(features, cfg.conv_filters, tuple(cfg.conv_kernel_sizes),
                       cfg.conv_activation)
      features = self.conv.out_features
    self.pool_size = int(cfg.conv_pool_size) if cfg.name == 'cnn_lstm' else 0
    self.lstm = None
    # cnn_lstm with conv_skip: the pooled conv features are concatenated with the LSTM summary.
    self.conv_skip = cfg.name == 'cnn_lstm' and bool(cfg.get('conv_skip', False))
    if cfg.name in ('lstm', 'cnn_lstm'):
      self.lstm = nn.LSTM(features, cfg.lstm_hidden, num_layers=cfg.lstm_layers,
                          bidirectional=cfg.bidirectional, batch_first=True)
      features = (cfg.lstm_hidden * (2 if cfg.bidirectional else 1)
                  + (features if self.conv_skip else 0))
    self.head = Head(features, num_labels, cfg.dense_size, cfg.dense_activation, cfg.dropout)

  def forward(self, tokens, lengths):
    x = self.embed(tokens)
    if self.word_dropout is not None:
      x = self.word_dropout(x)
    x = self.embed_dropout(x)
    if self.conv is not None:
      x = self.conv(x, lengths)
      if self.pool_size > 1:  # Length-aware average pooling (partial last window).
        b, n, f = x.shape
        w = self.pool_size
        out = -(-n // w)
        mask = (torch.arange(n, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[..., None]
        x = nn.functional.pad(x * mask, (0, 0, 0, out * w - n))
        mask = nn.functional.pad(mask, (0, 0, 0, out * w - n))
        x = x.view(b, out, w, f).sum(2) / mask.view(b, out, w, 1).sum(2).clamp(min=1.0)
        lengths = (lengths + w - 1) // w
    if self.lstm is not None:
      packed = rnn_utils.pack_padded_sequence(x, lengths.cpu(), batch_first=True,  # CPU lengths.
                                              enforce_sorted=False)
      outputs, (h_n, _) = self.lstm(packed)
      if self.pooling == 'last':  # Final state of the last layer, both directions.
        d = 2 if self.lstm.bidirectional else 1
        summary = torch.cat(list(h_n[-d:]), -1)
      else:
        out, _ = rnn_utils.pad_packed_sequence(outputs, batch_first=True,
                                               total_length=x.shape[1])
        summary = pool_over_time(out, lengths, self.pooling)
      if self.conv_skip:
        skip = pool_over_time(x, lengths, 'max' if self.pooling == 'last' else self.pooling)
        summary = torch.cat([summary, skip], -1)
    else:
      summary = pool_over_time(x, lengths, self.pooling)
    return self.head(summary)


def make_optimizer(config, model, steps_per_epoch):
  """torch.optim equivalent of `genre_jax.optim.make_optimizer` (optax defaults)."""
  lr = config.learning_rate
  params = list(model.parameters())
  if config.optimizer == 'adamw':
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, eps=1e-8)
  elif config.optimizer == 'adam':
    opt = torch.optim.Adam(params, lr=lr, eps=1e-8)
  elif config.optimizer == 'rmsprop':  # optax.rmsprop: decay 0.9, eps 1e-8.
    opt = torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-8, momentum=config.momentum)
  elif config.optimizer == 'sgd':
    opt = torch.optim.SGD(params, lr=lr, momentum=config.momentum)
  else:
    raise ValueError(config.optimizer)
  total = max(1, config.num_epochs * steps_per_epoch)
  warmup = int(config.warmup_epochs * steps_per_epoch)

  def factor(step):
    if step < warmup:
      return step / warmup
    if config.lr_schedule == 'cosine':
      return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) /
                                 max(1, total - warmup)))
    return 1.0

  return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def make_train_step(config, model, optimizer, scheduler):
  """One training step on numpy-converted tensors; returns the loss tensor.

  `model` is the `Classifier` or `torch.compile` of it (same parameters, compiled forward); the
  loss, backward call, clipping and optimizer step run eagerly either way.
  """
  bce = nn.BCEWithLogitsLoss(reduction='none')
  clip = config.grad_clip_norm

  def train_step(tokens, lengths, labels, mask):
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logits = model(tokens, lengths)
    per = bce(logits, labels).mean(1)
    loss = (per * mask).sum() / mask.sum().clamp(min=1.0)
    loss.backward()
    if clip:
      nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    scheduler.step()
    return loss

  return train_step
