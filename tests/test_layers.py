"""models/layers.py against what it stands in for (the library convolutions, `nn.ConvTranspose`,
`nn.BatchNorm`): values, parameters and gradients."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax.models import layers


@pytest.fixture(autouse=True)
def _dots_at_every_size(monkeypatch):
  """These tests' maps are small: let the matrix-product weight gradient cover them."""
  monkeypatch.setattr(layers, 'DOTS_MIN_OUTPUT_PIXELS', 0)


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


@pytest.mark.parametrize('hw,stride,rows_limit', [((70, 9), 1, 32), ((67, 20), 2, 32),
                                                   ((31, 8), 1, 32), ((12, 6), 1, 4),
                                                   ((24, 10), 2, 5)])
def test_weight_grad_in_row_groups_equals_library(monkeypatch, hw, stride, rows_limit):
  """Output heights with groups of several rows (70: 14 rows, 34: 17, 12: 4, 12 with at most
  5: 4), and a prime height of one group (31)."""
  monkeypatch.setattr(layers, 'DEPTHWISE_WEIGHT_GRAD_ROWS', rows_limit)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2,) + hw + (4,)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32)
  g = jnp.asarray(rng.normal(size=layers.depthwise_conv_library(x, kernel, stride).shape),
                  jnp.float32)
  ref = jax.grad(lambda k: jnp.sum(layers.depthwise_conv_library(x, k, stride) * g))(kernel)
  np.testing.assert_allclose(layers.depthwise_weight_grad(x, g, 3, stride), ref,
                             rtol=1e-4, atol=1e-4)


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


# Dense convolutions as the models use them: (input HxW, kernel, stride, padding).
DENSE_CASES = [((9, 12), 3, 1, 'SAME'), ((16, 16), 3, 2, 'SAME'), ((15, 10), 3, 2, 'VALID'),
               ((11, 11), 1, 1, 'VALID'), ((12, 9), 1, 2, 'VALID'), ((10, 10), 1, 1, 'SAME'),
               ((21, 20), 7, 2, 'VALID'), ((9, 9), 3, 1, ((1, 1), (1, 1)))]


def _dense_conv_pair(k, stride, padding):
  kwargs = dict(features=6, kernel_size=(k, k), strides=(stride, stride), padding=padding)
  return (nn.Conv(**kwargs, conv_general_dilated=layers.conv_general_dilated),
          nn.Conv(**kwargs))


@pytest.mark.parametrize('cin', [3, 5])  # the RGB stems' one product; k*k products
@pytest.mark.parametrize('hw,k,stride,padding', DENSE_CASES)
def test_dense_conv_equals_library_values_and_gradients(hw, k, stride, padding, cin):
  """`nn.Conv(conv_general_dilated=layers.conv_general_dilated)`: same parameters, outputs and
  gradients (input, kernel, bias) as the plain `nn.Conv`, float32."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2,) + hw + (cin,)), jnp.float32)
  ours, ref = _dense_conv_pair(k, stride, padding)
  variables = ref.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, variables)
  np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x), rtol=1e-5,
                             atol=1e-5)

  def loss(module):
    return lambda v, a: jnp.sum(jnp.sin(module.apply(v, a)) * jnp.arange(6.0))
  g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(variables, x)
  g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(variables, x)
  assert jax.tree.structure(g_ours) == jax.tree.structure(g_ref)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))


@pytest.mark.parametrize('cin,products', [(3, 1), (layers.IM2COL_MAX_INPUT_CHANNELS, 1),
                                          (layers.IM2COL_MAX_INPUT_CHANNELS + 1, 9)])
def test_dense_conv_weight_grad_dots_can_fail(cin, products):
  """The weight-gradient formulation itself against the library's transposed convolution
  (the custom VJP must not hide a wrong tap order: a transposed kernel is caught), with one
  product of the side-by-side windows up to `IM2COL_MAX_INPUT_CHANNELS` input channels and
  one per tap above."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 8, 7, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, cin, 4)), jnp.float32)
  pads = ((1, 1), (1, 1))
  conv = lambda b: jax.lax.conv_general_dilated(x, b, (1, 1), pads,
                                                dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  g = jnp.asarray(rng.normal(size=conv(w).shape), jnp.float32)
  (ref,) = jax.linear_transpose(conv, w)(g)
  ours = layers.conv_weight_grad_dots(x, g, (3, 3), (1, 1), pads)
  jaxpr = jax.make_jaxpr(layers.conv_weight_grad_dots, static_argnums=(2, 3, 4))(
      x, g, (3, 3), (1, 1), pads)
  assert sum(e.primitive.name == 'dot_general' for e in jaxpr.eqns) == products
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)
  assert np.max(np.abs(np.asarray(ours).transpose(1, 0, 2, 3) - ref)) > 1e-2


@pytest.mark.parametrize('hw,k,stride,padding', [((9, 12), 3, 1, 'SAME'),
                                                 ((16, 16), 3, 2, 'SAME'),
                                                 ((12, 9), 1, 2, 'VALID')])
def test_dense_conv_bfloat16(hw, k, stride, padding):
  """bfloat16 compute: output and gradients in bfloat16, the weight gradient accumulated in
  float32, within bfloat16 round-off of the library's."""
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2,) + hw + (16,)), jnp.float32)
  kwargs = dict(features=8, kernel_size=(k, k), strides=(stride, stride), padding=padding,
                dtype=jnp.bfloat16)
  ours = nn.Conv(**kwargs, conv_general_dilated=layers.conv_general_dilated)
  ref = nn.Conv(**kwargs)
  variables = ref.init(jax.random.key(0), x)
  out = ours.apply(variables, x)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32),
                             np.asarray(ref.apply(variables, x), np.float32), rtol=2e-2,
                             atol=2e-2)
  loss = lambda m: (lambda v, a: jnp.sum(m.apply(v, a).astype(jnp.float32) ** 2))
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(variables, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    assert a.dtype == b.dtype
    scale = float(np.max(np.abs(np.asarray(b, np.float32))))
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=3e-2, atol=3e-2 * scale)


