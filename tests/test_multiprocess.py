"""A real multi-process run: 2 processes x 2 CPU devices over localhost (gloo collectives).

Its final parameters must equal a 1-process x 4-device run on the same global batch, its
evaluation must give the same metrics, and its checkpoint must restore into a 1-process run.
"""

import io
import json
import os
import sys

import chex
import jax
import pytest

from centernet_jax import checkpointing
from centernet_jax import train
from centernet_jax.data import sources
from launch import local

from tests import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # two training processes, then a training
def test_two_processes_train_like_one_process(tmp_path):
  config = tiny.tiny_config(tmp_path / 'data')
  config.num_train_steps = 3
  config.checkpoint_every_steps = 3
  assert config.optimizer.adam_epsilon == 1e-3  # tiny_config's: says why
  sources.resolve(config)  # generate the data once, before the processes start
  overrides = [f'--config.dataset.{k}={v}' for k, v in config.dataset.items()
               if k.startswith('synthetic_')] + [
                   '--config.num_train_steps=3', '--config.checkpoint_every_steps=3']
  two_dir = tmp_path / 'two_processes'
  log = io.StringIO()
  status = local.run_local(
      [sys.executable, '-m', 'centernet_jax.main', '--config', 'tests/tiny_experiment.py',
       '--workdir', str(two_dir), *overrides],
      num_processes=2, devices_per_process=2, timeout=420, cwd=REPO, out=log)
  assert status == 0, log.getvalue()[-5000:]
  assert '[p0]' in log.getvalue() and '[p1]' in log.getvalue()

  one_dir = tmp_path / 'one_process'
  assert jax.process_count() == 1 and jax.device_count() == 4
  train.train_and_evaluate(config, str(one_dir))

  # The 2-process checkpoint restores into this 1-process, 4-device run.
  trainer = train.Trainer(config, str(one_dir))
  one_state, _ = checkpointing.restore(trainer.manager, trainer.state)
  trainer.manager.close()
  other = checkpointing.make_manager(two_dir, read_only=True)
  two_state, meta = checkpointing.restore(other, trainer.state)
  other.close()
  assert int(two_state.step) == int(one_state.step) == 3 == meta['step']
  chex.assert_trees_all_close(jax.device_get(two_state.params),
                              jax.device_get(one_state.params), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(jax.device_get(two_state.batch_stats),
                              jax.device_get(one_state.batch_stats), rtol=1e-5, atol=1e-6)

  two_metrics = json.loads((two_dir / 'eval_metrics.json').read_text())
  one_metrics = json.loads((one_dir / 'eval_metrics.json').read_text())
  assert two_metrics.keys() == one_metrics.keys()
  for k in one_metrics:
    assert abs(two_metrics[k] - one_metrics[k]) < 1e-6, (k, two_metrics[k], one_metrics[k])
