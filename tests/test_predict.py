"""Tests for centernet_jax.predict: the per-image loop on CPU gives the batched values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from centernet_jax import decoder
from centernet_jax import models
from centernet_jax import predict
from centernet_jax.models import layers
from tests import tiny


def _toy_predict(variables, batch):
  """Per-image outputs that depend on the whole image: a linear map, then top-3."""
  feats = jnp.einsum('bhwc,cd->bhwd', batch['image'], variables['w'])
  scores, idx = jax.lax.top_k(feats.reshape(feats.shape[0], -1), 3)
  return {'scores': scores + batch['true_size'][:, :1], 'idx': idx}


def _batch(b, rng):
  return {'image': jnp.asarray(rng.normal(size=(b, 6, 5, 3)), jnp.float32),
          'true_size': jnp.asarray(rng.integers(1, 9, (b, 2)), jnp.int32),
          'original_size': jnp.asarray(rng.integers(1, 9, (b, 2)), jnp.int32)}


def test_images_in_turn_equals_batched_single_and_sharded():
  rng = np.random.default_rng(0)
  variables = {'w': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
  for b in (1, 6, 8):  # 6: not a multiple of the 4 test devices
    batch = _batch(b, rng)
    expected = _toy_predict(variables, batch)
    got = jax.jit(predict.images_in_turn(_toy_predict))(variables, batch)
    chex.assert_trees_all_close(got, expected, atol=1e-6)
  mesh = jax.make_mesh((4,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  batch = _batch(8, rng)
  sharded = jax.device_put(batch, NamedSharding(mesh, P('data')))
  got = jax.jit(predict.images_in_turn(_toy_predict))(variables, sharded)
  chex.assert_trees_all_close(got, _toy_predict(variables, batch), atol=1e-6)
  assert got['scores'].sharding.is_equivalent_to(NamedSharding(mesh, P('data')), 2)


def test_images_in_turn_shares_the_kernel_tiles_of_its_batch():
  """The images of a batch run in turn and share F(4x4, 3x3)'s kernel tiles: a 128 -> 128
  convolution on a 16 x 16 map (16 tiles per image) infers through the library for one image
  or three (48 shared tiles), through F(4x4, 3x3) (no convolution lowered) for five (80; 5 and
  3 images run one per step on the 4 test devices), as `layers.winograd_inference_forward`
  says; the values are the library's either way."""
  rng = np.random.default_rng(2)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 128, 128)) / 32, jnp.float32)
  dn = ('NHWC', 'HWIO', 'NHWC')

  def conv(kernel, batch):
    return {'y': layers.conv_general_dilated(batch['image'], kernel, (1, 1), 'SAME',
                                             dimension_numbers=dn)}

  for b, convolutions in ((1, 1), (3, 1), (5, 0)):
    batch = {'image': jnp.asarray(rng.normal(size=(b, 16, 16, 128)), jnp.float32)}
    looped = jax.jit(predict.images_in_turn(conv))
    assert looped.lower(kernel, batch).as_text().count('convolution') == convolutions, b
    ref = jax.lax.conv_general_dilated(batch['image'], kernel, (1, 1), 'SAME',
                                       dimension_numbers=dn)
    np.testing.assert_allclose(looped(kernel, batch)['y'], ref, rtol=0,
                               atol=2e-5 * float(np.max(np.abs(ref))))


def test_predict_fn_loop_equals_one_batched_call(tmp_path):
  config = tiny.tiny_config(str(tmp_path))
  size = int(config.input.size)
  model = models.build_model(config.model, 5)
  variables = tiny.random_variables(model, size)
  rng = np.random.default_rng(1)
  batch = {'image': jnp.asarray(rng.uniform(0, 255, (3, size, size, 3)), jnp.float32),
           'true_size': jnp.asarray([[size, size], [size // 2, size], [size, size // 4]],
                                    jnp.int32),
           'original_size': jnp.asarray([[size, size], [40, 90], [200, 50]], jnp.int32)}
  got = predict.make_predict_fn(model, input_size=size, max_detections=10)(variables, batch)

  @jax.jit
  def batched(variables, batch):
    heads = model.apply(variables, batch['image'], train=False)[-1]
    return decoder.decode_detections(heads, true_size=batch['true_size'],
                                     original_size=batch['original_size'],
                                     input_size=size, max_detections=10)

  chex.assert_trees_all_close(got, batched(variables, batch), atol=1e-4, rtol=1e-4)