def test_dense_conv_falls_back_to_the_library_for_groups_and_dilation():
  x = jnp.asarray(np.random.default_rng(5).normal(size=(1, 9, 9, 4)), jnp.float32)
  for kwargs in (dict(feature_group_count=2), dict(kernel_dilation=(2, 2))):
    ours = nn.Conv(4, (3, 3), conv_general_dilated=layers.conv_general_dilated, **kwargs)
    ref = nn.Conv(4, (3, 3), **kwargs)
    variables = ref.init(jax.random.key(0), x)
    np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x), rtol=1e-6)


def test_dense_conv_small_maps_keep_the_library_weight_gradient(monkeypatch):
  x = jnp.ones((1, 8, 8, 3), jnp.float32)
  conv = nn.Conv(4, (3, 3), conv_general_dilated=layers.conv_general_dilated)
  variables = conv.init(jax.random.key(0), x)
  # A new function per trace: JAX reuses the trace of one it has seen.
  grad = lambda: lambda v: jax.grad(lambda v: jnp.sum(conv.apply(v, x)))(v)
  products = str(jax.make_jaxpr(grad())(variables))
  monkeypatch.setattr(layers, 'DOTS_MIN_OUTPUT_PIXELS', 8 * 8 + 1)
  library = str(jax.make_jaxpr(grad())(variables))
  assert 'dot_general' in products and 'dot_general' not in library


def test_dense_conv_small_map_with_a_big_weight_gradient_gets_the_products(monkeypatch):
  monkeypatch.setattr(layers, 'DOTS_MIN_OUTPUT_PIXELS', 64 * 64)
  # An 8 x 8 map: below the pixel bound. 3x3, 256 -> 256 channels: 2 * 64 * 9 * 256 * 256 =
  # 75 MFLOP of weight gradient per image.
  x = jax.ShapeDtypeStruct((1, 8, 8, 256), jnp.float32)
  conv = nn.Conv(256, (3, 3), conv_general_dilated=layers.conv_general_dilated)
  variables = jax.eval_shape(conv.init, jax.random.key(0), x)
  grad = lambda: lambda v, x: jax.grad(lambda v: jnp.sum(conv.apply(v, x)))(v)
  monkeypatch.setattr(layers, 'DOTS_MIN_WEIGHT_GRAD_FLOPS', 76e6)
  library = str(jax.make_jaxpr(grad())(variables, x))
  monkeypatch.setattr(layers, 'DOTS_MIN_WEIGHT_GRAD_FLOPS', 75e6)
  products = str(jax.make_jaxpr(grad())(variables, x))
  assert 'dot_general' in products and 'dot_general' not in library


@pytest.mark.parametrize('stride', [1, 2])
def test_pointwise_conv_on_a_small_map_gets_the_product(monkeypatch, stride):
  """A 1x1 kernel below both general bounds but at the pointwise one: one product; a 3x3 kernel
  on the same map, and the 1x1 kernel under a pointwise bound above its size: the library's."""
  monkeypatch.setattr(layers, 'DOTS_MIN_OUTPUT_PIXELS', 64 * 64)
  # 2 x (8 / stride)^2 pixels x 6 x 5 weight-gradient FLOPs per image: 3840 at stride 1.
  monkeypatch.setattr(layers, 'POINTWISE_DOTS_MIN_WEIGHT_GRAD_FLOPS', 2 * 16 * 6 * 5)
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8, 6)), jnp.float32)

  def weight_grad(k):
    conv = nn.Conv(5, (k, k), strides=stride, conv_general_dilated=layers.conv_general_dilated)
    ref = nn.Conv(5, (k, k), strides=stride)
    variables = conv.init(jax.random.key(0), x)
    loss = lambda m: lambda v: jnp.sum(jnp.sin(m.apply(v, x)))
    return (str(jax.make_jaxpr(jax.grad(loss(conv)))(variables)),
            jax.grad(loss(conv))(variables), jax.grad(loss(ref))(variables))

  jaxpr, ours, ref = weight_grad(1)
  assert 'dot_general' in jaxpr
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert 'dot_general' not in weight_grad(3)[0]
  monkeypatch.setattr(layers, 'POINTWISE_DOTS_MIN_WEIGHT_GRAD_FLOPS', 2 * 64 * 6 * 5 + 1)
  assert 'dot_general' not in weight_grad(1)[0]


@pytest.mark.parametrize('hw,cin,features,k,stride', [((5, 7), 4, 8, 3, 2), ((8, 8), 6, 5, 3, 2),
                                                      ((4, 6), 3, 2, 4, 2), ((5, 5), 3, 4, 3, 3),
                                                      ((6, 4), 2, 3, 1, 2)])
def test_conv_transpose_matches_flax_values_gradients_and_parameters(hw, cin, features, k,
                                                                     stride):
  """`ConvTranspose2D` against `nn.ConvTranspose(transpose_kernel=True, padding='SAME')`: the
  same parameter tree, outputs and gradients (the weight gradient through the products of
  `dilated_conv_weight_grad_dots`; its jaxpr has the dots)."""
  x = jnp.asarray(np.random.default_rng(k * 10 + stride).normal(size=(2,) + hw + (cin,)),
                  jnp.float32)
  ref = nn.ConvTranspose(features, (k, k), strides=(stride, stride), padding='SAME',
                         transpose_kernel=True)
  ours = layers.ConvTranspose2D(features, (k, k), (stride, stride))
  variables = jax.tree.map(lambda a: a + 0.1, ref.init(jax.random.key(1), x))
  assert (jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x))
          == jax.tree.map(jnp.shape, variables))
  out = ref.apply(variables, x)
  np.testing.assert_allclose(ours.apply(variables, x), out, rtol=1e-5, atol=1e-5)
  cot = jnp.asarray(np.random.default_rng(2).normal(size=out.shape), jnp.float32)
  loss = lambda m: (lambda v, a: jnp.sum(m.apply(v, a) * cot))
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(variables, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))
  assert 'dot_general' in str(jax.make_jaxpr(jax.grad(loss(ours)))(variables, x))


