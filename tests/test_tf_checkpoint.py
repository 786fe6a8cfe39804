"""Tests for the TF2-zoo checkpoint converter (centernet_jax.tf_checkpoint) and the importer.

No OD API needed: a TF checkpoint with the real zoo key names is written with plain TensorFlow
(nested tf.Module objects whose attribute names are the object-path segments), for the real
ResNet-50 v1 FPN at 2 classes (creating ~25M float variables is cheap; nothing is run).
The key set itself is checked against the names and shapes the OD API writes (a digest of the
list recorded from a real OD API build, docs/odapi_reference.md 3; the list itself, for a
readable diff, only when a `shared/reference/` folder holding it sits beside the checkout).
"""

import hashlib
import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import config_base
from centernet_jax import models
from centernet_jax import text_proto
from centernet_jax import tf_checkpoint as T

SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'
BASE = 'model/_feature_extractor/_base_model'
FPN = 'model/_feature_extractor/_feature_extractor_model'
HEADS = 'model/_prediction_head_dict'

# sha256 of the sorted "key shape" lines of the checkpoints saved by the OD API
# (tf-object-detection-api 0.1, TF 2.15) for the 90-class zoo models, without the documented
# skips (save_counter, the object graph, ResNet50V2's post_bn); how they were recorded:
# docs/odapi_reference.md 3. The lists themselves are not in the repository; when
# shared/reference/odapi_checkpoint_vars/<name>.txt sits beside the checkout it is diffed too.
# (feature extractor type, depthwise heads) -> (reference name, number of keys, digest)
ODAPI_KEY_DIGESTS = {
    ('resnet_v1_50_fpn', False): (
        'r50v1fpn', 356, '82609da4b3ad7de594f5a843a6bd11d6058d871d560848a255dbd61eb88602e5'),
    ('resnet_v1_101_fpn', False): (
        'r101v1fpn', 662, '02b7fd82115a26c59fc635b8d41abea1207417cf45c6f54c678989302250b53a'),
    ('resnet_v2_50', False): (
        'r50v2', 314, '056daa7c24dc80779efe1315d1407c17f9adfe7242db33bdf581057bc68946fc'),
    ('mobilenet_v2_fpn_sep_conv', True): (
        'mnv2fpn', 304, 'fa9931ea55a6297aabac3915f71a619446330864b44092219803740aedbb5d7f'),
    ('hourglass_104', False): (
        'hg104', 824, 'b7704e6e5c40334ab06fdc6ffd7553f43c196bf1f6a876e3ff56626ed10205eb'),
}
REFERENCE_DIR = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'reference',
                             'odapi_checkpoint_vars')

# docs/odapi_reference.md 3.5: the FPN layers K = 1..10 of `_feature_extractor_model`.
FPN_ORDER = ('fpn_top_conv', 'fpn_c4_lateral_conv', 'fpn_c4_conv', 'fpn_c4_bn',
             'fpn_c3_lateral_conv', 'fpn_c3_conv', 'fpn_c3_bn', 'fpn_c2_lateral_conv',
             'fpn_c2_conv', 'fpn_c2_bn')
BN_VARS = {('params', 'scale'): 'gamma', ('params', 'bias'): 'beta',
           ('batch_stats', 'mean'): 'moving_mean', ('batch_stats', 'var'): 'moving_variance'}


