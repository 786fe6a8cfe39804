"""Keypoint archives: the converter's key names against the OD API's, and the importer."""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import checkpointing
from centernet_jax import config_base
from centernet_jax import import_tf_checkpoint as imp
from centernet_jax import keypoint_spec as kps
from centernet_jax import models
from centernet_jax import run_files
from centernet_jax import tf_checkpoint as T

from tests.test_tf_checkpoint import assert_keys_match_odapi
from tests.test_tf_checkpoint import write_tf_checkpoint

SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'
HEADS = 'model/_prediction_head_dict'

# sha256 of the sorted "key shape" lines of the OD API's keypoint-model checkpoints (17 COCO
# joints, `human_pose` task, per-keypoint offsets; tf-object-detection-api 0.1, TF 2.15)
# without the documented skips (docs/odapi_reference.md 3; the optional readable list:
# tests/test_tf_checkpoint.py, REFERENCE_DIR).
# (feature extractor, depthwise heads, classes) -> (reference name, number of keys, digest)
ODAPI_KEYPOINT_KEY_DIGESTS = {
    ('resnet_v2_50', False, 90): (
        'r50v2_kpts', 326, 'dc4397153a52dcbccdf4a34289430b73d4906fc6d6bfc855986a54a8d201cf99'),
    ('mobilenet_v2_fpn_sep_conv', True, 1): (
        'mnv2fpn_kpts', 319, 'd97063c855bb21e3fac4c9410361b6501c91616f8ef2c553bf69804b9483fcc6'),
    ('hourglass_104', False, 90): (
        'hg104_kpts', 848, '28a3dcfdc9a1cf463ac0cdaa4265de4032b5440f16f51d8183aa29a208327c59'),
}


def _model_config(feature_extractor, depthwise):
  c = config_base.base_config()
  c.model.update_from_flattened_dict(models.zoo_feature_extractors()[feature_extractor])
  c.model.depthwise_heads = depthwise
  return c.model


def _coco_spec():
  return kps.spec_from_category(kps.coco_person_category(), 0)


@pytest.mark.parametrize('feature_extractor,depthwise,num_classes',
                         sorted(ODAPI_KEYPOINT_KEY_DIGESTS))
def test_keypoint_keys_match_the_odapi_checkpoint(feature_extractor, depthwise, num_classes):
  config = _model_config(feature_extractor, depthwise)
  model = models.build_model(config, num_classes, _coco_spec())
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)),
                                                train=False))
  shapes = T.expected_checkpoint_shapes(variables, config)
  _, extra_skips, _ = T.variable_entries(variables, config)
  assert f'{HEADS}/human_pose.Skeypoint.Sregression/0/layer_with_weights-1/kernel{SUFFIX}' in (
      shapes)
  assert_keys_match_odapi(shapes, extra_skips,
                          *ODAPI_KEYPOINT_KEY_DIGESTS[(feature_extractor, depthwise, num_classes)])


PIPELINE = textwrap.dedent('''\
    model {
      center_net {
        num_classes: 2
        feature_extractor { type: "resnet_v1_18_fpn" }
        image_resizer {
          keep_aspect_ratio_resizer { min_dimension: 128 max_dimension: 128
                                      pad_to_max_dimension: true }
        }
        object_detection_task { task_loss_weight: 1.0 offset_loss_weight: 1.0
                                scale_loss_weight: 0.1 }
        object_center_params { object_center_loss_weight: 1.0 max_box_predictions: 100 }
        keypoint_label_map_path: "label_map.txt"
        keypoint_estimation_task {
          task_name: "human_pose"
          task_loss_weight: 1.0
          keypoint_class_name: "/m/01g317"
          keypoint_label_to_std { key: "nose" value: 0.26 }
          keypoint_heatmap_loss_weight: 1.0
          keypoint_offset_loss_weight: 1.0
          keypoint_regression_loss_weight: 0.1
          offset_peak_radius: 3
          per_keypoint_offset: true
          unmatched_keypoint_score: 0.2
        }
      }
    }
    ''')