@pytest.mark.parametrize('hw,k,dilation,pads', [
    ((5, 6), 3, (2, 2), ((1, 2), (1, 2))),   # ConvTranspose2D's 'SAME', stride 2
    ((6, 5), 3, (2, 2), ((2, 1), (0, 3))),
    ((4, 4), 4, (2, 2), ((2, 2), (1, 3))),
    ((4, 5), 3, (3, 2), ((1, 2), (2, 2))),
    ((5, 5), 5, (2, 3), ((0, 0), (4, 1))),
    ((3, 4), 1, (2, 2), ((0, 1), (0, 1))),   # phases without a tap: zeros
    ((6, 6), 3, (2, 2), ((-1, 0), (0, -1))),  # negative padding crops
])
def test_input_dilated_conv_phases_is_the_dilated_convolution(hw, k, dilation, pads):
  """The forward of transposed convolutions on CPU, phase by phase, against the library's
  convolution of the dilated input."""
  rng = np.random.default_rng(k + 10 * dilation[0] + dilation[1])
  x = jnp.asarray(rng.normal(size=(2,) + hw + (3,)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 3, 4)), jnp.float32)
  ref = jax.lax.conv_general_dilated(x, w, (1, 1), pads, lhs_dilation=dilation,
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  ours = layers.input_dilated_conv_phases(x, w, dilation, pads)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('hw', [(5, 6), (6, 5), (4, 4), (5, 5)])  # every parity of H and W
def test_conv_transpose_compiles_without_an_input_dilated_convolution(hw):
  """The whole `ConvTranspose2D` program on CPU takes the phase forward: no convolution of
  the dilated input is left in it."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2,) + hw + (3,)), jnp.float32)
  conv = layers.ConvTranspose2D(4, (3, 3), (2, 2))
  variables = conv.init(jax.random.key(0), x)
  hlo = jax.jit(conv.apply).lower(variables, x).compile().as_text()
  assert 'convolution(' in hlo and 'lhs_dilate' not in hlo


def test_dilated_weight_grad_dots_can_fail():
  """The parity-class products against the library's transposed convolution; a wrong parity
  (the low padding off by one) is caught."""
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
  pads = layers.conv_transpose_same_pads(3, 2), layers.conv_transpose_same_pads(3, 2)
  conv = lambda b: jax.lax.conv_general_dilated(x, b, (1, 1), pads, lhs_dilation=(2, 2),
                                                dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  g = jnp.asarray(rng.normal(size=conv(w).shape), jnp.float32)
  (ref,) = jax.linear_transpose(conv, w)(g)
  np.testing.assert_allclose(layers.dilated_conv_weight_grad_dots(x, g, (3, 3), (2, 2), pads),
                             ref, rtol=1e-5, atol=1e-4)
  shifted = tuple((lo + 1, hi - 1) for lo, hi in pads)
  wrong = layers.dilated_conv_weight_grad_dots(x, g, (3, 3), (2, 2), shifted)
  assert np.max(np.abs(np.asarray(wrong) - ref)) > 1e-2


def _library_3x3_passes(x, w, g):
  conv = lambda a, b: jax.lax.conv_general_dilated(a, b, (1, 1), 'SAME',
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  (dx,) = jax.linear_transpose(lambda a: conv(a, w), x)(g)
  (dw,) = jax.linear_transpose(lambda b: conv(x, b), w)(g)
  return conv(x, w), dx, dw


@pytest.mark.parametrize('shape', [(1, 9, 13, 3, 5), (2, 8, 8, 4, 4), (1, 5, 4, 2, 7),
                                   (2, 17, 11, 8, 6), (1, 1, 1, 3, 2), (1, 2, 6, 1, 1)])
def test_winograd_passes_equal_the_library_and_can_fail(shape):
  """F(4x4, 3x3): forward, input gradient and weight gradient against the library
  convolution and its transposes, at map sizes that are not whole tiles (the padding and the
  crop) and down to one pixel; a kernel flipped in space is caught."""
  b, h, w, cin, cout = shape
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.normal(size=(b, h, w, cin)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(b, h, w, cout)), jnp.float32)
  refs = _library_3x3_passes(x, kernel, g)
  ours = (layers.winograd_conv3x3(x, kernel), layers.winograd_conv3x3_input_grad(g, kernel),
          layers.winograd_conv3x3_weight_grad(x, g))
  for a, r in zip(ours, refs):
    assert a.shape == r.shape and a.dtype == jnp.float32
    np.testing.assert_allclose(a, r, rtol=0, atol=2e-5 * float(np.max(np.abs(r))))
  if h > 1 or w > 1:
    flipped = kernel[::-1, ::-1]
    assert np.max(np.abs(layers.winograd_conv3x3(x, flipped) - refs[0])) > 1e-2
    assert np.max(np.abs(layers.winograd_conv3x3_input_grad(g, flipped) - refs[1])) > 1e-2
    assert np.max(np.abs(layers.winograd_conv3x3_weight_grad(x, g)[::-1, ::-1]
                         - refs[2])) > 1e-2


def _every_conv_through_winograd(monkeypatch):
  monkeypatch.setattr(layers, 'WINOGRAD_MIN_CHANNELS', 1)
  monkeypatch.setattr(layers, 'WINOGRAD_CONV_CHANNELS', (1, 10**6))
  monkeypatch.setattr(layers, 'WINOGRAD_CONV_TILES', (1, 10**9))
  monkeypatch.setattr(layers, 'WINOGRAD_INFERENCE_CONV_CHANNELS', (1, 10**6))
  monkeypatch.setattr(layers, 'WINOGRAD_INFERENCE_CONV_TILES', (1, 10**9))
  monkeypatch.setattr(layers, 'WINOGRAD_INFERENCE_MIN_SHARED_TILES', 1)
  monkeypatch.setattr(layers, 'WINOGRAD_WEIGHT_GRAD_MIN_TILES', 1)


@pytest.mark.parametrize('padding,weight_grad', [('SAME', 'winograd'),
                                                 (((1, 1), (1, 1)), 'winograd'),
                                                 ('SAME', 'dots'), ('SAME', 'library')])
def test_dense_conv_through_winograd_equals_library(monkeypatch, padding, weight_grad):
  """`nn.Conv(conv_general_dilated=layers.conv_general_dilated)` with the forward pass and the
  input gradient planned as F(4x4, 3x3), and the weight gradient as F(4x4, 3x3), the products
  or the library's: the same outputs and gradients (input, kernel, bias) as the plain
  `nn.Conv`; with every pass F(4x4, 3x3), no library convolution left in the gradient lowered
  for CPU."""
  _every_conv_through_winograd(monkeypatch)
  if weight_grad != 'winograd':
    monkeypatch.setattr(layers, 'WINOGRAD_WEIGHT_GRAD_MIN_TILES', 10**9)
  if weight_grad == 'library':
    monkeypatch.setattr(layers, 'DOTS_MIN_OUTPUT_PIXELS', 10**9)
    monkeypatch.setattr(layers, 'DOTS_MIN_WEIGHT_GRAD_FLOPS', float('inf'))
  x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 10, 7, 5)), jnp.float32)
  kwargs = dict(features=6, kernel_size=(3, 3), padding=padding)
  ours = nn.Conv(**kwargs, conv_general_dilated=layers.conv_general_dilated)
  ref = nn.Conv(**kwargs)
  variables = ref.init(jax.random.key(0), x)
  np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x), rtol=1e-5,
                             atol=1e-5)
  cot = jnp.asarray(np.random.default_rng(8).normal(size=(2, 10, 7, 6)), jnp.float32)
  loss = lambda m: (lambda v, a: jnp.sum(m.apply(v, a) * cot))
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(variables, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))
  # Lowered for CPU alone, `platform_dependent` keeps only the CPU branch.
  lowered = jax.jit(jax.grad(loss(ours), argnums=(0, 1))).lower(variables, x).as_text()
  assert 'dot_general' in lowered
  assert lowered.count('convolution') == {'winograd': 0, 'dots': 0, 'library': 1}[weight_grad]


def test_winograd_passes_follow_the_documented_bounds():
  """`winograd_passes` at the ResNet50 V1 FPN 512 shapes the bounds come from, and the
  convolutions it must never take."""
  one = ((1, 1), (1, 1))
  f32 = (jnp.float32, jnp.float32)
  passes = lambda x, k, dtypes=f32, strides=(1, 1), pads=one: layers.winograd_passes(
      x, k, dtypes, strides, pads, (1, 1))
  # conv3_x / conv4_x 3x3 and FPN convs at batch 2: every pass.
  assert passes((2, 64, 64, 128), (3, 3, 128, 128)) == (True, True, True)
  assert passes((2, 32, 32, 256), (3, 3, 256, 256)) == (True, True, True)
  assert passes((2, 64, 64, 128), (3, 3, 128, 64)) == (True, True, True)
  # conv2_x (64 channels) and the heads (64 -> 256 on 2048 tiles): the weight gradient only.
  assert passes((2, 128, 128, 64), (3, 3, 64, 64)) == (False, False, True)
  assert passes((2, 128, 128, 64), (3, 3, 64, 256)) == (False, False, True)
  # conv5_x at batch 2 (32 tiles, 512 channels): none; at batch 8 (128 tiles): weight gradient.
  assert passes((2, 16, 16, 512), (3, 3, 512, 512)) == (False, False, False)
  assert passes((8, 16, 16, 512), (3, 3, 512, 512)) == (False, False, True)
  # A symbolic batch (batch-polymorphic exports) counts as one image: 256 tiles at 64 x 64.
  (batch,) = jax.export.symbolic_shape('b')
  assert passes((batch, 64, 64, 128), (3, 3, 128, 128)) == (True, True, True)
  # Never: under 64 channels, bfloat16, strided, other padding, other kernel sizes.
  none = (False, False, False)
  assert passes((2, 64, 64, 32), (3, 3, 32, 128)) == none
  assert passes((2, 64, 64, 128), (3, 3, 128, 128), dtypes=(jnp.bfloat16,) * 2) == none
  assert passes((2, 64, 64, 128), (3, 3, 128, 128), strides=(2, 2)) == none
  assert passes((2, 64, 64, 128), (3, 3, 128, 128), pads=((0, 0), (0, 0))) == none
  assert passes((2, 64, 64, 128), (5, 5, 128, 128), pads=((2, 2), (2, 2))) == none


def test_winograd_inference_forward_follows_the_documented_bounds():
  """The inference forward also takes F(4x4, 3x3) on the maps and widths `winograd_passes`
  leaves to the library: conv5_x and ResNet50 V2's first upsampling at 16 x 16, one image per
  call, when the images of the call share the kernel tiles over 64 tiles or more (8 images in
  turn: yes; one image alone, or 2 x 16 tiles: no); every forward `winograd_passes` gives;
  never on 8 x 8, past 2048 channels, past 1024 tiles, under 64 channels or in bfloat16. A
  training plan keeps its own forward (conv5's:
  test_train_products_follow_the_documented_bounds)."""
  one = ((1, 1), (1, 1))
  f32 = (jnp.float32, jnp.float32)
  forward = lambda x, k, dtypes=f32: layers.winograd_inference_forward(
      x, k, dtypes, (1, 1), one, (1, 1))
  assert not forward((1, 16, 16, 512), (3, 3, 512, 512))  # one image: 16 tiles
  assert not forward((2, 16, 16, 256), (3, 3, 256, 256))  # 32 tiles
  assert forward((2, 32, 32, 256), (3, 3, 256, 256))
  assert forward((2, 64, 64, 128), (3, 3, 128, 64))
  with layers.images_sharing_kernel_tiles(8):
    assert forward((1, 16, 16, 512), (3, 3, 512, 512))
    assert forward((1, 16, 16, 2048), (3, 3, 2048, 256))
    assert not forward((1, 8, 8, 512), (3, 3, 512, 512))
    assert not forward((1, 16, 16, 4096), (3, 3, 4096, 256))
    assert not forward((2, 128, 128, 64), (3, 3, 64, 256))
    assert not forward((1, 16, 16, 32), (3, 3, 32, 512))
    assert not forward((1, 16, 16, 512), (3, 3, 512, 512), dtypes=(jnp.bfloat16,) * 2)
  with layers.images_sharing_kernel_tiles(4):
    assert forward((1, 16, 16, 512), (3, 3, 512, 512))  # 4 x 16 = 64 tiles
  with layers.images_sharing_kernel_tiles(3):
    assert not forward((1, 16, 16, 512), (3, 3, 512, 512))
  assert not forward((1, 16, 16, 512), (3, 3, 512, 512))  # the setting ends with its block
  with pytest.raises(ValueError, match='images must be >= 1'):
    with layers.images_sharing_kernel_tiles(0):
      pass
  plan = lambda x, k: layers.conv_plan(x, k, f32, (1, 1), one, (1, 1))
  assert plan((2, 16, 16, 256), (3, 3, 256, 256)) == layers.ConvPlan(
      'library', 'library', 'library', 'dots')
  with layers.images_sharing_kernel_tiles(2):
    assert plan((2, 16, 16, 256), (3, 3, 256, 256)) == layers.ConvPlan(
        'winograd', 'library', 'library', 'dots')
  assert plan((2, 32, 32, 256), (3, 3, 256, 256)) == layers.ConvPlan(
      'winograd', 'winograd', 'winograd', 'winograd')


def test_dense_conv_infers_through_winograd_and_trains_through_the_library():
  """A convolution inside the inference bounds only (256 -> 256 at 16 x 16, batch 2, its
  kernel tiles shared by 2 such calls): its inference output is F(4x4, 3x3)'s (no library
  convolution lowered, the library's values to F(4x4, 3x3)'s rounding), its differentiated
  forward and input gradient the library's (two convolutions lowered), with the library's
  gradients."""
  rng = np.random.default_rng(21)
  x = jnp.asarray(rng.normal(size=(2, 16, 16, 256)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 256, 256)) / 48, jnp.float32)
  dn = ('NHWC', 'HWIO', 'NHWC')
  ours = lambda a, k: layers.conv_general_dilated(a, k, (1, 1), 'SAME', dimension_numbers=dn)
  library = lambda a, k: jax.lax.conv_general_dilated(a, k, (1, 1), 'SAME',
                                                      dimension_numbers=dn)
  ref = library(x, kernel)
  with layers.images_sharing_kernel_tiles(2):
    np.testing.assert_allclose(ours(x, kernel), ref, rtol=0,
                               atol=2e-5 * float(np.max(np.abs(ref))))
    assert np.max(np.abs(ours(x, kernel[::-1, ::-1]) - ref)) > 1e-2
    assert jax.jit(ours).lower(x, kernel).as_text().count('convolution') == 0
  # 32 tiles alone: the library's (a new function: jit's cache does not see the setting).
  alone = lambda a, k: layers.conv_general_dilated(a, k, (1, 1), 'SAME', dimension_numbers=dn)
  assert jax.jit(alone).lower(x, kernel).as_text().count('convolution') == 1
  cot = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
  loss = lambda conv: (lambda a, k: jnp.sum(jnp.sin(conv(a, k)) * cot))
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(x, kernel)
  g_ref = jax.grad(loss(library), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_ours, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))
  training = jax.jit(jax.grad(loss(ours), argnums=(0, 1))).lower(x, kernel).as_text()
  assert training.count('convolution') == 2  # the forward and the input gradient


def _bn_pair(fast_variance, dtype):
  """layers.BatchNorm and nn.BatchNorm with the same settings, and variables with a scale,
  a bias and running statistics that are not the initial ones."""
  kwargs = dict(use_running_average=False, momentum=0.9, epsilon=1e-3, dtype=dtype,
                param_dtype=jnp.float32, use_fast_variance=fast_variance)
  rng = np.random.default_rng(3)
  c = 6
  variables = {'params': {'scale': jnp.asarray(rng.uniform(0.5, 2, c), jnp.float32),
                          'bias': jnp.asarray(rng.normal(size=c), jnp.float32)},
               'batch_stats': {'mean': jnp.asarray(rng.normal(size=c), jnp.float32),
                               'var': jnp.asarray(rng.uniform(0.5, 2, c), jnp.float32)}}
  x = jnp.asarray(rng.normal(3.0, 2.0, size=(2, 5, 7, c)), dtype)  # mean far from 0
  return layers.BatchNorm(**kwargs), nn.BatchNorm(**kwargs), variables, x


@pytest.mark.parametrize('fast_variance', [False, True])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_batch_norm_matches_flax_values_statistics_and_gradients(fast_variance, dtype):
  ours, ref, variables, x = _bn_pair(fast_variance, dtype)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  # Same variable tree at init.
  init = jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x))
  assert init == jax.tree.map(jnp.shape, ref.init(jax.random.key(0), x))

  def loss(module):
    def f(params, x):
      y, updates = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                                mutable=['batch_stats'])
      # A loss that weights every pixel and channel differently, so no gradient term cancels.
      w = jnp.sin(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
      return jnp.sum(w * y.astype(jnp.float32) ** 2), (y, updates['batch_stats'])
    return f

  (l_ours, (y_ours, stats_ours)), g_ours = jax.value_and_grad(
      loss(ours), argnums=(0, 1), has_aux=True)(variables['params'], x)
  (l_ref, (y_ref, stats_ref)), g_ref = jax.value_and_grad(
      loss(ref), argnums=(0, 1), has_aux=True)(variables['params'], x)
  assert y_ours.dtype == y_ref.dtype == dtype
  np.testing.assert_allclose(np.float32(y_ours), np.float32(y_ref), rtol=tol, atol=tol)
  np.testing.assert_allclose(l_ours, l_ref, rtol=tol)
  for k in ('mean', 'var'):
    np.testing.assert_allclose(stats_ours[k], stats_ref[k], rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    assert a.dtype == b.dtype
    scale = float(np.max(np.abs(np.float32(b))))
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol * scale)


def test_batch_norm_takes_its_written_gradient_in_training_only():
  """The training pass goes through `batch_norm_train`'s VJP; inference is nn.BatchNorm's own
  arithmetic (the same values to the bit)."""
  ours, ref, variables, x = _bn_pair(False, jnp.float32)
  train = jax.make_jaxpr(lambda v: ours.apply(v, x, mutable=['batch_stats']))(variables)
  assert 'custom_vjp_call' in str(train)
  infer = dict(use_running_average=True, epsilon=1e-3)
  assert 'custom_vjp_call' not in str(
      jax.make_jaxpr(lambda v: layers.BatchNorm(**infer).apply(v, x))(variables))
  y_ours = layers.BatchNorm(**infer).apply(variables, x)
  y_ref = nn.BatchNorm(**infer).apply(variables, x)
  np.testing.assert_array_equal(y_ours, y_ref)


@pytest.mark.parametrize('kernel,strides,padding,use_bias', [
    ((3, 3), (1, 1), 'SAME', True), ((1, 1), (2, 2), 'VALID', True),
    ((7, 7), (2, 2), ((3, 3), (3, 3)), False), ((3, 3), (2, 2), 'SAME', True)])
def test_conv_matches_flax_parameters_and_values(kernel, strides, padding, use_bias):
  """`Conv` against `nn.Conv(conv_general_dilated=layers.conv_general_dilated)`: the same
  parameter tree and initial values from the same key, the same output; `add_bias=False` is
  the output less the bias."""
  x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 9, 10, 3)), jnp.float32)
  kwargs = dict(strides=strides, padding=padding, use_bias=use_bias)
  ref = nn.Conv(5, kernel, conv_general_dilated=layers.conv_general_dilated, **kwargs)
  ours = layers.Conv(5, kernel, **kwargs)
  variables = ref.init(jax.random.key(4), x)
  ours_init = ours.init(jax.random.key(4), x)
  assert jax.tree.map(jnp.shape, ours_init) == jax.tree.map(jnp.shape, variables)
  for a, b in zip(jax.tree.leaves(ours_init), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
  variables = jax.tree.map(lambda a: a + 0.1, variables)
  y = ours.apply(variables, x)
  np.testing.assert_array_equal(y, ref.apply(variables, x))
  no_bias = ours.apply(variables, x, add_bias=False)
  bias = variables['params']['bias'] if use_bias else 0.0
  np.testing.assert_allclose(no_bias + bias, y, rtol=1e-6, atol=1e-6)
  bias_parameter = ours.apply(variables, x, method=lambda m, a: (m(a), m.bias_parameter())[1])
  if use_bias:
    np.testing.assert_array_equal(bias_parameter, variables['params']['bias'])
  else:
    assert bias_parameter is None


def test_batch_norm_input_bias_is_the_batch_norm_of_the_sum():
  """`input_bias=b` on x: in training the output of x + b (the batch mean removes b) and the
  running mean of x + b; in inference b is added."""
  ours, ref, variables, x = _bn_pair(False, jnp.float32)
  b = jnp.asarray(np.random.default_rng(8).normal(size=x.shape[-1]) * 5, jnp.float32)
  y, stats = ours.apply(variables, x, input_bias=b, mutable=['batch_stats'])
  y_ref, stats_ref = ref.apply(variables, x + b, mutable=['batch_stats'])
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for k in ('mean', 'var'):
    np.testing.assert_allclose(stats['batch_stats'][k], stats_ref['batch_stats'][k],
                               rtol=1e-5, atol=1e-5)
  infer = dict(use_running_average=True, epsilon=1e-3)
  np.testing.assert_allclose(layers.BatchNorm(**infer).apply(variables, x, input_bias=b),
                             nn.BatchNorm(**infer).apply(variables, x + b), rtol=1e-6, atol=1e-6)


class _ConvBatchNorm(nn.Module):
  """A convolution with a bias and a batch norm: `conv_then_batch_norm` (fused=True) or the
  two modules one after the other."""
  fused: bool
  transpose: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    if self.transpose:
      conv = layers.ConvTranspose2D(4, (3, 3), (2, 2), name='conv')
    else:
      conv = layers.Conv(4, (3, 3), padding='SAME', name='conv')
    bn = layers.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3,
                          use_fast_variance=False, name='bn')
    if self.fused:
      return layers.conv_then_batch_norm(conv, bn, x, train)
    return bn(conv(x))


@pytest.mark.parametrize('transpose', [False, True])
def test_conv_then_batch_norm_equals_the_two_layers(transpose):
  """In training: the same output, running statistics and gradients as the convolution then
  the batch norm, except the convolution's bias, whose gradient is exactly zero (the two layers'
  is zero up to rounding); the bias is not added to the convolution's output. In inference:
  the two layers' output to the bit."""
  x = jnp.asarray(np.random.default_rng(9).normal(size=(2, 6, 7, 3)), jnp.float32)
  fused, plain = _ConvBatchNorm(True, transpose), _ConvBatchNorm(False, transpose)
  variables = plain.init(jax.random.key(0), x, train=False)
  assert jax.tree.map(jnp.shape, fused.init(jax.random.key(0), x, train=False)) == (
      jax.tree.map(jnp.shape, variables))
  variables = {'params': jax.tree.map(lambda a: a + 0.3, variables['params']),
               'batch_stats': variables['batch_stats']}

  def loss(module):
    def f(params, x):
      y, updates = module.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                x, train=True, mutable=['batch_stats'])
      w = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
      return jnp.sum(w * y ** 2), (y, updates['batch_stats'])
    return f

  (_, (y, stats)), grads = jax.value_and_grad(loss(fused), argnums=(0, 1),
                                              has_aux=True)(variables['params'], x)
  (_, (y_ref, stats_ref)), grads_ref = jax.value_and_grad(loss(plain), argnums=(0, 1),
                                                          has_aux=True)(variables['params'], x)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  conv_bias = grads[0]['conv']['bias']
  np.testing.assert_array_equal(conv_bias, np.zeros_like(conv_bias))
  scale = float(np.max(np.abs(grads_ref[0]['conv']['kernel'])))
  np.testing.assert_allclose(grads_ref[0]['conv']['bias'], 0.0, atol=1e-4 * scale)
  for path in (('conv', 'kernel'), ('bn', 'scale'), ('bn', 'bias')):
    a, b = grads[0][path[0]][path[1]], grads_ref[0][path[0]][path[1]]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))
  np.testing.assert_allclose(grads[1], grads_ref[1], rtol=1e-4,
                             atol=1e-4 * float(np.max(np.abs(grads_ref[1]))))
  # The training program adds no bias to the convolution's output: an activation-sized add less.
  full_adds = lambda module: len(re.findall(
      r'f32\[2,\d+,\d+,4\] = add ',
      str(jax.make_jaxpr(lambda p: loss(module)(p, x))(variables['params']))))
  assert full_adds(fused) == full_adds(plain) - 1
  np.testing.assert_array_equal(fused.apply(variables, x, train=False),
                                plain.apply(variables, x, train=False))