def _random_variables(num_classes, seed=1):
  """A stand-in for a fresh init: random values with the model's variable shapes."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape, dtype=np.float32),
                      _abstract_variables(num_classes))


def _model_config(depth=50):
  c = config_base.base_config()
  c.model.backbone = 'resnet_v1_fpn'
  c.model.depth = depth
  return c.model


def _abstract_variables(num_classes, depth=50):
  model = models.build_model(_model_config(depth), num_classes)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                           train=False))


def _flat(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _key_lines(shapes):
  return sorted(f"{k} {','.join(str(x) for x in s)}" for k, s in shapes.items())


def assert_keys_match_odapi(shapes, extra_skips, name, count, digest):
  """Our expected checkpoint keys and shapes equal the OD API checkpoint's `name`: against
  its reference list when it is at hand (a readable diff), always against the committed key
  count and SHA-256 of the sorted 'key shape' lines."""
  reference = os.path.join(REFERENCE_DIR, name + '.txt')
  if os.path.exists(reference):
    ref = {}
    with open(reference) as f:
      for line in f:
        key, shape = line.split(' ', 1)
        if not T.skip_reason(key, 'full', extra_skips):
          ref[key] = tuple(int(x) for x in shape.strip()[1:-1].split(',') if x.strip())
    assert sorted(set(shapes) ^ set(ref)) == []
    assert {k: s for k, s in shapes.items() if ref[k] != s} == {}
  lines = _key_lines(shapes)
  assert len(lines) == count
  assert hashlib.sha256('\n'.join(lines).encode()).hexdigest() == digest


def write_tf_checkpoint(prefix, values):
  """Saves `values` {checkpoint key: array} so that the saved keys are exactly those keys.

  Every object-path segment becomes an attribute of a nested tf.Module (TF itself escapes
  '/' and '.' inside a segment); the top segment is the `tf.train.Checkpoint` attribute.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  roots = {}
  keep = []
  for key, value in values.items():
    assert key.endswith(SUFFIX), key
    segments = [T.unescape_segment(s) for s in key[:-len(SUFFIX)].split('/')]
    top, path, var = segments[0], segments[1:-1], segments[-1]
    node = roots.setdefault(top, tf.Module())
    for seg in path:
      child = node.__dict__.get(seg)
      if child is None:
        child = tf.Module()
        setattr(node, seg, child)
      node = child
    v = tf.Variable(np.asarray(value), name=var)
    setattr(node, var, v)
    keep.append(v)
  return tf.train.Checkpoint(**roots).save(prefix)  # adds save_counter, like the zoo's


@pytest.fixture(scope='module')
def r50_case(tmp_path_factory):
  """A real-named R50 v1 FPN (2 classes) checkpoint with random values, read back."""
  variables = _abstract_variables(2)
  shapes = T.expected_checkpoint_shapes(variables, _model_config())
  rng = np.random.default_rng(0)
  values = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
  prefix = str(tmp_path_factory.mktemp('r50') / 'checkpoint' / 'ckpt')
  written = write_tf_checkpoint(prefix, values)
  read = T.read_tf_checkpoint(written)
  return {'variables': variables, 'values': values, 'prefix': written, 'read': read}


# ---- key names ------------------------------------------------------------------------------


def test_escaping():
  assert T.escape_segment('box/scale') == 'box.Sscale'
  assert T.escape_segment('human_pose/keypoint/heatmap') == 'human_pose.Skeypoint.Sheatmap'
  assert T.escape_segment('a.b/c') == 'a..b.Sc'
  for s in ('box/scale', 'a.b/c', 'x..y', 'S.S/S', 'plain'):
    assert T.unescape_segment(T.escape_segment(s)) == s


def _zoo_model_config(feature_extractor, depthwise):
  c = config_base.base_config()
  c.model.update_from_flattened_dict(models.zoo_feature_extractors()[feature_extractor])
  c.model.depthwise_heads = depthwise
  return c.model


@pytest.mark.parametrize('feature_extractor,depthwise', sorted(ODAPI_KEY_DIGESTS))
def test_expected_keys_match_the_odapi_checkpoint(feature_extractor, depthwise):
  config = _zoo_model_config(feature_extractor, depthwise)
  model = models.build_model(config, 90)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)),
                                                train=False))
  shapes = T.expected_checkpoint_shapes(variables, config)
  _, extra_skips, _ = T.variable_entries(variables, config)
  assert_keys_match_odapi(shapes, extra_skips, *ODAPI_KEY_DIGESTS[(feature_extractor, depthwise)])
  if feature_extractor == 'resnet_v2_50':  # post_bn (layer 101) is the documented skip
    assert list(extra_skips) == [f'{BASE}/layer_with_weights-101']


def test_writer_produces_real_key_names(r50_case):
  read = r50_case['read']
  assert f'{HEADS}/box.Sscale/0/layer_with_weights-0/kernel{SUFFIX}' in read
  assert f'{BASE}/layer_with_weights-105/moving_variance{SUFFIX}' in read
  assert 'save_counter' + SUFFIX in read and T.OBJECT_GRAPH_KEY in read
  assert len(read) == len(r50_case['values']) + 2


