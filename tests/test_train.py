"""The training loop: sharded step equivalence, learning, checkpoints, resume, NaN handling."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import optax
import pytest

from centernet_jax import checkpointing
from centernet_jax import models
from centernet_jax import optimizer as optimizer_lib
from centernet_jax import performance
from centernet_jax import sharding
from centernet_jax import train
from centernet_jax.data import pipeline
from centernet_jax.data import sources

from tests import helpers
from tests import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('synthetic')


def _setup(config, num_devices, tx=None, fsdp=1, variables=None):
  """(mesh, state, jitted step) on `num_devices`; `variables` (from `_init_variables`) skip the
  init program, whose compile is most of a tiny test's time on CPU."""
  config.mesh.data = num_devices // fsdp
  config.mesh.fsdp = fsdp
  mesh = sharding.make_mesh(config.mesh)
  num_classes = sources.resolve(config).num_classes
  model = models.build_model(config.model, num_classes)
  default_tx, schedule = optimizer_lib.make_optimizer(config)
  tx = default_tx if tx is None else tx
  init = lambda r: train.create_train_state(r, model, tx, config.input.size)
  shardings = sharding.state_shardings(mesh, jax.eval_shape(init, jax.random.key(0)))
  if variables is None:
    state = performance.run_init(init, jax.random.key(0), shardings)
  else:
    state = jax.device_put(train.TrainState(
        step=np.zeros((), np.int32), params=variables['params'],
        batch_stats=variables['batch_stats'], opt_state=tx.init(variables['params'])), shardings)
  step = jax.jit(train.make_train_step(model, tx, schedule, config, num_classes),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  return mesh, state, step


def _init_variables(config):
  """The 1-device initial params and BN statistics of `config`'s model, as numpy."""
  num_classes = sources.resolve(config).num_classes
  model = models.build_model(config.model, num_classes)
  return jax.device_get(performance.run_init(
      lambda r: model.init(r, np.zeros((1, config.input.size, config.input.size, 3), np.float32),
                           train=False), jax.random.key(0)))


def _batches(config, n):
  it = pipeline.make_train_iterator(config, sources.resolve(config))
  return [next(it) for _ in range(n)]


@pytest.mark.slow  # 4 devices and 1: two or four train steps compiled, two inits
@pytest.mark.parametrize('fsdp', [1, 2])
def test_sharded_step_on_4_devices_equals_1_device(data_dir, fsdp):
  """Data parallel over 4 devices (fsdp=1), or 2 x 2 with the state split over fsdp=2."""
  assert jax.device_count() >= 4, 'tests/conftest.py should give 4 CPU devices'
  config = tiny.tiny_config(data_dir)
  batches = _batches(config, 2)
  # Plain SGD with rate 1 makes the param change equal the gradient, so the comparison checks
  # the gradients themselves. (Adam would turn the round-off-level gradients of conv biases
  # that feed a BatchNorm into full-size updates of random sign.)
  variables = _init_variables(config)
  results = []
  for n, f in ((1, 1), (4, fsdp)):
    # The 4-device state is initialised under its own shardings (as training does it), the
    # 1-device one comes from the plain init: the check below compares the two.
    mesh, state, step = _setup(config.copy_and_resolve_references(), n, optax.sgd(1.0), f,
                               variables=variables if n == 1 else None)
    if f > 1:  # the biggest kernel really is split: each device holds a part of it
      kernel = max(jax.tree.leaves(state.params), key=lambda x: x.size)
      assert kernel.size >= sharding.FSDP_MIN_SIZE
      assert kernel.addressable_shards[0].data.size == kernel.size // f
    init = jax.device_get(state.params)
    for b in batches:
      state, metrics = step(state, sharding.to_global(b, mesh, train.TRAIN_KEYS))
    results.append((jax.device_get(state), jax.device_get(metrics), init))
  (state1, m1, init1), (state4, m4, init4) = results
  np.testing.assert_allclose(m1['loss'], m4['loss'], rtol=1e-5)
  np.testing.assert_allclose(m1['grad_norm'], m4['grad_norm'], rtol=1e-4)
  chex.assert_trees_all_equal(init1, init4)
  # Each leaf's change (the summed gradients) agrees to float32 round-off: relative to the
  # leaf's largest change, with a floor at the round-off of the largest change of all (conv
  # biases feeding a BatchNorm have zero gradient up to that round-off).
  deltas1 = jax.tree.leaves(jax.tree.map(np.subtract, state1.params, init1))
  deltas4 = jax.tree.leaves(jax.tree.map(np.subtract, state4.params, init4))
  overall = max(float(np.max(np.abs(d))) for d in deltas1)
  paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(state1.params)[0]]
  for path, d1, d4 in zip(paths, deltas1, deltas4):
    scale = float(np.max(np.abs(d1)))
    assert np.max(np.abs(d1 - d4)) <= 1e-3 * scale + 1e-6 * overall, (path, scale, overall)
  # BN moving statistics come from the global batch in both cases.
  chex.assert_trees_all_close(state1.batch_stats, state4.batch_stats, rtol=1e-4, atol=1e-5)
  if fsdp == 1:
    # The optimizer state is replicated and Adam is elementwise: with the gradients equal
    # (above), so are its updates. With fsdp=2 its moments are split over devices: checked below.
    return
  # The real optimizer: the same loss after two Adam steps.
  losses = []
  for n, f in ((1, 1), (4, fsdp)):
    mesh, state, step = _setup(config.copy_and_resolve_references(), n, fsdp=f,
                               variables=variables)
    for b in batches + batches[:1]:
      state, metrics = step(state, sharding.to_global(b, mesh, train.TRAIN_KEYS))
    losses.append(float(metrics['loss']))
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