@pytest.mark.parametrize('values', ['normal', 'ties'])
@pytest.mark.parametrize('window,strides,hw', [
    ((3, 3), (2, 2), (11, 9)), ((3, 3), (2, 2), (12, 10)), ((2, 2), (2, 2), (8, 7)),
    ((3, 3), (1, 1), (6, 5)), ((3, 2), (2, 3), (9, 11)), ((1, 2), (3, 2), (7, 8))])
def test_max_pool_values_and_gradient_equal_flax(values, window, strides, hw):
  rng = np.random.default_rng(5)
  shape = (2,) + hw + (3,)
  if values == 'normal':
    x = rng.standard_normal(shape)
  else:  # few distinct values: ties inside most windows, each cotangent to one element
    x = rng.integers(0, 3, shape)
  x = jnp.asarray(x, jnp.float32)
  ref = lambda a: nn.max_pool(a, window, strides=strides, padding='VALID')
  ours = lambda a: layers.max_pool(a, window, strides)
  w = jnp.asarray(rng.standard_normal(ref(x).shape), jnp.float32)
  np.testing.assert_array_equal(ours(x), ref(x))
  grad = lambda f: jax.grad(lambda a: jnp.sum(f(a) * w))(x)
  np.testing.assert_allclose(grad(ours), grad(ref), rtol=1e-6, atol=1e-6)
  # Each output's cotangent lands on exactly one input element.
  np.testing.assert_allclose(jnp.sum(grad(ours)), jnp.sum(w), rtol=1e-5)


