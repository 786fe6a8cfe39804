"""Tests for the MobileNetV2 FPN backbone (centernet_jax.models.mobilenet_v2_fpn)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import config_base
from centernet_jax import models
from centernet_jax.models import mobilenet_v2_fpn as M

from tests import helpers

DATA = 'odapi_mnv2fpn_feature_extractor.txt'  # in tests/data/




def _model_config(**overrides):
  c = config_base.base_config().model
  c.backbone, c.depthwise_heads = 'mobilenet_v2_fpn', True
  c.backbone_kwargs.mobilenet_v2_fpn.use_separable_conv = overrides.pop(
      'use_separable_conv', True)
  c.update(overrides)
  return c






def test_config_defaults():
  c = config_base.base_config()
  assert c.model.backbone_kwargs.mobilenet_v2_fpn.use_separable_conv is True
  assert c.model.backbone_kwargs.hourglass.depth == 104


def test_param_counts_match_research_table():
  """MobileNetV2 FPN sep-conv, 90 classes, depthwise heads (docs/odapi_reference.md, 3.7)."""
  v = helpers.shapes(models.build_model(_model_config(), num_classes=90), 64)
  fe, total = helpers.count(v['params']['backbone']), helpers.count(v['params'])
  assert (fe, total - fe, total) == (2_316_384, 44_006, 2_360_390)
  assert helpers.count(v['batch_stats']) == 34_272
  # Plain 3x3 FPN convs instead: + (64*9*32 + 32 + 32*9*24 + 24 + 24*9*24 + 24)
  # - (64*9 + 64*32 + 32 + 32*9 + 32*24 + 24 + 24*9 + 24*24 + 24) = 30,608 - 4,552.
  v = helpers.shapes(
      models.build_model(_model_config(use_separable_conv=False), num_classes=90), 64)
  assert helpers.count(v['params']['backbone']) == 2_316_384 + 30_608 - 4_552


def test_layers_match_odapi_checkpoint():
  """Keras order -> Flax module -> checkpoint shapes, for all 104 backbone and 10 FPN layers."""
  ref = helpers.reference_layers(DATA)
  v = helpers.shapes(M.MobileNetV2FPN(), 64)
  params, stats = v['params'], v['batch_stats']
  order = M.keras_weighted_layer_order()
  assert len(order) == 104 and order[0] == 'Conv1' and order[-1] == 'Conv_1_bn'
  assert set(order) == set(params['mobilenet_v2'])
  assert set(M.FPN_CHECKPOINT_ORDER) == set(params) - {'mobilenet_v2'}
  named = ([(('_base_model', n), params['mobilenet_v2'][name],
             stats['mobilenet_v2'].get(name)) for n, name in enumerate(order)] +
           [(('_feature_extractor_model', k), params[name], stats.get(name))
            for k, name in enumerate(M.FPN_CHECKPOINT_ORDER, start=1)])
  assert {key for key, _, _ in named} == set(ref)
  for key, p, s in named:
    r = ref[key]
    if 'gamma' in r:
      assert p['scale'].shape == p['bias'].shape == r['gamma'], key
      assert s['mean'].shape == s['var'].shape == r['gamma'], key
    elif 'pointwise_kernel' in r:  # SeparableConv2D: one bias, on the pointwise conv
      h, w, c, m = r['depthwise_kernel']
      assert p['depthwise']['kernel'].shape == (h, w, 1, c * m), key
      assert set(p['depthwise']) == {'kernel'}, key
      assert p['pointwise']['kernel'].shape == r['pointwise_kernel'], key
      assert p['pointwise']['bias'].shape == r['bias'], key
    elif 'depthwise_kernel' in r:  # DepthwiseConv2D [h, w, C, 1] -> Flax [h, w, 1, C]
      h, w, c, m = r['depthwise_kernel']
      assert p['kernel'].shape == (h, w, 1, c * m) and set(p) == {'kernel'}, key
    else:
      assert p['kernel'].shape == r['kernel'], key
      assert ('bias' in p) == ('bias' in r), key


def test_depthwise_head_shapes():
  v = helpers.shapes(models.build_model(_model_config(), num_classes=90), 64)
  head = v['params']['object_center_0']
  assert head['depthwise_3x3']['kernel'].shape == (3, 3, 1, 24)  # TF [3, 3, 24, 1]
  assert head['pointwise_1x1']['kernel'].shape == (1, 1, 24, 256)
  assert head['conv_1x1']['kernel'].shape == (1, 1, 256, 90)


@pytest.mark.parametrize('size', [64, 128])
def test_tap_and_output_strides(size):
  taps = jax.eval_shape(lambda: M.MobileNetV2().init_with_output(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))[0]
  assert {k: t.shape for k, t in taps.items()} == {
      2: (1, size // 4, size // 4, 24), 3: (1, size // 8, size // 8, 32),
      4: (1, size // 16, size // 16, 64), 5: (1, size // 32, size // 32, 1280)}
  out = jax.eval_shape(lambda: M.MobileNetV2FPN().init_with_output(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))[0]
  assert len(out) == 1 and out[0].shape == (1, size // 4, size // 4, 24)


def test_alpha_scales_backbone_only():
  p = helpers.shapes(M.MobileNetV2FPN(alpha=0.35), 64)['params']
  assert p['mobilenet_v2']['Conv1']['kernel'].shape == (3, 3, 3, 16)
  assert p['mobilenet_v2']['Conv_1']['kernel'].shape == (1, 1, 112, 448)  # 1280 scaled (< 1)
  assert p['fpn_top_conv']['kernel'].shape == (1, 1, 448, 64)  # FPN widths fixed
  assert p['fpn_c2_lateral_conv']['kernel'].shape == (1, 1, 8, 24)
  assert M.last_block_filters(1.4) == 1280
  assert [M.make_divisible(v) for v in (32 * 0.35, 16 * 0.35, 24, 96 * 0.35)] == [16, 8, 24, 32]


def test_centernet_train_forward_64():
  net = models.build_model(_model_config(), num_classes=90)
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)), jnp.float32)
  shapes = helpers.shapes(net, 64)
  rng = np.random.default_rng(1)
  v = jax.tree_util.tree_map_with_path(
      lambda path, s: (jnp.asarray(rng.normal(0, 0.1, s.shape), jnp.float32)
                       if path[-1].key == 'kernel' else
                       jnp.ones(s.shape) if path[-1].key in ('scale', 'var') else
                       jnp.zeros(s.shape)), shapes)
  outputs, new = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=['batch_stats']))(v, x)
  assert len(outputs) == 1
  assert outputs[0]['object_center'].shape == (2, 16, 16, 90)
  assert all(bool(jnp.all(jnp.isfinite(o))) for o in outputs[0].values())
  moved = new['batch_stats']['backbone']['mobilenet_v2']['bn_Conv1']['mean']
  assert float(jnp.abs(moved).max()) > 0  # momentum 0.9997: small but nonzero update


def test_input_size_must_be_multiple_of_32():
  with pytest.raises(ValueError, match='divisible by 32'):
    helpers.shapes(M.MobileNetV2FPN(), 48)


def test_normalize_input():
  x = jnp.asarray([0.0, 127.5, 255.0])
  np.testing.assert_allclose(M.normalize_input(x), [-1.0, 0.0, 1.0])


def test_matches_keras_mobilenetv2_and_fpn():
  """Keras MobileNetV2 (its stride-2 pads equal TF 'SAME') + the sep-conv FPN built in Keras from
  docs/odapi_reference.md 3.5; weights copied by Keras layer order; inference outputs equal."""
  tf = pytest.importorskip('tensorflow')
  keras = tf.keras
  layers = keras.layers
  rng = np.random.default_rng(0)
  base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3))
  assert [l.name for l in base.layers if l.weights] == M.keras_weighted_layer_order()
  taps = {2: base.get_layer('block_2_add').output, 3: base.get_layer('block_5_add').output,
          4: base.get_layer('block_9_add').output, 5: base.get_layer('out_relu').output}
  fpn_layers = []

  def add(layer):
    fpn_layers.append(layer)
    return layer

  t = add(layers.Conv2D(64, 1, padding='same', name='fpn_top_conv'))(taps[5])
  for level, lateral, out in M.FPN_LEVELS:
    lat = add(layers.Conv2D(lateral, 1, padding='same', name=f'fpn_c{level}_lateral_conv'))
    t = layers.Add()([layers.UpSampling2D(2)(t), lat(taps[level])])
    t = add(layers.SeparableConv2D(out, 3, padding='same', name=f'fpn_c{level}_conv'))(t)
    t = layers.ReLU()(add(layers.BatchNormalization(epsilon=1e-3, name=f'fpn_c{level}_bn'))(t))
  keras_model = keras.Model(base.input, t)
  assert [l.name for l in keras_model.layers if l.weights][-10:] == list(M.FPN_CHECKPOINT_ORDER)

  all_layers = [l for l in base.layers if l.weights] + fpn_layers
  for layer in all_layers:
    w = layer.get_weights()
    if isinstance(layer, layers.BatchNormalization):
      c = w[0].shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                         rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])
    elif layer in fpn_layers:
      layer.set_weights(w[:-1] + [rng.normal(0, 0.05, w[-1].shape)])

  module = M.MobileNetV2FPN()
  x = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  keras_in = keras.applications.mobilenet_v2.preprocess_input(x.copy())
  flax_in = np.asarray(M.normalize_input(jnp.asarray(x)))
  np.testing.assert_allclose(flax_in, keras_in, atol=1e-6)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), flax_in, train=False))
  params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes['params'])
  stats = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes['batch_stats'])
  for layer in all_layers:
    p_dst, s_dst = ((params, stats) if layer in fpn_layers else
                    (params['mobilenet_v2'], stats['mobilenet_v2']))
    w = layer.get_weights()
    if isinstance(layer, layers.BatchNormalization):
      assert p_dst[layer.name]['scale'].shape == w[0].shape
      p_dst[layer.name] = {'scale': w[0], 'bias': w[1]}
      s_dst[layer.name] = {'mean': w[2], 'var': w[3]}
    elif isinstance(layer, layers.SeparableConv2D):
      dw, pw, b = w
      p_dst[layer.name] = {'depthwise': {'kernel': dw.reshape(3, 3, 1, -1)},
                           'pointwise': {'kernel': pw, 'bias': b}}
    elif isinstance(layer, layers.DepthwiseConv2D):
      assert p_dst[layer.name]['kernel'].shape == (3, 3, 1, w[0].shape[2]), layer.name
      p_dst[layer.name] = {'kernel': w[0].reshape(3, 3, 1, -1)}
    else:
      assert p_dst[layer.name]['kernel'].shape == w[0].shape, layer.name
      p_dst[layer.name] = dict(zip(('kernel', 'bias'), w))
  expected = keras_model(keras_in, training=False).numpy()
  got = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(
      {'params': params, 'batch_stats': stats}, flax_in)[0])
  assert got.shape == expected.shape == (2, 16, 16, 24)
  np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max() + 1e-4)
