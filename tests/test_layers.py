"""The CPU depthwise convolution (shift-add) equals the library one, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax.models import layers


@pytest.mark.parametrize('hw,stride,k', [((9, 12), 1, 3), ((16, 16), 2, 3), ((15, 10), 2, 3),
                                         ((7, 7), 1, 5)])
def test_shift_add_equals_library(hw, stride, k):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2,) + hw + (5,)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 1, 5)), jnp.float32)
  ours = layers.depthwise_conv_shift_add(x, kernel, stride)
  ref = layers.depthwise_conv_library(x, kernel, stride)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)

  def loss(fn):
    return lambda a, b: jnp.sum(jnp.sin(fn(a, b, stride)))
  g_ours = jax.grad(loss(layers.depthwise_conv_shift_add), argnums=(0, 1))(x, kernel)
  g_ref = jax.grad(loss(layers.depthwise_conv_library), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_ours, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_module_matches_grouped_nn_conv_and_its_parameter():
  """Same parameter name, shape and init as `nn.Conv(..., feature_group_count=C)`."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 8, 8, 4)), jnp.float32)
  ours = layers.DepthwiseConv(3, 2)
  ref = nn.Conv(4, (3, 3), strides=(2, 2), padding='SAME', feature_group_count=4,
                use_bias=False)
  v_ours = ours.init(jax.random.key(0), x)
  v_ref = ref.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_ref)
  np.testing.assert_array_equal(v_ours['params']['kernel'], v_ref['params']['kernel'])
  np.testing.assert_allclose(ours.apply(v_ours, x), ref.apply(v_ref, x), rtol=1e-5, atol=1e-5)


def test_bfloat16_accumulates_in_float32():
  x = jnp.full((1, 4, 4, 1), 1.0 + 2**-8, jnp.bfloat16)
  kernel = jnp.ones((3, 3, 1, 1), jnp.float32)
  out = layers.DepthwiseConv(3, 1, kernel_init=lambda *a: kernel, dtype=jnp.bfloat16).apply(
      {'params': {'kernel': kernel}}, x)
  assert out.dtype == jnp.bfloat16
  assert float(out[0, 1, 1, 0]) == pytest.approx(9.0, abs=0.05)