# ---- values land where they belong --------------------------------------------------------


def _independent_layer_keys(depth=50):
  """Flax module path -> TF object path, written from docs/odapi_reference.md 3.4-3.5 (and
  Keras 3 when available), not from the converter."""
  keras = pytest.importorskip('keras')
  app = {50: keras.applications.ResNet50, 101: keras.applications.ResNet101}[depth]
  net = app(weights=None, include_top=False, input_shape=(64, 64, 3))
  order = [layer.name for layer in net.layers if layer.weights]
  keras.backend.clear_session()
  layers = {('backbone', 'resnet', n): f'{BASE}/layer_with_weights-{i}'
            for i, n in enumerate(order)}
  layers.update({('backbone', n): f'{FPN}/layer_with_weights-{k}'
                 for k, n in enumerate(FPN_ORDER, start=1)})
  for key, name in (('object_center', 'object_center_0'), ('box.Sscale', 'box_scale_0'),
                    ('box.Soffset', 'box_offset_0')):
    layers[(name, 'conv_3x3')] = f'{HEADS}/{key}/0/layer_with_weights-0'
    layers[(name, 'conv_1x1')] = f'{HEADS}/{key}/0/layer_with_weights-1'
  return layers


def test_every_value_lands_where_it_belongs(r50_case):
  new, report = T.convert_variables(r50_case['read'], r50_case['variables'], _model_config())
  layers = _independent_layer_keys()
  values = r50_case['values']
  seen = set()
  for collection in ('params', 'batch_stats'):
    flat = _flat(new[collection])
    assert set(flat) == set(_flat(r50_case['variables'][collection]))
    for path, leaf in flat.items():
      module, name = path[:-1], path[-1]
      var = BN_VARS[(collection, name)] if name in ('scale', 'mean', 'var') or (
          name == 'bias' and module[-1].endswith('_bn')) else name
      key = f'{layers[module]}/{var}{SUFFIX}'
      np.testing.assert_array_equal(leaf, values[key], err_msg=f'{collection}/{path}')
      assert leaf.dtype == np.float32
      seen.add(key)
  assert seen == set(values)
  assert report.converted == len(values) and report.kept_fresh == 0
  assert report.skipped == {'checkpoint bookkeeping (save_counter)': 1,
                            'checkpoint object graph': 1}


def test_spot_checks_from_the_research_notes(r50_case):
  # Indices from docs/odapi_reference.md 3.4 and 3.5.
  new, _ = T.convert_variables(r50_case['read'], r50_case['variables'], _model_config())
  v, p, bs = r50_case['values'], new['params'], new['batch_stats']
  res = p['backbone']['resnet']
  np.testing.assert_array_equal(res['conv1_conv']['kernel'],
                                v[f'{BASE}/layer_with_weights-0/kernel{SUFFIX}'])
  np.testing.assert_array_equal(res['conv2_block1_0_conv']['kernel'],
                                v[f'{BASE}/layer_with_weights-6/kernel{SUFFIX}'])
  np.testing.assert_array_equal(res['conv2_block1_3_conv']['kernel'],
                                v[f'{BASE}/layer_with_weights-7/kernel{SUFFIX}'])
  np.testing.assert_array_equal(bs['backbone']['resnet']['conv2_block1_0_bn']['mean'],
                                v[f'{BASE}/layer_with_weights-8/moving_mean{SUFFIX}'])
  np.testing.assert_array_equal(res['conv5_block3_3_bn']['scale'],
                                v[f'{BASE}/layer_with_weights-105/gamma{SUFFIX}'])
  np.testing.assert_array_equal(p['backbone']['fpn_c4_bn']['bias'],
                                v[f'{FPN}/layer_with_weights-4/beta{SUFFIX}'])
  np.testing.assert_array_equal(p['box_scale_0']['conv_1x1']['bias'],
                                v[f'{HEADS}/box.Sscale/0/layer_with_weights-1/bias{SUFFIX}'])


# ---- refusals -----------------------------------------------------------------------------