@pytest.mark.slow  # an init and a train step on 2 devices compiled
def test_train_step_compiles_once(data_dir):
  config = tiny.tiny_config(data_dir)
  config.mesh.data = 2
  mesh = sharding.make_mesh(config.mesh)
  num_classes = sources.resolve(config).num_classes
  model = models.build_model(config.model, num_classes)
  tx, schedule = optimizer_lib.make_optimizer(config)
  step_fn = chex.assert_max_traces(
      train.make_train_step(model, tx, schedule, config, num_classes), n=1)
  # As train_and_evaluate builds them: the same state shardings in and out, donated.
  init = lambda r: train.create_train_state(r, model, tx, config.input.size)
  shardings = sharding.state_shardings(mesh, jax.eval_shape(init, jax.random.key(0)))
  step = jax.jit(step_fn, donate_argnums=(0,),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  state = performance.run_init(init, jax.random.key(0), shardings)
  for b in _batches(config, 3):  # different box counts per batch, same shapes
    state, _ = step(state, sharding.to_global(b, mesh, train.TRAIN_KEYS))


@pytest.mark.slow  # an init and a train step compiled
def test_short_training_lowers_the_loss(data_dir):
  config = tiny.tiny_config(data_dir)
  config.optimizer.schedule = 'cosine'
  config.optimizer.learning_rate = 3e-3
  config.num_train_steps = 25  # the cosine schedule reaches 0 at num_train_steps
  mesh, state, step = _setup(config, 1)
  batch = sharding.to_global(_batches(config, 1)[0], mesh, train.TRAIN_KEYS)
  losses = []
  for _ in range(25):  # fitting one batch: the loss must fall clearly
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


@pytest.mark.slow  # three trainings
def test_resumed_run_equals_uninterrupted_run(data_dir, tmp_path, monkeypatch):
  config = tiny.tiny_config(data_dir)
  config.num_train_steps = 4
  config.eval.on_train_end = False
  train.train_and_evaluate(config, str(tmp_path / 'straight'))

  real = pipeline.make_train_iterator

  def crashing(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == 3:
        raise RuntimeError('simulated crash while loading the batch of step 4')
      yield batch

  monkeypatch.setattr(pipeline, 'make_train_iterator', crashing)
  with pytest.raises(RuntimeError, match='simulated crash'):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(pipeline, 'make_train_iterator', real)

  def no_init(*args, **kwargs):
    raise AssertionError('a resumed run compiled and ran the init program')

  monkeypatch.setattr(performance, 'run_init', no_init)
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))  # resumes at step 2

  def final_params(workdir):
    trainer = train.Trainer(config, workdir)
    restored, meta = checkpointing.restore(trainer.manager, trainer.state)
    trainer.manager.close()
    return restored, meta

  straight, meta = final_params(str(tmp_path / 'straight'))
  resumed, _ = final_params(str(tmp_path / 'resumed'))
  assert int(straight.step) == int(resumed.step) == 4 == meta['step']
  chex.assert_trees_all_close(straight.params, resumed.params, rtol=1e-6, atol=1e-7)
  assert meta['label_map']['names']
  assert json.loads((tmp_path / 'straight' / 'config.json').read_text())['batch_size'] == 8


