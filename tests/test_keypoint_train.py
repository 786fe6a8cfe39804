"""Keypoint training: the sharded step with keypoints on 4 simulated devices equals 1 device."""

import jax
import numpy as np
import optax
import pytest

from centernet_jax import model_variables
from centernet_jax import models
from centernet_jax import optimizer as optimizer_lib
from centernet_jax import sharding
from centernet_jax import train
from centernet_jax.data import pipeline
from centernet_jax.data import sources

from tests import tiny


@pytest.mark.slow  # four keypoint train steps compiled
def test_sharded_keypoint_step_on_4_devices_equals_1_device(tmp_path):
  assert jax.device_count() >= 4, 'tests/conftest.py should give 4 CPU devices'
  config = tiny.tiny_keypoint_config(tmp_path / 'data')
  spec = sources.resolve(config).keypoint_spec
  assert spec.num_keypoints == 9
  it = pipeline.make_train_iterator(config, sources.resolve(config))
  batches = [next(it) for _ in range(2)]
  assert batches[0]['keypoints'].shape == (8, 6, 9, 2)
  num_classes = sources.resolve(config).num_classes
  model = models.build_model(config.model, num_classes, spec)
  _, schedule = optimizer_lib.make_optimizer(config)
  tx = optax.sgd(1.0)
  # One initial state, placed on each mesh: variables drawn with numpy, as the model's init
  # draws them (He-normal kernels, the heatmap bias), without compiling the init (the sharded
  # init is tests/test_train.py's).
  init = train.train_state_from_variables(
      model_variables.filled_variables(model, config.input.size), tx)
  results = []
  for n in (1, 4):
    config.mesh.data = n
    mesh = sharding.make_mesh(config.mesh)
    replicated = sharding.replicated(mesh)
    state = jax.device_put(init, replicated)
    step = jax.jit(train.make_train_step(model, tx, schedule, config, num_classes, spec),
                   out_shardings=(replicated, replicated))
    for b in batches:
      state, metrics = step(state, sharding.to_global(b, mesh, train.train_keys(spec)))
    results.append((jax.device_get(state.params), jax.device_get(metrics)))
  (p1, m1), (p4, m4) = results
  for key in ('loss', 'loss/human_pose/keypoint/heatmap', 'loss/human_pose/keypoint/offset',
              'loss/human_pose/keypoint/regression', 'num_keypoints'):
    np.testing.assert_allclose(m1[key], m4[key], rtol=1e-4)
  assert m1['num_keypoints'] > 0 and np.isfinite(m1['loss'])
  np.testing.assert_allclose(m1['grad_norm'], m4['grad_norm'], rtol=1e-3)
  # The keypoint heads learn the same on 1 and 4 devices.
  for name in ('human_pose_keypoint_heatmap_0', 'human_pose_keypoint_regression_0'):
    a = p1[name]['conv_1x1']['kernel']
    b = p4[name]['conv_1x1']['kernel']
    np.testing.assert_allclose(a, b, atol=1e-4 * float(np.abs(a).max()) + 1e-6)