def test_refuses_an_unused_checkpoint_variable(r50_case):
  tf_vars = dict(r50_case['read'])
  extra = f'{BASE}/layer_with_weights-106/kernel{SUFFIX}'
  tf_vars[extra] = np.zeros((3,), np.float32)
  with pytest.raises(T.CheckpointMismatchError, match='left unused') as err:
    T.convert_variables(tf_vars, r50_case['variables'], _model_config())
  assert extra in str(err.value)


def test_refuses_a_missing_variable(r50_case):
  tf_vars = dict(r50_case['read'])
  gone = f'{HEADS}/box.Soffset/0/layer_with_weights-1/bias{SUFFIX}'
  del tf_vars[gone]
  with pytest.raises(T.CheckpointMismatchError, match='unfilled') as err:
    T.convert_variables(tf_vars, r50_case['variables'], _model_config())
  assert gone in str(err.value) and 'params/box_offset_0/conv_1x1/bias' in str(err.value)


def test_refuses_a_wrong_shape(r50_case):
  tf_vars = dict(r50_case['read'])
  key = f'{HEADS}/object_center/0/layer_with_weights-1/kernel{SUFFIX}'
  tf_vars[key] = np.zeros((1, 1, 256, 90), np.float32)  # a 90-class head into a 2-class model
  with pytest.raises(T.CheckpointMismatchError, match='Shape mismatch') as err:
    T.convert_variables(tf_vars, r50_case['variables'], _model_config())
  msg = str(err.value)
  assert key in msg and 'params/object_center_0/conv_1x1/kernel' in msg
  assert '[1, 1, 256, 90]' in msg and '[1, 1, 256, 2]' in msg


def test_refuses_a_backbone_without_mapping(r50_case):
  config = _model_config()
  config.backbone = 'no_such_backbone'
  with pytest.raises(T.CheckpointMismatchError, match='no_such_backbone'):
    T.convert_variables(r50_case['read'], r50_case['variables'], config)


def test_skips_optimizer_state_of_a_training_checkpoint(r50_case):
  tf_vars = dict(r50_case['read'])
  slot = f'{BASE}/layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m{SUFFIX}'
  tf_vars[slot] = np.zeros((7, 7, 3, 64), np.float32)
  tf_vars['optimizer/iter' + SUFFIX] = np.int64(5)
  tf_vars['step' + SUFFIX] = np.int64(5)
  _, report = T.convert_variables(tf_vars, r50_case['variables'], _model_config())
  assert report.skipped['optimizer state'] == 2
  assert report.skipped['training step counter'] == 1


def test_detection_init_keeps_fresh_heads(r50_case):
  fresh = _random_variables(5)  # other num_classes than the checkpoint
  new, report = T.convert_variables(r50_case['read'], fresh, _model_config(),
                                    init_type='detection')
  np.testing.assert_array_equal(new['params']['object_center_0']['conv_1x1']['kernel'],
                                fresh['params']['object_center_0']['conv_1x1']['kernel'])
  np.testing.assert_array_equal(new['params']['backbone']['fpn_c2_conv']['kernel'],
                                r50_case['values'][f'{FPN}/layer_with_weights-9/kernel{SUFFIX}'])
  assert report.kept_fresh == 12  # 3 heads x 2 convs x (kernel, bias)
  assert any('feature extractor' in r for r in report.skipped)
  # A stray variable inside the feature extractor is still refused.
  tf_vars = dict(r50_case['read'])
  tf_vars[f'{FPN}/layer_with_weights-11/kernel{SUFFIX}'] = np.zeros((1,), np.float32)
  with pytest.raises(T.CheckpointMismatchError, match='layer_with_weights-11'):
    T.convert_variables(tf_vars, fresh, _model_config(), init_type='detection')


