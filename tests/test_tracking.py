"""TensorBoard tracking: a trained workdir holds the step loss, the epoch metrics and the
hyperparameters in event files."""

import struct

from tensorboardX.proto import event_pb2

from genre_jax import trainer
from tests.conftest import tiny_config


def read_scalars(directory):
  """{tag: [(step, value)]} of every event file below `directory` (TFRecord framing)."""
  out = {}
  for path in sorted(directory.rglob('events.out.tfevents.*')):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        if value.HasField('simple_value'):
          out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_workdir_holds_step_loss_epoch_metrics_and_hparams(synthetic_jsonl, tmp_path):
  config = tiny_config(synthetic_jsonl, num_epochs=2, log_every_steps=10)
  report = trainer.train_and_evaluate(config, str(tmp_path))
  scalars = read_scalars(tmp_path / 'tensorboard')
  steps_per_epoch = -(-report['data']['split_sizes']['train'] // config.batch_size)
  assert [s for s, _ in scalars['train/loss']] == list(range(10, 2 * steps_per_epoch + 1, 10))
  assert [s for s, _ in scalars['val/micro_f1']] == [steps_per_epoch, 2 * steps_per_epoch]
  assert {'val/loss', 'train/epoch_mean_loss', 'train/micro_f1', 'epoch/epoch_seconds'} <= set(
      scalars)
  test_f1 = scalars['hparam/test_micro_f1'][0][1]
  assert abs(test_f1 - report['test']['micro_f1']) < 1e-6
  assert (tmp_path / 'tensorboard' / 'hparams').is_dir()
