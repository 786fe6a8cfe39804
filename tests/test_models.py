"""Tests for the CenterNet model, heads and registry (centernet_jax.models)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import models
from centernet_jax import performance
from centernet_jax.config_base import base_config
from centernet_jax.models import layers
from centernet_jax.models import resnet_v1_fpn

from tests import helpers




def _model_config(depth=18, width=0.25, head_channels=16, dtype='float32'):
  c = base_config().model
  c.depth = depth
  c.width_multiplier = width
  c.head_channels = head_channels
  c.dtype = dtype
  return c


def _images(batch=2, size=64, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3), jnp.float32, 0, 255)


def _init(model, images):
  """`model.init(key 0, images, train=False)` as training runs it: one compiled program
  (`performance.run_init`). Run op by op, the file's first init compiled every random-number op
  on its own (51 s against 8 s for the depth-18 model on this 2-core CPU)."""
  shape = images.shape
  return performance.run_init(
      lambda rng: model.init(rng, jnp.zeros(shape, jnp.float32), train=False), jax.random.key(0))


@pytest.mark.parametrize('depth,trainable_fe,bn_stats', [
    (50, 24_809_920, 53_632),
    (101, 43_828_160, 105_856),
])
def test_zoo_parameter_counts(depth, trainable_fe, bn_stats):
  """docs/odapi_reference.md 3.7: COCO 90 classes, 512x512; BN stats = moving mean + variance."""
  model = models.build_model(_model_config(depth, 1.0, 256), 90)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 512, 512, 3)), train=False))
  params = variables['params']
  heads = {k: v for k, v in params.items() if k != 'backbone'}
  assert helpers.count(params['backbone']) == trainable_fe
  assert helpers.count(heads) == 467_294
  assert helpers.count(params) == trainable_fe + 467_294
  assert helpers.count(variables['batch_stats']) == bn_stats
  assert set(variables['batch_stats']) == {'backbone'}


@pytest.mark.slow  # the file's first inits compiled (depth 18 and 50)
@pytest.mark.parametrize('depth', [18, 50])
def test_output_shapes_and_dtypes(depth):
  num_classes = 3
  model = models.build_model(_model_config(depth, 0.25, 16), num_classes)
  images = _images()
  variables = _init(model, images)
  outputs = model.apply(variables, images, train=False)
  assert isinstance(outputs, list) and len(outputs) == 1
  out = outputs[0]
  assert set(out) == {'object_center', 'box/scale', 'box/offset'}
  assert out['object_center'].shape == (2, 16, 16, num_classes)
  assert out['box/scale'].shape == (2, 16, 16, 2)
  assert out['box/offset'].shape == (2, 16, 16, 2)
  for v in out.values():
    assert v.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(v)))
  # All params and BN statistics are float32.
  for leaf in jax.tree_util.tree_leaves(variables):
    assert leaf.dtype == jnp.float32


def test_heatmap_bias_init_and_head_init():
  model = models.build_model(_model_config(18, 0.25, 16), 5)
  params = _init(model, _images(1))['params']
  np.testing.assert_allclose(params['object_center_0']['conv_1x1']['bias'], -2.19 * np.ones(5))
  for name in ('box_scale_0', 'box_offset_0'):
    np.testing.assert_array_equal(params[name]['conv_1x1']['bias'], np.zeros(2))
  for name in ('object_center_0', 'box_scale_0', 'box_offset_0'):
    np.testing.assert_array_equal(params[name]['conv_3x3']['bias'], np.zeros(16))
    kernel = np.asarray(params[name]['conv_3x3']['kernel'])
    assert kernel.shape == (3, 3, 16, 16)  # FPN out 64 * 0.25 = 16 channels in
    # Glorot uniform: |w| <= sqrt(6 / (fan_in + fan_out)).
    limit = np.sqrt(6.0 / (9 * 16 + 9 * 16))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.5 * limit


class _TwoOutputBackbone(nn.Module):
  """Stand-in for the hourglass: two stride-4 outputs."""

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(8, (4, 4), strides=(4, 4), name='stem')(x)
    return [nn.relu(x), nn.Conv(8, (1, 1), name='second')(x)]


def test_heads_not_shared_between_outputs():
  model = models.CenterNet(backbone=_TwoOutputBackbone(), normalize=lambda x: x / 255.0,
                           num_classes=4, head_channels=8)
  images = _images(1, 32)
  variables = _init(model, images)
  params = variables['params']
  for key in ('object_center', 'box_scale', 'box_offset'):
    a, b = params[f'{key}_0'], params[f'{key}_1']
    assert not np.allclose(a['conv_3x3']['kernel'], b['conv_3x3']['kernel'])
  outputs = model.apply(variables, images, train=False)
  assert len(outputs) == 2
  assert outputs[1]['object_center'].shape == (1, 8, 8, 4)


def test_depthwise_heads():
  c = _model_config(18, 0.25, 16)
  c.depthwise_heads = True
  model = models.build_model(c, 3)
  params = _init(model, _images(1))['params']
  head = params['object_center_0']
  assert set(head) == {'depthwise_3x3', 'pointwise_1x1', 'conv_1x1'}
  assert head['depthwise_3x3']['kernel'].shape == (3, 3, 1, 16)
  assert 'bias' not in head['depthwise_3x3']
  assert head['pointwise_1x1']['kernel'].shape == (1, 1, 16, 16)
  assert head['pointwise_1x1']['bias'].shape == (16,)


def test_bfloat16_mode():
  images = _images()
  f32 = models.build_model(_model_config(18, 0.25, 16, 'float32'), 3)
  bf16 = models.build_model(_model_config(18, 0.25, 16, 'bfloat16'), 3)
  variables = _init(f32, images)
  variables_bf16 = _init(bf16, images)
  for leaf in jax.tree_util.tree_leaves(variables_bf16):
    assert leaf.dtype == jnp.float32  # params and BN stats stay float32
  out32 = f32.apply(variables, images, train=False)[0]
  out16, new_vars = bf16.apply(variables, images, train=True, mutable=['batch_stats'])
  for leaf in jax.tree_util.tree_leaves(new_vars):
    assert leaf.dtype == jnp.float32
  out16 = bf16.apply(variables, images, train=False)[0]
  for key in out32:
    assert out16[key].dtype == jnp.float32
    scale = np.abs(np.asarray(out32[key])).max() + 1e-3
    assert np.abs(np.asarray(out16[key]) - np.asarray(out32[key])).max() < 0.1 * scale


def _conv_input_dtypes(model, variables, images) -> list[str]:
  """The input dtype of every convolution the forward pass runs, in program order (of a
  per-platform choice, `lax.platform_dependent`, the default branch: the library call)."""
  def convs(jaxpr):
    for e in jaxpr.eqns:
      if e.primitive.name == 'conv_general_dilated':
        yield str(e.invars[0].aval.dtype)
      elif e.primitive.name == 'cond' and 'branches_platforms' in e.params:
        default = e.params['branches_platforms'].index(None)
        yield from convs(e.params['branches'][default].jaxpr)
  return list(convs(jax.make_jaxpr(lambda v: model.apply(v, images, train=False))(
      variables).jaxpr))


def test_head_dtype_float32_under_a_bfloat16_backbone():
  """By default (`model.head_dtype='float32'`) a bfloat16 model keeps its heads in float32;
  `head_dtype=''` follows `model.dtype`, all-bfloat16."""
  images = _images(batch=1)
  config = _model_config(18, 0.25, 16, 'bfloat16')
  variables = _init(models.build_model(config, 3), images)
  mixed = _conv_input_dtypes(models.build_model(config, 3), variables, images)
  config.head_dtype = ''
  all_bf16 = _conv_input_dtypes(models.build_model(config, 3), variables, images)
  config.head_dtype = 'bfloat16'
  assert _conv_input_dtypes(models.build_model(config, 3), variables, images) == all_bf16
  num_head_convs = 2 * 3  # 3x3 + 1x1 in each of the three heads
  assert set(all_bf16) == {'bfloat16'}
  assert mixed[:-num_head_convs] == all_bf16[:-num_head_convs]  # the backbone: bfloat16
  assert mixed[-num_head_convs:] == ['float32'] * num_head_convs


def test_batch_stats_update_only_in_train_mode():
  model = models.build_model(_model_config(18, 0.25, 16), 3)
  images = _images()
  variables = _init(model, images)
  stats = variables['batch_stats']
  _, new_vars = model.apply(variables, images, train=True, mutable=['batch_stats'])
  new_stats = new_vars['batch_stats']
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), stats, new_stats)
  assert all(jax.tree_util.tree_leaves(changed))
  # Keras momentum semantics: moving = 0.99 * moving + 0.01 * batch (init mean 0, var 1).
  stem_mean = np.asarray(new_stats['backbone']['resnet']['conv1_bn']['mean'])
  stem_var = np.asarray(new_stats['backbone']['resnet']['conv1_bn']['var'])
  conv1 = nn.Conv(16, (7, 7), strides=(2, 2), padding='VALID')
  x = jnp.pad(resnet_v1_fpn.normalize_input(images), ((0, 0), (3, 3), (3, 3), (0, 0)))
  y = conv1.apply({'params': variables['params']['backbone']['resnet']['conv1_conv']}, x)
  np.testing.assert_allclose(stem_mean, 0.01 * np.asarray(y.mean((0, 1, 2))), rtol=1e-3,
                             atol=1e-4)
  np.testing.assert_allclose(stem_var, 0.99 + 0.01 * np.asarray(y.var((0, 1, 2))), rtol=1e-3)
  # Eval mode: no mutable collection needed, stats untouched, output independent of batch.
  out_a = model.apply(variables, images, train=False)[0]['object_center']
  out_b = model.apply(variables, images[:1], train=False)[0]['object_center']
  np.testing.assert_allclose(out_a[:1], out_b, rtol=1e-4, atol=1e-4)
  _, eval_vars = model.apply(variables, images, train=False, mutable=['batch_stats'])
  same = jax.tree_util.tree_map(lambda a, b: np.array_equal(a, b), stats,
                                eval_vars['batch_stats'])
  assert all(jax.tree_util.tree_leaves(same))


def test_caffe_normalization_known_pixel():
  norm = models.input_normalization('resnet_v1_fpn')
  assert norm is resnet_v1_fpn.normalize_input
  pixel = jnp.asarray([[[[10.0, 20.0, 30.0]]]])  # R, G, B
  out = np.asarray(norm(pixel))[0, 0, 0]
  np.testing.assert_allclose(out, [30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68], rtol=1e-6)
  assert norm(jnp.zeros((1, 1, 1, 3), jnp.uint8)).dtype == jnp.float32


def test_registry_errors():
  c = _model_config()
  with pytest.raises(ValueError, match='Unknown backbone'):
    c.backbone = 'nope'
    models.build_model(c, 3)
  with pytest.raises(ValueError, match='model.dtype'):
    models.build_model(_model_config(dtype='float16'), 3)
  with pytest.raises(ValueError, match='num_classes'):
    models.build_model(_model_config(), 0)
  assert 'resnet_v1_fpn' in models.BACKBONES


def _hashable(value):
  """`value` with its lists turned into tuples (a namedtuple such as lax's
  `ConvDimensionNumbers` is kept as it is)."""
  try:
    hash(value)
    return value
  except TypeError:
    return tuple(_hashable(v) for v in value)


@pytest.mark.parametrize('backbone,depth,width', [('resnet_v1_fpn', 18, 0.25),
                                                  ('mobilenet_v2_fpn', 18, 0.35),
                                                  ('resnet_v2', 50, 0.125)])
def test_dense_convs_as_matrix_products_keep_outputs_and_gradients(backbone, depth, width,
                                                                   monkeypatch):
  """Every dense convolution of the model goes through `layers.conv_general_dilated` (CPU
  weight gradients as matrix products), and each distinct call it receives there gives the
  library convolution's output and both gradients.

  The calls are recorded while a training forward pass and its gradient are traced (not
  compiled): there must be one per 4-D kernel that is not a `DepthwiseConv`'s, so none bypasses
  the wrapper. Each distinct call (shapes, strides, padding, dilations) is then run on random
  values, wrapper against library, forward and backward; the network is a composition of
  these calls and of code that is the same in both, so by the chain rule its outputs and
  parameter gradients are the library's too. (Compiling the whole network twice, once with
  each convolution function, took 30-80 s per backbone on this 2-core CPU; this takes 9-13 s.)
  """
  monkeypatch.setattr(layers, 'DOTS_MIN_OUTPUT_PIXELS', 0)  # these maps are small
  c = _model_config(depth, width, 16)
  c.backbone = backbone
  model = models.build_model(c, 3)
  images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = helpers.shapes(model, 64)
  dense, depthwise = {}, []
  products, library = layers.conv_general_dilated, jax.lax.conv_general_dilated

  def recording_dense(lhs, rhs, window_strides, padding, **kwargs):
    key = (lhs.shape, rhs.shape, lhs.dtype.name, _hashable(window_strides),
           _hashable(padding), tuple(sorted((k, _hashable(v)) for k, v in kwargs.items())))
    dense[key] = dense.get(key, 0) + 1
    return products(lhs, rhs, window_strides, padding, **kwargs)

  real_depthwise = layers.depthwise_conv

  def recording_depthwise(x, kernel, stride=1):
    depthwise.append(kernel.shape)
    return real_depthwise(x, kernel, stride)

  monkeypatch.setattr(layers, 'conv_general_dilated', recording_dense)
  monkeypatch.setattr(layers, 'depthwise_conv', recording_depthwise)

  def loss(params, others, x):
    outs, _ = model.apply({**others, 'params': params}, x, train=True, mutable=['batch_stats'])
    return sum(jnp.sum(jnp.tanh(v)) for out in outs for v in out.values())

  others = {k: v for k, v in variables.items() if k != 'params'}
  jax.eval_shape(jax.grad(loss), variables['params'], others, images)
  kernels = [x for p, x in jax.tree_util.tree_flatten_with_path(variables['params'])[0]
             if getattr(p[-1], 'key', None) == 'kernel' and x.ndim == 4]
  # One forward trace (the gradient's) records each convolution once.
  assert sum(dense.values()) + len(depthwise) == len(kernels), (
      sum(dense.values()), len(depthwise), len(kernels))
  assert len(depthwise) == (sum(k.shape[2] == 1 and k.shape[3] > 1 for k in kernels)
                            if backbone == 'mobilenet_v2_fpn' else 0)

  calls = [dict(zip(('lhs', 'rhs', 'dtype', 'strides', 'padding', 'kwargs'), key))
           for key in sorted(dense, key=str)]
  rng = np.random.default_rng(0)
  args = [(rng.normal(size=call['lhs']).astype(np.float32),
           rng.normal(size=call['rhs']).astype(np.float32)) for call in calls]

  def run(conv, lhs, rhs, call):
    kwargs = dict(call['kwargs'])
    f = lambda a, b: conv(a, b, call['strides'], call['padding'], **kwargs)
    out, vjp = jax.vjp(f, lhs, rhs)
    return (out, *vjp(jnp.tanh(out)))

  @jax.jit
  def both(args):
    return [(run(products, lhs, rhs, call), run(library, lhs, rhs, call))
            for (lhs, rhs), call in zip(args, calls)]

  for call, (ours, ref) in zip(calls, both(args)):
    for name, a, b in zip(('output', 'input gradient', 'kernel gradient'), ours, ref):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))) + 1e-6,
                                 err_msg=f'{name} of {call}')