@pytest.mark.slow  # a Keras ResNet50 built and saved
def test_classification_init_from_keras_application_checkpoint(r50_case):
  """`feature_extractor/layer_with_weights-N` (convert_keras_models), with the classifier."""
  values = r50_case['values']
  tf_vars = {k.replace(BASE, 'feature_extractor'): v for k, v in values.items()
             if k.startswith(BASE)}
  tf_vars[f'feature_extractor/layer_with_weights-106/kernel{SUFFIX}'] = np.zeros((2048, 1000))
  tf_vars[f'feature_extractor/layer_with_weights-106/bias{SUFFIX}'] = np.zeros((1000,))
  tf_vars['save_counter' + SUFFIX] = np.int64(1)
  fresh = _random_variables(2)
  new, report = T.convert_variables(tf_vars, fresh, _model_config(),
                                    init_type='classification')
  np.testing.assert_array_equal(
      new['params']['backbone']['resnet']['conv3_block2_2_conv']['kernel'],
      values[_base_kernel_key('conv3_block2_2_conv')])
  np.testing.assert_array_equal(new['params']['backbone']['fpn_top_conv']['kernel'],
                                fresh['params']['backbone']['fpn_top_conv']['kernel'])
  assert sum(report.skipped.values()) == 3  # classifier kernel + bias, save_counter
  tf_vars[f'feature_extractor/layer_with_weights-107/kernel{SUFFIX}'] = np.zeros((1,))
  with pytest.raises(T.CheckpointMismatchError, match='layer_with_weights-107'):
    T.convert_variables(tf_vars, fresh, _model_config(), init_type='classification')


def _base_kernel_key(layer_name):
  from centernet_jax.models import resnet_v1_fpn  # pylint: disable=g-import-not-at-top
  n = resnet_v1_fpn.keras_weighted_layer_order(50).index(layer_name)
  return f'{BASE}/layer_with_weights-{n}/kernel{SUFFIX}'


def _in_memory_checkpoint(feature_extractor, depthwise, num_classes=2, extra=None):
  config = _zoo_model_config(feature_extractor, depthwise)
  model = models.build_model(config, num_classes)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                                train=False))
  rng = np.random.default_rng(3)
  shapes = dict(T.expected_checkpoint_shapes(variables, config), **(extra or {}))
  values = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
  return config, variables, values


def test_mobilenet_depthwise_and_separable_layouts():
  config, variables, values = _in_memory_checkpoint('mobilenet_v2_fpn_sep_conv', True)
  new, _ = T.convert_variables(values, variables, config)
  p = new['params']
  # Backbone: layer 0 is Conv1 [3,3,3,32]; expanded_conv_depthwise (layer 2) is [3,3,32,1].
  np.testing.assert_array_equal(p['backbone']['mobilenet_v2']['Conv1']['kernel'],
                                values[f'{BASE}/layer_with_weights-0/kernel{SUFFIX}'])
  dw = values[f'{BASE}/layer_with_weights-2/depthwise_kernel{SUFFIX}']
  assert dw.shape == (3, 3, 32, 1)
  np.testing.assert_array_equal(
      p['backbone']['mobilenet_v2']['expanded_conv_depthwise']['kernel'],
      np.transpose(dw, (0, 1, 3, 2)))
  # FPN K=3: SeparableConv2D -> depthwise + pointwise (the single bias on the pointwise).
  sep = f'{FPN}/layer_with_weights-3'
  np.testing.assert_array_equal(p['backbone']['fpn_c4_conv']['depthwise']['kernel'][:, :, 0, :],
                                values[f'{sep}/depthwise_kernel{SUFFIX}'][:, :, :, 0])
  np.testing.assert_array_equal(p['backbone']['fpn_c4_conv']['pointwise']['kernel'],
                                values[f'{sep}/pointwise_kernel{SUFFIX}'])
  np.testing.assert_array_equal(p['backbone']['fpn_c4_conv']['pointwise']['bias'],
                                values[f'{sep}/bias{SUFFIX}'])
  # Depthwise heads.
  head = f'{HEADS}/box.Soffset/0/layer_with_weights-0'
  assert values[f'{head}/depthwise_kernel{SUFFIX}'].shape == (3, 3, 24, 1)
  np.testing.assert_array_equal(p['box_offset_0']['depthwise_3x3']['kernel'][:, :, 0, :],
                                values[f'{head}/depthwise_kernel{SUFFIX}'][:, :, :, 0])
  np.testing.assert_array_equal(p['box_offset_0']['pointwise_1x1']['bias'],
                                values[f'{head}/bias{SUFFIX}'])