@pytest.mark.slow  # two training processes
def test_killed_run_resumes_at_its_last_checkpoint(data_dir, tmp_path):
  """A real SIGKILL of a training process, then a restart in the same workdir."""
  config = tiny.tiny_config(data_dir)
  sources.resolve(config)  # generate the data before the child starts
  workdir = tmp_path / 'killed'
  overrides = [f'--config.dataset.{k}={v}' for k, v in config.dataset.items()
               if k.startswith('synthetic_')]
  cmd = [sys.executable, '-m', 'centernet_jax.main', '--config', 'tests/tiny_experiment.py',
         '--workdir', str(workdir), '--config.num_train_steps=1000',
         '--config.checkpoint_every_steps=2', *overrides]
  env = helpers.subprocess_env()
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, start_new_session=True)
  ckpts = checkpointing.checkpoint_dir(workdir)
  deadline = time.time() + 240
  try:
    while time.time() < deadline:
      done = [int(p.name) for p in ckpts.glob('*') if p.name.isdigit() and p.name != '0'] \
          if ckpts.exists() else []
      if done and max(done) >= 4:
        break
      if proc.poll() is not None:
        pytest.fail('training exited early: ' + proc.stderr.read().decode()[-3000:])
      time.sleep(0.5)
    else:
      pytest.fail('no checkpoint appeared within 240 s')
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  manager = checkpointing.make_manager(workdir, read_only=True)
  last = manager.latest_step()
  manager.close()
  assert last is not None and last >= 2 and last % 2 == 0

  config.num_train_steps = last + 2
  config.eval.on_train_end = False
  trainer = train.Trainer(config, str(workdir))
  assert trainer.restore_or_initialize() == last
  trainer.manager.close()
  train.train_and_evaluate(config, str(workdir))
  manager = checkpointing.make_manager(workdir, read_only=True)
  assert manager.latest_step() == last + 2
  manager.close()


@pytest.mark.slow  # a training
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
  # tiny_config's 4 steps: the train step compiled for test_resumed_run_equals_uninterrupted_run
  # (same config, so the same program) is reused instead of compiling one for more steps.
  config = tiny.tiny_config(data_dir)
  assert config.num_train_steps == 4 and config.checkpoint_every_steps == 2
  real = pipeline.make_train_iterator

  def poisoned(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == 2:  # the 3rd step sees NaN boxes (images are uint8: they cannot hold a NaN)
        batch = dict(batch, boxes=np.full_like(batch['boxes'], np.nan))
      yield batch

  monkeypatch.setattr(pipeline, 'make_train_iterator', poisoned)
  with pytest.raises(train.NonFiniteLossError, match='step 3'):
    train.train_and_evaluate(config, str(tmp_path))
  manager = checkpointing.make_manager(tmp_path, read_only=True)
  assert manager.latest_step() == 2
  manager.close()