EXPERIMENT = textwrap.dedent('''\
    from centernet_jax import config_base

    def get_config():
      c = config_base.base_config()
      c.model.depth = 18
      c.input.size = 128
      c.dataset.label_map_mode = 'id_minus_one'
      c.keypoints.enabled = {enabled}
      return c
    ''')


@pytest.fixture(scope='module')
def keypoint_archive(tmp_path_factory):
  """A resnet_v1_18_fpn keypoint archive (2 classes, 17 joints) with random values."""
  root = tmp_path_factory.mktemp('kp_archive')
  config = _model_config('resnet_v1_18_fpn', False)
  model = models.build_model(config, 2, _coco_spec())
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                                train=False))
  shapes = T.expected_checkpoint_shapes(variables, config)
  rng = np.random.default_rng(0)
  values = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
  archive = root / 'centernet_r18_kpts'
  write_tf_checkpoint(str(archive / 'checkpoint' / 'ckpt'), values)
  (archive / 'pipeline.config').write_text(PIPELINE)
  experiments = root / 'experiments'
  experiments.mkdir()
  (experiments / 'centernet_r18_kpts.py').write_text(EXPERIMENT.format(enabled=True))
  (experiments / 'boxes_r18.py').write_text(EXPERIMENT.format(enabled=False))
  return archive, experiments, values


def _restore(workdir, spec):
  """(checkpoint meta, config, variables) of an imported workdir, restored for inference."""
  meta = checkpointing.read_meta(workdir)
  run = run_files.restore_for_inference(workdir)
  assert run.keypoint_spec == spec and run.step == 0
  return meta, run.config, run.variables


def test_import_keypoint_archive(keypoint_archive, tmp_path):
  archive, experiments, values = keypoint_archive
  zoo = imp.read_pipeline_config(PIPELINE)
  assert zoo.keypoint_settings[0]['unmatched_score'] == 0.2
  assert zoo.keypoint_settings[0]['per_keypoint_offset'] is True
  workdir = str(tmp_path / 'kp')
  summary = imp.import_archive(str(archive), workdir, experiments_dir=str(experiments))
  assert summary['experiment'].endswith('centernet_r18_kpts.py')
  assert summary['keypoints'].startswith('human_pose: 17 joints')
  assert summary['skipped_keypoint_head_variables'] == 0
  spec = kps.KeypointSpec.from_json_dict(
      json.loads((tmp_path / 'kp' / 'label_map.json').read_text())['keypoints'])
  assert spec.names == kps.COCO_KEYPOINT_NAMES and spec.channel == 0
  assert spec.flip_permutation == kps.COCO_FLIP_PERMUTATION and spec.oks_sigmas[0] == 0.026
  meta, config, variables = _restore(workdir, spec)
  assert meta['label_map']['keypoints']['task_name'] == 'human_pose'
  assert config.keypoints.enabled and config.keypoints.unmatched_score == 0.2
  for kind in ('heatmap', 'offset', 'regression'):
    key = f'{HEADS}/human_pose.Skeypoint.S{kind}/0/layer_with_weights-1/kernel{SUFFIX}'
    np.testing.assert_array_equal(
        variables['params'][f'human_pose_keypoint_{kind}_0']['conv_1x1']['kernel'], values[key])


def test_import_keypoint_archive_boxes_only(keypoint_archive, tmp_path):
  archive, experiments, _ = keypoint_archive
  workdir = str(tmp_path / 'boxes')
  summary = imp.import_archive(str(archive), workdir, experiments_dir=str(experiments),
                               skip_keypoint_heads=True)
  assert summary['skipped_keypoint_head_variables'] == 3 * 4  # 3 heads x (2 convs x 2 vars)
  assert summary['keypoints'] is None
  meta, config, variables = _restore(workdir, None)
  assert not config.keypoints.enabled and 'keypoints' not in meta['label_map']
  assert not any(k.startswith('human_pose') for k in variables['params'])
  # A box-only experiment for a keypoint import is refused, naming the field.
  with pytest.raises(imp.ArchiveImportError, match='keypoints.enabled is False'):
    imp.import_archive(str(archive), str(tmp_path / 'x'),
                       experiment=str(experiments / 'boxes_r18.py'))
