r"""Command line entry: train, evaluate or both, from an experiment file.

  python -m centernet_jax.main --config experiments/demo.py --workdir runs/demo
  python -m centernet_jax.main --config experiments/demo.py --workdir runs/demo --mode eval
  python -m centernet_jax.main --config experiments/demo.py --workdir runs/x \
      --config.batch_size=32 --config.dataset.train_annotations=/data/train.json

Re-running the same command resumes from the workdir's latest checkpoint.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from centernet_jax import config_check
from centernet_jax import experiments
from centernet_jax import host_memory

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment file (get_config()).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and metrics.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                          'train: train (resuming) and evaluate; eval: evaluate a checkpoint.')
_STEP = flags.DEFINE_integer('step', None, 'With --mode=eval: the checkpoint step (latest if unset).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', bool(os.environ.get('CENTERNET_JAX_DISTRIBUTED')),
    'Call jax.distributed.initialize() first (multi-host). TPU VMs, SLURM and k8s are '
    'auto-detected; elsewhere give the three flags below. Env CENTERNET_JAX_DISTRIBUTED=1 '
    'also turns it on.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Index of this process.')
_HEARTBEAT = flags.DEFINE_integer(
    'heartbeat_timeout', 60,
    'With --distributed: seconds without a heartbeat from a process after which the others '
    'stop with "Task N heartbeat timeout" instead of waiting in a collective for ever (JAX\'s '
    'default is 100).')


def main(argv):
  del argv
  config = _CONFIG.value
  host_memory.set_up(config, training=_MODE.value == 'train')  # before JAX starts its threads
  import jax  # pylint: disable=g-import-not-at-top
  if _DISTRIBUTED.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value,
                               heartbeat_timeout_seconds=_HEARTBEAT.value)
  from centernet_jax import train  # pylint: disable=g-import-not-at-top
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  if _MODE.value == 'train':
    train.train_and_evaluate(config, _WORKDIR.value)
  else:
    train.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value)


def _config_file_arg(argv) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a.split('=', 1)[1]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _parse_flags(argv):
  """absl's parsing, with an override of a field the config lacks explained by name."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError):
    overrides = [a[2:].split('=', 1)[0] for a in argv[1:] if a.startswith('--config.')]
    path = _config_file_arg(argv)
    try:  # the experiment file alone, to list its fields
      config = experiments.load_config(path)
      problems = config_check.unknown_overrides(config, overrides)
    except Exception:  # pylint: disable=broad-except  # keep absl's own error then
      problems = []
    if not problems:
      raise
    sys.exit('\n'.join(problems))


def run():
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
