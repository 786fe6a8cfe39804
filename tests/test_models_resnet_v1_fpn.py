"""Tests for the ResNet v1 FPN backbone (centernet_jax.models.resnet_v1_fpn)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax.models import resnet_v1_fpn as R

from tests import helpers


def _backbone_shapes(depth, width=1.0, size=64):
  return helpers.shapes(R.ResNetV1FPN(depth=depth, width_multiplier=width), size)


def test_scaled_channels():
  assert R.scaled_channels(64, 1.0) == 64
  assert R.scaled_channels(2048, 0.5) == 1024
  assert R.scaled_channels(64, 0.1) == 8  # at least 8
  assert R.scaled_channels(100, 0.333) == 33  # rounded


@pytest.mark.parametrize('depth', [18, 34, 50, 101])
def test_module_names_follow_keras_order(depth):
  variables = _backbone_shapes(depth)
  resnet = variables['params']['resnet']
  order = R.keras_weighted_layer_order(depth)
  assert len(order) == len(set(order))
  assert set(order) == set(resnet)
  bn_names = {n for n in order if n.endswith('_bn')}
  assert bn_names == set(variables['batch_stats']['resnet'])
  fpn = {k for k in variables['params'] if k != 'resnet'}
  assert fpn == set(R.FPN_CHECKPOINT_ORDER)
  if depth == 50:
    assert len(order) == 106  # docs/odapi_reference.md 3.4: indices 0..105
    assert order[6] == 'conv2_block1_0_conv' and order[105] == 'conv5_block3_3_bn'


def test_zoo_layer_shapes_resnet50():
  p = _backbone_shapes(50)['params']
  assert p['resnet']['conv1_conv']['kernel'].shape == (7, 7, 3, 64)
  assert p['resnet']['conv1_conv']['bias'].shape == (64,)
  assert p['resnet']['conv2_block1_0_conv']['kernel'].shape == (1, 1, 64, 256)
  assert p['resnet']['conv3_block1_1_conv']['kernel'].shape == (1, 1, 256, 128)
  assert p['resnet']['conv5_block3_3_conv']['kernel'].shape == (1, 1, 512, 2048)
  # FPN, docs/odapi_reference.md 3.5, K = 1..10.
  expected = [(1, 1, 2048, 256), (1, 1, 1024, 256), (3, 3, 256, 128), (128,),
              (1, 1, 512, 128), (3, 3, 128, 64), (64,), (1, 1, 256, 64), (3, 3, 64, 64),
              (64,)]
  for name, shape in zip(R.FPN_CHECKPOINT_ORDER, expected):
    leaf = p[name]['kernel'] if 'kernel' in p[name] else p[name]['scale']
    assert leaf.shape == shape, name


def test_resnet18_structure():
  p = _backbone_shapes(18)['params']['resnet']
  assert 'conv2_block1_0_conv' not in p  # identity shortcut: same shape
  for stage in (3, 4, 5):
    assert f'conv{stage}_block1_0_conv' in p
  assert p['conv3_block1_1_conv']['kernel'].shape == (3, 3, 64, 128)
  assert p['conv5_block2_2_conv']['kernel'].shape == (3, 3, 512, 512)


def test_feature_strides_and_narrow_width():
  module = R.ResNetV1(depth=50, width_multiplier=0.25)
  x = jnp.zeros((1, 64, 64, 3))
  taps = jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), x, train=False))[0]
  assert [t.shape for t in taps] == [(1, 16, 16, 64), (1, 8, 8, 128), (1, 4, 4, 256),
                                     (1, 2, 2, 512)]
  out = jax.eval_shape(lambda: R.ResNetV1FPN(depth=50, width_multiplier=0.25).init_with_output(
      jax.random.key(0), x, train=False))[0]
  assert len(out) == 1 and out[0].shape == (1, 16, 16, 16)


def test_input_size_must_be_multiple_of_32():
  with pytest.raises(ValueError, match='divisible by 32'):
    _backbone_shapes(18, 0.25, size=48)


def test_bn_epsilons():
  assert R.BACKBONE_BN_EPSILON == 1.001e-5 and R.FPN_BN_EPSILON == 1e-3


def test_matches_keras_resnet50_and_fpn():
  """Copies weights of Keras ResNet50 (+ an FPN built in Keras from docs/odapi_reference.md
  3.5) by name into the Flax model and compares inference outputs."""
  tf = pytest.importorskip('tensorflow')
  keras = tf.keras
  layers = keras.layers
  rng = np.random.default_rng(0)
  base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
  assert [l.name for l in base.layers if l.weights] == R.keras_weighted_layer_order(50)
  taps = [base.get_layer(n).output for n in
          ('conv2_block3_out', 'conv3_block4_out', 'conv4_block6_out', 'conv5_block3_out')]
  fpn_layers = []

  def add(layer):
    fpn_layers.append(layer)
    return layer

  t = add(layers.Conv2D(256, 1, padding='same', name='fpn_top_conv'))(taps[3])
  for tap, (level, lateral, out) in zip(taps[2::-1], R.FPN_LEVELS):
    lat = add(layers.Conv2D(lateral, 1, padding='same', name=f'fpn_c{level}_lateral_conv'))
    t = layers.Add()([layers.UpSampling2D(2)(t), lat(tap)])
    t = add(layers.Conv2D(out, 3, padding='same', name=f'fpn_c{level}_conv'))(t)
    t = layers.ReLU()(add(layers.BatchNormalization(epsilon=1e-3, name=f'fpn_c{level}_bn'))(t))
  keras_model = keras.Model(base.input, t)

  for layer in [l for l in base.layers if l.weights] + fpn_layers:
    w = layer.get_weights()
    if isinstance(layer, layers.BatchNormalization):
      c = w[0].shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                         rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])
    else:
      layer.set_weights([w[0], rng.normal(0, 0.05, w[1].shape)])

  module = R.ResNetV1FPN(depth=50)
  x = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  keras_in = keras.applications.resnet.preprocess_input(x.copy())
  flax_in = np.asarray(R.normalize_input(jnp.asarray(x)))
  np.testing.assert_allclose(flax_in, keras_in, atol=1e-5)
  variables = module.init(jax.random.key(0), flax_in, train=False)
  params = jax.tree_util.tree_map(np.asarray, variables['params'])
  stats = jax.tree_util.tree_map(np.asarray, variables['batch_stats'])
  for layer, (p_dst, s_dst) in ([(l, (params['resnet'], stats['resnet']))
                                 for l in base.layers if l.weights] +
                                [(l, (params, stats)) for l in fpn_layers]):
    w = layer.get_weights()
    if isinstance(layer, layers.BatchNormalization):
      assert p_dst[layer.name]['scale'].shape == w[0].shape
      p_dst[layer.name] = {'scale': w[0], 'bias': w[1]}
      s_dst[layer.name] = {'mean': w[2], 'var': w[3]}
    else:
      assert p_dst[layer.name]['kernel'].shape == w[0].shape, layer.name
      p_dst[layer.name] = {'kernel': w[0], 'bias': w[1]}
  expected = keras_model(keras_in, training=False).numpy()
  got = np.asarray(module.apply({'params': params, 'batch_stats': stats}, flax_in,
                                train=False)[0])
  assert got.shape == expected.shape == (2, 16, 16, 64)
  np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max() + 1e-3)