def test_resnet_v2_deconv_and_post_bn():
  post_bn = f'{BASE}/layer_with_weights-101'
  extra = {f'{post_bn}/{v}{SUFFIX}': (2048,)
           for v in ('gamma', 'beta', 'moving_mean', 'moving_variance')}
  config, variables, values = _in_memory_checkpoint('resnet_v2_50', False, extra=extra)
  new, report = T.convert_variables(values, variables, config)
  # K = 3 is the first Conv2DTranspose, kept in the Keras (h, w, out, in) layout.
  np.testing.assert_array_equal(new['params']['backbone']['upsample1_deconv']['kernel'],
                                values[f'{FPN}/layer_with_weights-3/kernel{SUFFIX}'])
  np.testing.assert_array_equal(
      new['batch_stats']['backbone']['upsample3_deconv_bn']['var'],
      values[f'{FPN}/layer_with_weights-12/moving_variance{SUFFIX}'])
  assert sum(n for r, n in report.skipped.items() if 'post_bn' in r) == 4
  # Without the documented skip a stray BN next to it is refused.
  values[f'{BASE}/layer_with_weights-102/gamma{SUFFIX}'] = np.ones((2048,), np.float32)
  with pytest.raises(T.CheckpointMismatchError, match='layer_with_weights-102'):
    T.convert_variables(values, variables, config)


def test_depthwise_layout():
  entry = T.Entry('k', 'params', ('h', 'depthwise_3x3', 'kernel'), 'depthwise')
  tf_kernel = np.arange(3 * 3 * 4, dtype=np.float32).reshape(3, 3, 4, 1)
  flax_kernel = T.to_flax_layout(tf_kernel, entry, (3, 3, 1, 4))
  for c in range(4):
    np.testing.assert_array_equal(flax_kernel[:, :, 0, c], tf_kernel[:, :, c, 0])
  with pytest.raises(T.CheckpointMismatchError, match='Shape mismatch'):
    T.to_flax_layout(tf_kernel, entry, (3, 3, 1, 5))


def test_read_checkpoint_from_directories(r50_case):
  prefix = r50_case['prefix']
  checkpoint_dir = os.path.dirname(prefix)
  archive = os.path.dirname(checkpoint_dir)
  assert T.checkpoint_prefix(checkpoint_dir) == prefix
  assert T.checkpoint_prefix(archive) == prefix
  with pytest.raises(FileNotFoundError):
    T.checkpoint_prefix(os.path.join(archive, 'nope'))


# ---- the importer -------------------------------------------------------------------------

PIPELINE_CONFIG = textwrap.dedent('''\
    # CenterNet meta-architecture from the "Objects as Points" paper.
    model {
      center_net {
        num_classes: 2
        feature_extractor {
          type: "resnet_v1_50_fpn"
        }
        image_resizer {
          keep_aspect_ratio_resizer {
            min_dimension: 512
            max_dimension: 512
            pad_to_max_dimension: true
          }
        }
        object_detection_task {
          task_loss_weight: 1.0
          offset_loss_weight: 1.0
          scale_loss_weight: 0.1
          localization_loss {
            l1_localization_loss {
            }
          }
        }
        object_center_params {
          object_center_loss_weight: 1.0
          min_box_overlap_iou: 0.7
          max_box_predictions: 100
          classification_loss {
            penalty_reduced_logistic_focal_loss {
              alpha: 2.0
              beta: 4.0
            }
          }
        }
      }
    }
    train_config {
      batch_size: 128
      num_steps: 140000
      data_augmentation_options {
        random_horizontal_flip {
        }
      }
      data_augmentation_options {
        random_adjust_hue {
        }
      }
      optimizer {
        adam_optimizer: {
          epsilon: 1e-7
          learning_rate: {
            cosine_decay_learning_rate {
              learning_rate_base: 1e-3
              total_steps: 250000
            }
          }
        }
        use_moving_average: false
      }
      fine_tune_checkpoint: "PATH_TO_BE_CONFIGURED"
      fine_tune_checkpoint_type: "classification"
    }
    train_input_reader: {
      label_map_path: "PATH_TO_BE_CONFIGURED/label_map.txt"
      tf_record_input_reader {
        input_path: "PATH_TO_BE_CONFIGURED/train2017-?????-of-00256.tfrecord"
      }
    }
    eval_config: {
      metrics_set: "coco_detection_metrics"
      use_moving_averages: false
      batch_size: 1;
    }
    ''')


