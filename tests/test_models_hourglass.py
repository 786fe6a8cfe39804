"""Tests for the Hourglass-104 backbone (centernet_jax.models.hourglass)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import config_base
from centernet_jax import models
from centernet_jax.models import hourglass as H

from tests import helpers

DATA = 'odapi_hg104_feature_extractor.txt'  # in tests/data/




def _model_config(**overrides):
  c = config_base.base_config().model
  c.backbone = 'hourglass'
  c.update(overrides)
  return c








def test_param_counts_match_research_table():
  # docs/odapi_reference.md 3.7.
  net = models.build_model(_model_config(), num_classes=90)
  v = helpers.shapes(net, 128)
  fe = helpers.count(v['params']['backbone'])
  total = helpers.count(v['params'])
  assert fe == 187_700_352
  assert total - fe == 3_588_796
  assert total == 191_289_148
  assert helpers.count(v['batch_stats']) == 117_504


def test_flax_module_path():
  assert H.flax_module_path('hourglass_network/0/inner_block/0/decoder_block/1/skip/conv') == (
      'hourglass_network_0', 'inner_block_0', 'decoder_block_1', 'skip', 'conv')
  assert H.flax_module_path('downsample_input/conv_block/norm') == (
      'downsample_input', 'conv_block', 'norm')


def test_variables_match_odapi_checkpoint():
  """Every checkpoint kernel / BN of the OD API build maps (through `flax_module_path`) onto a
  Flax variable of the same shape, and nothing else exists."""
  v = helpers.shapes(H.HourglassNetwork(), 128)
  params, stats = v['params'], v['batch_stats']
  flax_kernels = {p for p, _ in _leaf_paths(params) if p[-1] == 'kernel'}
  flax_bns = {p[:-1] for p, _ in _leaf_paths(stats) if p[-1] == 'mean'}
  ref_kernels, ref_bns = set(), set()
  for path, shape in helpers.reference_shapes(DATA):
    *module, var = path.split('/')
    mpath = H.flax_module_path('/'.join(module))
    node_p, node_s = params, stats
    for name in mpath:
      node_p = node_p[name]
      if var == 'gamma':
        node_s = node_s[name]
    if var == 'kernel':
      assert node_p['kernel'].shape == shape, path
      assert set(node_p) == {'kernel'}, path  # no bias anywhere
      ref_kernels.add(mpath + ('kernel',))
    else:
      assert var == 'gamma', path
      assert node_p['scale'].shape == node_p['bias'].shape == shape, path
      assert node_s['mean'].shape == node_s['var'].shape == shape, path
      ref_bns.add(mpath)
  assert len(ref_kernels) == 160 and len(ref_bns) == 160  # 800 checkpoint variables
  assert flax_kernels == ref_kernels
  assert flax_bns == ref_bns


def _leaf_paths(tree):
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out.append((tuple(k.key for k in path), leaf))
  return out


def test_centernet_forward_two_head_sets_128():
  """The real HG-104 at 128x128: two stride-4 outputs, hence two head sets."""
  net = models.build_model(_model_config(), num_classes=90)
  x = jnp.asarray(np.random.default_rng(1).uniform(0, 255, (1, 128, 128, 3)), jnp.float32)
  variables = helpers.filled(helpers.shapes(net, 128))
  outputs, new_vars = jax.jit(
      lambda v, x: net.apply(v, x, train=True, mutable=['batch_stats']))(variables, x)
  assert len(outputs) == 2
  for out in outputs:
    assert out['object_center'].shape == (1, 32, 32, 90)
    assert out['box/scale'].shape == out['box/offset'].shape == (1, 32, 32, 2)
    assert all(bool(jnp.all(jnp.isfinite(o))) for o in out.values())
  assert not np.allclose(np.asarray(outputs[0]['object_center']),
                         np.asarray(outputs[1]['object_center']))
  assert {'box_scale_0', 'box_scale_1', 'object_center_0', 'object_center_1'} <= set(
      variables['params'])
  assert jax.tree_util.tree_structure(new_vars['batch_stats']) == jax.tree_util.tree_structure(
      variables['batch_stats'])


def test_feature_shapes_narrow():
  module = H.HourglassNetwork(width_multiplier=0.0625)
  feats = jax.eval_shape(lambda: module.init_with_output(
      jax.random.key(0), jnp.zeros((2, 256, 256, 3)), train=False))[0]
  assert [f.shape for f in feats] == [(2, 64, 64, 16), (2, 64, 64, 16)]


def test_input_size_must_be_multiple_of_128():
  with pytest.raises(ValueError, match='divisible by 128'):
    helpers.shapes(H.HourglassNetwork(width_multiplier=0.0625), 64)
  with pytest.raises(ValueError, match='Unsupported hourglass depth'):
    helpers.shapes(H.HourglassNetwork(depth=52), 128)


def test_normalize_input_bgr_mean_std():
  means_rgb = np.asarray(H.CHANNEL_MEANS_BGR)[::-1]
  stds_rgb = np.asarray(H.CHANNEL_STDS_BGR)[::-1]
  x = np.stack([means_rgb, means_rgb + stds_rgb])[None, None].astype(np.float32)  # [1,1,2,3]
  y = np.asarray(H.normalize_input(jnp.asarray(x)))
  np.testing.assert_allclose(y[0, 0, 0], 0.0, atol=1e-5)
  np.testing.assert_allclose(y[0, 0, 1], 1.0, atol=1e-5)
  # Channel 0 of the output is blue: a pure-blue input moves only it.
  blue = np.zeros((1, 1, 1, 3), np.float32)
  blue[..., 2] = 255.0
  y = np.asarray(H.normalize_input(jnp.asarray(blue)) - H.normalize_input(jnp.zeros_like(blue)))
  np.testing.assert_allclose(y[0, 0, 0], [255.0 / H.CHANNEL_STDS_BGR[0], 0.0, 0.0], rtol=1e-5)


def test_conv_block_symmetric_padding_and_bn_momentum():
  """Stride-2 3x3 uses symmetric 1-px pads (not TF 'SAME'); BN uses eps 1e-5 and moving =
  0.1 * moving + 0.9 * batch (Keras momentum 0.1)."""
  block = H.ConvBlock(8, 3, 2, relu=False)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
  v = block.init(jax.random.key(0), x, train=False)
  kernel = v['params']['conv']['kernel']
  y = block.apply(v, x, train=False)
  conv = lambda pad: jax.lax.conv_general_dilated(
      x, kernel, (2, 2), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(y, conv(((1, 1), (1, 1))) / np.sqrt(1 + 1e-5), atol=1e-5)
  assert not np.allclose(y, conv('SAME') / np.sqrt(1 + 1e-5), atol=1e-3)
  _, new = block.apply(v, x, train=True, mutable=['batch_stats'])
  batch_mean = np.asarray(conv(((1, 1), (1, 1)))).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(new['batch_stats']['norm']['mean'], 0.9 * batch_mean, atol=1e-5)
