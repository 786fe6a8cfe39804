"""Tests for the ResNet v2 + upsampling backbone (centernet_jax.models.resnet_v2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import config_base
from centernet_jax import models
from centernet_jax.models import resnet_v2 as R

from tests import helpers

DATA = 'odapi_r50v2_feature_extractor.txt'  # in tests/data/
POST_BN = 2 * 2048  # post_bn gamma + beta (and moving mean + variance)


def _model_config(**overrides):
  """The base config's model section (its defaults) for a full-width ResNet50 v2."""
  c = config_base.base_config().model
  c.update({'backbone': 'resnet_v2', 'depth': 50, **overrides})
  return c


def test_param_counts_match_research_table():
  # With the (unused) post_bn variables, exactly docs/odapi_reference.md 3.7 / the checkpoint.
  net = models.CenterNet(backbone=R.ResNetV2Upsample(create_post_bn=True),
                         normalize=R.normalize_input, num_classes=90)
  v = helpers.shapes(net, 64)
  fe, total = helpers.count(v['params']['backbone']), helpers.count(v['params'])
  assert (fe, total - fe, total) == (29_383_424, 467_294, 29_850_718)
  assert helpers.count(v['batch_stats']) == 47_232
  # The default (registry) model leaves post_bn out.
  v = helpers.shapes(models.build_model(_model_config(), num_classes=90), 64)
  fe, total = helpers.count(v['params']['backbone']), helpers.count(v['params'])
  assert (fe, total - fe) == (29_383_424 - POST_BN, 467_294)
  assert helpers.count(v['batch_stats']) == 47_232 - POST_BN


def test_layers_match_odapi_checkpoint():
  """Keras order -> Flax module -> checkpoint kernel/bias/BN shapes, for all 102 backbone and
  12 upsampling layers."""
  ref = helpers.reference_layers(DATA)
  v = helpers.shapes(R.ResNetV2Upsample(create_post_bn=True), 64)
  params, stats = v['params'], v['batch_stats']
  order = R.keras_weighted_layer_order(50)
  assert len(order) == 102 and order[101] == 'post_bn' and order[6] == 'conv2_block1_0_conv'
  assert set(order) == set(params['resnet'])
  assert set(R.UPSAMPLE_CHECKPOINT_ORDER) == set(params) - {'resnet'}
  named = ([(('_base_model', n), params['resnet'][name], stats['resnet'].get(name))
            for n, name in enumerate(order)] +
           [(('_feature_extractor_model', k), params[name], stats.get(name))
            for k, name in enumerate(R.UPSAMPLE_CHECKPOINT_ORDER, start=1)])
  assert {key for key, _, _ in named} == set(ref)
  for key, p, s in named:
    r = ref[key]
    if 'gamma' in r:
      assert p['scale'].shape == p['bias'].shape == r['gamma'], key
      assert s['mean'].shape == s['var'].shape == r['gamma'], key
    else:
      # Conv2DTranspose kernels are (kh, kw, out, in) in both (transpose_kernel=True).
      assert p['kernel'].shape == r['kernel'], key
      assert ('bias' in p) == ('bias' in r), key
      if 'bias' in r:
        assert p['bias'].shape == r['bias'], key


@pytest.mark.parametrize('size', [64, 128])
def test_output_stride_4(size):
  out = jax.eval_shape(lambda: R.ResNetV2Upsample().init_with_output(
      jax.random.key(0), jnp.zeros((2, size, size, 3)), train=False))[0]
  assert len(out) == 1 and out[0].shape == (2, size // 4, size // 4, 64)


def test_input_size_must_be_multiple_of_32():
  with pytest.raises(ValueError, match='divisible by 32'):
    helpers.shapes(R.ResNetV2Upsample(width_multiplier=0.125), 48)


def test_narrow_forward_and_train_step():
  net = models.build_model(_model_config(width_multiplier=0.125, head_channels=16),
                           num_classes=3)
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)), jnp.float32)
  v = helpers.filled(jax.eval_shape(lambda: net.init(jax.random.key(0), x, train=False)))
  outputs, new = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=['batch_stats']))(v, x)
  assert len(outputs) == 1
  assert outputs[0]['object_center'].shape == (2, 16, 16, 3)
  assert all(bool(jnp.all(jnp.isfinite(o))) for o in outputs[0].values())
  assert 'post_bn' not in new['batch_stats']['backbone']['resnet']


def test_normalize_input():
  x = jnp.asarray([0.0, 127.5, 255.0])
  np.testing.assert_allclose(R.normalize_input(x), [-1.0, 0.0, 1.0])


def test_matches_keras_resnet50v2_and_upsampling():
  """Keras ResNet50V2 + the upsampling stack built in Keras from docs/odapi_reference.md 3.5;
  weights copied by Keras layer order (Conv2DTranspose kernels unchanged); inference outputs
  equal."""
  tf = pytest.importorskip('tensorflow')
  keras = tf.keras
  layers = keras.layers
  rng = np.random.default_rng(0)
  base = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(64, 64, 3))
  assert [l.name for l in base.layers if l.weights] == R.keras_weighted_layer_order(50)
  x = base.get_layer('conv5_block3_out').output
  up_layers = []
  for i, f in enumerate(R.UPSAMPLE_FILTERS, start=1):
    up_layers += [layers.Conv2D(f, 3, padding='same', name=f'upsample{i}_conv'),
                  layers.BatchNormalization(epsilon=1e-3, name=f'upsample{i}_conv_bn'),
                  layers.Conv2DTranspose(f, 3, strides=2, padding='same',
                                         name=f'upsample{i}_deconv'),
                  layers.BatchNormalization(epsilon=1e-3, name=f'upsample{i}_deconv_bn')]
    for layer in up_layers[-4:]:
      x = layer(x)
      if isinstance(layer, layers.BatchNormalization):
        x = layers.ReLU()(x)
  keras_model = keras.Model(base.input, x)

  all_layers = [l for l in base.layers if l.weights] + up_layers
  for layer in all_layers:
    w = layer.get_weights()
    if isinstance(layer, layers.BatchNormalization):
      c = w[0].shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                         rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])
    elif len(w) == 2:
      layer.set_weights([w[0], rng.normal(0, 0.05, w[1].shape)])

  module = R.ResNetV2Upsample(create_post_bn=True)
  x = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  keras_in = keras.applications.resnet_v2.preprocess_input(x.copy())
  flax_in = np.asarray(R.normalize_input(jnp.asarray(x)))
  np.testing.assert_allclose(flax_in, keras_in, atol=1e-6)
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), flax_in, train=False))
  params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), variables['params'])
  stats = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), variables['batch_stats'])
  for layer in all_layers:
    p_dst, s_dst = ((params, stats) if layer.name.startswith('upsample') else
                    (params['resnet'], stats['resnet']))
    w = layer.get_weights()
    if isinstance(layer, layers.BatchNormalization):
      assert p_dst[layer.name]['scale'].shape == w[0].shape
      p_dst[layer.name] = {'scale': w[0], 'bias': w[1]}
      s_dst[layer.name] = {'mean': w[2], 'var': w[3]}
    else:
      assert p_dst[layer.name]['kernel'].shape == w[0].shape, layer.name
      p_dst[layer.name] = dict(zip(('kernel', 'bias'), w))
  expected = keras_model(keras_in, training=False).numpy()
  got = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(
      {'params': params, 'batch_stats': stats}, flax_in)[0])
  assert got.shape == expected.shape == (2, 16, 16, 64)
  np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max() + 1e-4)