def test_pipeline_config_parser():
  from centernet_jax import import_tf_checkpoint as imp  # pylint: disable=g-import-not-at-top
  zoo = imp.read_pipeline_config(PIPELINE_CONFIG)
  assert (zoo.feature_extractor, zoo.num_classes, zoo.input_size) == ('resnet_v1_50_fpn', 2, 512)
  assert not zoo.use_depthwise and zoo.keypoint_tasks == () and zoo.max_box_predictions == 100
  assert zoo.model_overrides() == {'backbone': 'resnet_v1_fpn', 'depth': 50,
                                   'depthwise_heads': False, 'num_classes': 2}
  parsed = text_proto.parse_text_proto(PIPELINE_CONFIG)
  assert len(parsed['train_config'][0]['data_augmentation_options']) == 2
  assert parsed['eval_config'][0]['metrics_set'] == ['coco_detection_metrics']
  kp = imp.read_pipeline_config(PIPELINE_CONFIG.replace(
      'object_detection_task {',
      'keypoint_estimation_task { task_name: "human_pose" keypoint_label_to_std { key: "nose" '
      'value: 0.26 } }\n    use_depthwise: true\n    object_detection_task {'))
  assert kp.keypoint_tasks == ('human_pose',) and kp.use_depthwise


@pytest.mark.slow  # an archive imported and restored
def test_import_archive_writes_a_restorable_workdir(r50_case, tmp_path):
  from centernet_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from centernet_jax import import_tf_checkpoint as imp  # pylint: disable=g-import-not-at-top
  archive = os.path.dirname(os.path.dirname(r50_case['prefix']))
  with open(os.path.join(archive, 'pipeline.config'), 'w') as f:
    f.write(PIPELINE_CONFIG)
  experiments = tmp_path / 'experiments'
  experiments.mkdir()
  (experiments / 'zoo_r50.py').write_text(textwrap.dedent('''\
      from centernet_jax import config_base

      def get_config():
        c = config_base.base_config()
        c.dataset.label_map_mode = 'id_minus_one'
        return c
      '''))
  (experiments / 'other.py').write_text(textwrap.dedent('''\
      from centernet_jax import config_base

      def get_config():
        c = config_base.base_config()
        c.model.depth = 101
        return c
      '''))
  workdir = str(tmp_path / 'work')
  summary = imp.import_archive(archive, workdir, experiments_dir=str(experiments))
  assert summary['experiment'].endswith('zoo_r50.py')  # the only matching experiment
  meta = checkpointing.read_meta(workdir)
  assert meta['label_map']['names'][:2] == ['person', 'bicycle']
  assert meta['config']['model']['num_classes'] == 2
  assert meta['config']['dataset']['label_map_mode'] == 'id_minus_one'
  # Restores for inference (as the detector) and as the full TrainState (as the trainer).
  from centernet_jax import model_variables  # pylint: disable=g-import-not-at-top
  from centernet_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from centernet_jax import run_files  # pylint: disable=g-import-not-at-top
  run = run_files.restore_for_inference(workdir)
  assert run.step == 0 and run.label_map['names'][:2] == ['person', 'bicycle']
  tx, _ = optimizer_lib.make_optimizer(run.config)
  manager = checkpointing.make_manager(workdir, read_only=True)
  state = run_files.restore_train_state(
      manager, model_variables.abstract_train_state(run.model, tx, 64))
  manager.close()
  assert int(state.step) == 0
  expected = r50_case['values'][f'{HEADS}/box.Sscale/0/layer_with_weights-1/bias{SUFFIX}']
  np.testing.assert_array_equal(run.variables['params']['box_scale_0']['conv_1x1']['bias'],
                                expected)
  np.testing.assert_array_equal(state.params['box_scale_0']['conv_1x1']['bias'], expected)
  # A second import into the same workdir is refused; so is a mismatching experiment.
  with pytest.raises(imp.ArchiveImportError, match='already holds'):
    imp.import_archive(archive, workdir, experiments_dir=str(experiments))
  with pytest.raises(imp.ArchiveImportError, match='model.depth is 101'):
    imp.import_archive(archive, str(tmp_path / 'w2'),
                       experiment=str(experiments / 'other.py'))