@pytest.mark.parametrize('hw,k,stride,pads', [((9, 12), 3, (1, 1), ((1, 1), (1, 1))),
                                              ((16, 15), 3, (2, 2), ((0, 1), (1, 1))),
                                              ((12, 9), 1, (2, 2), ((0, 0), (0, 0))),
                                              ((7, 8), 5, (1, 2), ((2, 2), (1, 3))),
                                              ((6, 6), 1, (1, 1), ((0, 0), (0, 0)))])
def test_tap_products_equal_the_library_and_can_fail(hw, k, stride, pads):
  """`conv_tap_products` and its input gradient against the library convolution and its
  transpose; a kernel with its taps transposed is caught."""
  rng = np.random.default_rng(11)
  x = jnp.asarray(rng.normal(size=(2,) + hw + (5,)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 5, 4)), jnp.float32)
  conv = lambda a, b: jax.lax.conv_general_dilated(a, b, stride, pads,
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y = layers.conv_tap_products(x, w, stride, pads)
  np.testing.assert_allclose(y, conv(x, w), rtol=1e-5, atol=1e-4)
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  (ref,) = jax.linear_transpose(lambda a: conv(a, w), x)(g)
  ours = layers.conv_input_grad_tap_products(g, w, stride, pads, x.shape)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)
  if k > 1:
    flipped = w.transpose(1, 0, 2, 3)
    assert np.max(np.abs(layers.conv_tap_products(x, flipped, stride, pads) - conv(x, w))) > 1e-2
    assert np.max(np.abs(
        layers.conv_input_grad_tap_products(g, flipped, stride, pads, x.shape) - ref)) > 1e-2


@pytest.mark.parametrize('k,stride', [(3, 1), (1, 1), (1, 2)])
def test_dense_conv_trains_through_tap_products_and_infers_through_the_library(
    monkeypatch, k, stride):
  """With the tap-product bounds lowered to this small convolution: the same outputs and
  gradients (input, kernel, bias) as the plain `nn.Conv`; the differentiated program lowered
  for CPU has no library convolution left, while inference keeps the library forward."""
  monkeypatch.setattr(layers, 'TRAIN_PRODUCTS_MIN_CHANNEL_PAIRS', 1)
  monkeypatch.setattr(layers, 'TRAIN_PRODUCTS_MAX_PIXELS', 10**9)
  monkeypatch.setattr(layers, 'TRAIN_PRODUCTS_MIN_POINTWISE_FLOPS', 0)
  monkeypatch.setattr(layers, 'WINOGRAD_MIN_CHANNELS', 10**9)
  x = jnp.asarray(np.random.default_rng(12).normal(size=(2, 10, 7, 5)), jnp.float32)
  kwargs = dict(features=6, kernel_size=(k, k), strides=stride, padding='SAME')
  ours = nn.Conv(**kwargs, conv_general_dilated=layers.conv_general_dilated)
  ref = nn.Conv(**kwargs)
  variables = ref.init(jax.random.key(0), x)
  np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x), rtol=1e-5,
                             atol=1e-5)
  cot = jnp.asarray(np.random.default_rng(13).normal(size=ref.apply(variables, x).shape),
                    jnp.float32)
  loss = lambda m: (lambda v, a: jnp.sum(jnp.sin(m.apply(v, a)) * cot))
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(variables, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))
  # Lowered for CPU alone, `platform_dependent` keeps only the CPU branch.
  training = jax.jit(jax.grad(loss(ours), argnums=(0, 1))).lower(variables, x).as_text()
  assert training.count('convolution') == 0
  inference = jax.jit(ours.apply).lower(variables, x).as_text()
  assert inference.count('convolution') == 1


def test_stems_weight_gradient_follows_the_documented_bounds(monkeypatch):
  """At full size (batch 2, 512 px): the ResNet 7x7 stride-2 stem (3 -> 64) keeps the library's
  weight gradient, the Hourglass stem (3 -> 128) and MobileNetV2's 3x3 stem (3 -> 32) get the
  one product of the windows side by side."""
  monkeypatch.setattr(layers, 'DOTS_MIN_OUTPUT_PIXELS', 64 * 64)
  f32 = (jnp.float32, jnp.float32)
  plan = lambda x, kernel, pads: layers.conv_plan(x, kernel, f32, (2, 2), pads, (1, 1))
  assert plan((2, 518, 518, 3), (7, 7, 3, 64), ((0, 0), (0, 0))).weight_grad == 'library'
  assert plan((2, 512, 512, 3), (7, 7, 3, 128), ((3, 3), (3, 3))).weight_grad == 'dots'
  assert plan((2, 512, 512, 3), (3, 3, 3, 32), ((0, 1), (0, 1))).weight_grad == 'dots'
  assert plan((2, 518, 518, 16), (7, 7, 16, 64), ((0, 0), (0, 0))).weight_grad == 'dots'


def test_train_products_follow_the_documented_bounds():
  """`conv_plan` at the shapes the bounds come from (batch 2): ResNet conv5's 3x3 512 -> 512
  at 16 x 16 and ResNet50 V2's 2048 -> 256 get products in training, not at 64 x 64 nor at
  256 x 256 channels; 1x1 kernels from the pointwise bound on, a strided one's forward from the
  channel-pair bound on; inference takes F(4x4, 3x3) at conv5 where the kernel tiles are shared
  over 64 tiles (`winograd_inference_forward`) and keeps the library's forward for the 1x1
  kernels."""
  f32 = (jnp.float32, jnp.float32)
  plan = lambda x, kernel, strides=(1, 1): layers.conv_plan(
      x, kernel, f32, strides, ((kernel[0] // 2,) * 2, (kernel[1] // 2,) * 2), (1, 1))
  conv5 = plan((2, 16, 16, 512), (3, 3, 512, 512))
  assert conv5 == layers.ConvPlan('library', 'products', 'products', 'dots')
  with layers.images_sharing_kernel_tiles(2):  # 2 x 32 tiles share the kernel tiles
    assert plan((2, 16, 16, 512), (3, 3, 512, 512)) == conv5._replace(forward='winograd')
  assert plan((2, 16, 16, 2048), (3, 3, 2048, 256)).train_forward == 'products'
  assert plan((16, 16, 16, 512), (3, 3, 512, 512)).train_forward == 'library'  # 4096 pixels
  assert plan((2, 64, 64, 512), (3, 3, 512, 512)).input_grad == 'library'
  assert plan((2, 16, 16, 256), (3, 3, 256, 256)).input_grad == 'library'
  assert plan((2, 16, 16, 2048), (1, 1, 2048, 512)) == layers.ConvPlan(
      'library', 'products', 'products', 'dots')
  assert plan((2, 32, 32, 1024), (1, 1, 1024, 2048), (2, 2)) == layers.ConvPlan(
      'library', 'products', 'products', 'dots')
  assert plan((2, 128, 128, 256), (1, 1, 256, 128), (2, 2)) == layers.ConvPlan(
      'library', 'library', 'products', 'dots')
  # The demo's 1x1 kernels (96 px ResNet-18 FPN, under 1.2 MFLOP of weight gradient; this
  # module's fixture gives every size the weight-gradient products).
  demo = plan((8, 12, 12, 64), (1, 1, 64, 32))
  assert (demo.forward, demo.train_forward, demo.input_grad) == ('library',) * 3


def test_upsample_is_repeat():
  x = jnp.arange(4.0).reshape(1, 2, 2, 1)
  np.testing.assert_array_equal(layers.upsample_nearest_2x(x)[0, :, :, 0],
                                [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
