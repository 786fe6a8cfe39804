"""Every TF2-zoo experiment file: its recipe, and one sharded train step + one decode.

The zoo rows are listed explicitly (box rows and keypoint rows); a listed file that does not
exist fails, and so does an `experiments/centernet_*.py` file that is not listed
(`test_every_zoo_experiment_file_is_listed`).

The train-step tests run each experiment as it is (model widths, augmentations, schedule,
optimizer, losses), except: the data source becomes the embedded synthetic set (keypoint rows:
the synthetic keypoint set), tiny, with the experiment's label map mode (so the number of
heatmap channels is that mode's on the synthetic ids); input 128; batch 2 on a 2-device data
mesh (of the 4 simulated CPU devices of conftest.py); the variables are filled without
compiling `model.init` (`model_variables.filled_variables`: XLA on CPU takes minutes to
compile the jitted init of these full-size models, far more than their train step). The
hourglass rows run at input 256 and width 0.25, and the rows of one hourglass group share
one compiled step (`test_hourglass_rows_train_step_and_decode` says why). The box rows are
traced, not compiled and run: each one's network is a keypoint row's less the keypoint heads,
up to the block count or the centre head's class count (`TRACED_BOX_ROWS` says why nothing is
lost).
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import evaluate
from centernet_jax import experiments
from centernet_jax import import_tf_checkpoint
from centernet_jax import model_variables
from centernet_jax import models
from centernet_jax import optimizer as optimizer_lib
from centernet_jax import sharding
from centernet_jax import train
from centernet_jax.data import augment
from centernet_jax.data import pipeline
from centernet_jax.data import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, 'experiments')

COSINE_1E3 = dict(schedule='cosine', learning_rate=1e-3, warmup_learning_rate=2.5e-4,
                  warmup_steps=5000)
MANUAL_1E3 = dict(schedule='manual_steps', manual_boundaries=(90000, 120000),
                  manual_rates=(1e-3, 1e-4, 1e-5))
# The zoo's ops in order, with the arguments its configs give (docs/odapi_reference.md, 8).
FLIP = ('random_horizontal_flip', {'probability': 0.5})
CROP = ('random_crop_image', {'min_object_covered': 1.0, 'aspect_ratio_range': (0.5, 1.7),
                              'area_range': (0.1, 1.0), 'overlap_thresh': 0.3,
                              'clip_boxes': True, 'random_coef': 0.25})
COLOUR = (('random_adjust_hue', {'max_delta': 0.02}),
          ('random_adjust_contrast', {'min_delta': 0.8, 'max_delta': 1.25}),
          ('random_adjust_saturation', {'min_delta': 0.8, 'max_delta': 1.25}),
          ('random_adjust_brightness', {'max_delta': 0.2}))
PAD = ('random_absolute_pad_image', {'max_height_padding': 200, 'max_width_padding': 200})
PATCH_GAUSSIAN = ('random_patch_gaussian', {'min_patch_size': 1, 'max_patch_size': 250,
                                            'min_gaussian_stddev': 0.0,
                                            'max_gaussian_stddev': 1.0, 'random_coef': 0.0})
SQUARE_CROP = ('random_square_crop_by_scale', {'scale_min': 0.6, 'scale_max': 1.3,
                                               'max_border': 128, 'num_scales': 8})
ZOO_AUG = (FLIP, CROP, *COLOUR, PAD)
HG1024_AUG = (FLIP, *COLOUR, SQUARE_CROP)
MOBILENET_AUG = (FLIP, PATCH_GAUSSIAN, CROP, *COLOUR, PAD)

# Zoo row (= experiment file name) -> recipe (docs/odapi_reference.md, 9; the
# R50 v1 FPN boxes row and the MobileNetV2 rows are the files' documented nearest configs).
BOX_ROWS = {
    'centernet_hg104_512x512_coco17_tpu-8': dict(
        size=512, batch=128, steps=140000, eps=1e-7, opt=MANUAL_1E3, aug=ZOO_AUG,
        backbone='hourglass'),
    'centernet_hg104_1024x1024_coco17_tpu-32': dict(
        size=1024, batch=128, steps=50000, eps=1e-7, opt=COSINE_1E3, aug=HG1024_AUG,
        backbone='hourglass'),
    'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8': dict(
        size=512, batch=128, steps=250000, eps=1e-7, opt=COSINE_1E3, aug=ZOO_AUG,
        backbone='resnet_v1_fpn', depth=50),
    'centernet_resnet101_v1_fpn_512x512_coco17_tpu-8': dict(
        size=512, batch=128, steps=140000, eps=1e-7, opt=MANUAL_1E3, aug=ZOO_AUG,
        backbone='resnet_v1_fpn', depth=101),
    'centernet_resnet50_v2_512x512_coco17_tpu-8': dict(
        size=512, batch=128, steps=250000, eps=1e-7, opt=COSINE_1E3, aug=ZOO_AUG,
        backbone='resnet_v2', depth=50),
    'centernet_mobilenetv2fpn_512x512_coco17_od': dict(
        size=512, batch=128, steps=300000, eps=1e-8,
        opt=dict(schedule='cosine', learning_rate=5e-3, warmup_learning_rate=1e-4,
                 warmup_steps=5000), aug=MOBILENET_AUG, backbone='mobilenet_v2_fpn',
        use_separable_conv=True, depthwise_heads=True),
}
KEYPOINT_ROWS = {
    'centernet_hg104_512x512_kpts_coco17_tpu-32': dict(
        size=512, batch=128, steps=250000, eps=1e-7, opt=COSINE_1E3, aug=ZOO_AUG,
        backbone='hourglass'),
    'centernet_hg104_1024x1024_kpts_coco17_tpu-32': dict(
        size=1024, batch=128, steps=250000, eps=1e-7, opt=COSINE_1E3, aug=HG1024_AUG,
        backbone='hourglass'),
    'centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8': dict(
        size=512, batch=128, steps=250000, eps=1e-7, opt=COSINE_1E3, aug=ZOO_AUG,
        backbone='resnet_v1_fpn', depth=50),
    'centernet_resnet50_v2_512x512_kpts_coco17_tpu-8': dict(
        size=512, batch=128, steps=250000, eps=1e-7, opt=COSINE_1E3, aug=ZOO_AUG,
        backbone='resnet_v2', depth=50),
    'centernet_mobilenetv2fpn_512x512_coco17_kpts': dict(
        size=512, batch=512, steps=300000, eps=1e-8,
        opt=dict(schedule='cosine', learning_rate=5e-3, warmup_learning_rate=1e-4,
                 warmup_steps=5000), aug=MOBILENET_AUG, backbone='mobilenet_v2_fpn',
        use_separable_conv=True, depthwise_heads=True, max_detections=20, num_classes=1,
        val_annotations='person_keypoints_val2017.json'),
}
ROWS = {**BOX_ROWS, **KEYPOINT_ROWS}
TEST_INPUT_SIZE = 128
HOURGLASS_TEST_INPUT_SIZE = 256  # see test_hourglass_rows_train_step_and_decode
HOURGLASS_TEST_WIDTH = 0.25
TEST_DEVICES = 2
# XLA:CPU options for the tests' compilations (not the numerics): ~35% less compile time for
# these full-size models, slower code (irrelevant for one step on a tiny batch).
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _path(row):
  return os.path.join(EXPERIMENTS, row + '.py')


def _load(row):
  if not os.path.exists(_path(row)):
    pytest.fail(f'experiments/{row}.py does not exist')
  return experiments.load_config(_path(row))


def _is_keypoint(config):
  return bool(config.get('keypoints') and config.keypoints.get('enabled', False))


def test_every_zoo_experiment_file_is_listed():
  files = sorted(f[:-3] for f in os.listdir(EXPERIMENTS)
                 if f.startswith('centernet_') and f.endswith('.py'))
  assert set(files) <= set(ROWS), f'unlisted zoo experiment files: {set(files) - set(ROWS)}'
  for row in BOX_ROWS:  # the box rows are this project's; they must all be there
    assert os.path.exists(_path(row)), row


@pytest.mark.parametrize('row', sorted(ROWS))
def test_recipe(row):
  config = _load(row)
  want = ROWS[row]
  assert config.input.size == want['size']
  assert config.batch_size == want['batch']
  assert config.num_train_steps == want['steps']
  assert config.optimizer.adam_epsilon == want['eps']
  assert config.optimizer.grad_clip_norm == 0.0
  for key, value in want['opt'].items():
    have = config.optimizer[key]
    assert (tuple(have) if isinstance(value, tuple) else have) == value, key
  ops = augment.parse_spec(config.input.augmentations)
  assert [(op.name, op.kwargs) for op in ops] == list(want['aug'])
  m = config.model
  assert m.backbone == want['backbone']
  if 'depth' in want:
    assert m.depth == want['depth']
  assert m.width_multiplier == 1.0
  assert bool(m.depthwise_heads) == want.get('depthwise_heads', False)
  if m.backbone == 'mobilenet_v2_fpn':
    assert bool(m.backbone_kwargs.mobilenet_v2_fpn.use_separable_conv) == (
        want['use_separable_conv'])
  assert m.dtype == 'float32'  # use_bfloat16 is set in no zoo config
  # Loss weights and target settings shared by every zoo row.
  assert (config.loss.center_weight, config.loss.scale_weight, config.loss.offset_weight) == (
      1.0, 0.1, 1.0)
  assert config.targets.min_overlap == 0.7
  assert config.dataset.max_boxes == 100
  assert config.eval.max_detections == want.get('max_detections', 100)
  # COCO 2017 from TFDS (with keypoints: this project's coco_keypoints builder), zoo label
  # layout, official val JSON.
  assert config.dataset.source == 'tfds'
  assert config.dataset.tfds_name == (
      'coco_keypoints/2017' if row in KEYPOINT_ROWS else 'coco/2017')
  assert config.dataset.label_map_mode == 'id_minus_one'
  assert config.dataset.val_annotations.endswith(
      want.get('val_annotations', 'instances_val2017.json'))
  assert config.init_checkpoint == ''
  assert config.model.num_classes == want.get('num_classes', 90)
  if row in BOX_ROWS:
    assert not _is_keypoint(config)
  else:  # the zoo's human_pose task (docs/odapi_reference.md, 5)
    k = config.keypoints
    assert _is_keypoint(config) and k.class_name == 'person' and k.task_name == 'human_pose'
    assert (k.heatmap_loss_weight, k.offset_loss_weight, k.regression_loss_weight) == (
        1.0, 1.0, 0.1)
    assert k.offset_peak_radius == 3 and k.per_keypoint_offset
    assert config.dataset.val_keypoint_annotations.endswith('person_keypoints_val2017.json')


# The box rows' pipeline.config model fields (feature extractor, use_depthwise; all 90 classes
# at their input size): the importer must accept each experiment for its archive.
BOX_ROW_FEATURE_EXTRACTORS = {
    'centernet_hg104_512x512_coco17_tpu-8': ('hourglass_104', False),
    'centernet_hg104_1024x1024_coco17_tpu-32': ('hourglass_104', False),
    'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8': ('resnet_v1_50_fpn', False),
    'centernet_resnet101_v1_fpn_512x512_coco17_tpu-8': ('resnet_v1_101_fpn', False),
    'centernet_resnet50_v2_512x512_coco17_tpu-8': ('resnet_v2_50', False),
    'centernet_mobilenetv2fpn_512x512_coco17_od': ('mobilenet_v2_fpn_sep_conv', True),
}


@pytest.mark.parametrize('row', sorted(BOX_ROWS))
def test_box_row_matches_its_pipeline_config_model(row):
  config = _load(row)
  fe, depthwise = BOX_ROW_FEATURE_EXTRACTORS[row]
  zoo = import_tf_checkpoint.ZooModel(
      feature_extractor=fe, num_classes=90, input_size=BOX_ROWS[row]['size'],
      use_depthwise=depthwise, keypoint_tasks=(), max_box_predictions=100, channel_means=(),
      channel_stds=(), bgr_ordering=fe == 'hourglass_104')
  assert import_tf_checkpoint.config_mismatches(config, zoo) == []
  # ... and refuses it for another archive (here: another input size).
  zoo.input_size = 2 * zoo.input_size
  assert import_tf_checkpoint.config_mismatches(config, zoo)


@pytest.mark.parametrize('row', sorted(ROWS))
def test_importer_finds_the_experiment_by_archive_name(row, tmp_path):
  config = _load(row)
  zoo = import_tf_checkpoint.ZooModel(
      feature_extractor='x', num_classes=90, input_size=config.input.size,
      use_depthwise=False, keypoint_tasks=(), max_box_predictions=100, channel_means=(),
      channel_stds=(), bgr_ordering=False)
  archive = tmp_path / row
  archive.mkdir()
  found = import_tf_checkpoint.find_experiment(str(archive), zoo, EXPERIMENTS)
  assert os.path.samefile(found, _path(row))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  return tmp_path_factory.mktemp('zoo_synthetic')


def _small(config, data_root):
  """The experiment on a tiny synthetic set at a small input, batch 2 on 2 devices."""
  kp = _is_keypoint(config)
  d = config.dataset
  d.source = 'synthetic_keypoints' if kp else 'synthetic'
  d.synthetic_dir = str(data_root / ('keypoints' if kp else 'boxes'))
  d.synthetic_num_train = 8
  d.synthetic_num_val = 4
  d.synthetic_image_size = 96
  d.synthetic_min_object_size = 8
  d.val_annotations = ''
  d.max_boxes = 12
  d.shuffle_buffer = 8
  if kp:  # the synthetic set's own keypoint category ('figure', 9 joints) and files
    d.train_keypoint_annotations = ''
    d.val_keypoint_annotations = ''
    config.keypoints.class_name = ''
  if config.model.backbone == 'hourglass':
    config.input.size = HOURGLASS_TEST_INPUT_SIZE
    config.model.width_multiplier = HOURGLASS_TEST_WIDTH
  else:
    config.input.size = TEST_INPUT_SIZE
  config.batch_size = TEST_DEVICES
  config.eval.batch_size = TEST_DEVICES
  config.mesh.data = TEST_DEVICES
  # Heatmap channels from the experiment's label map mode on the synthetic categories.
  num_classes = sources.resolve(config).num_classes
  config.model.num_classes = num_classes
  return config


def _one_step_and_decode(config, execute=True):
  """As `train.Trainer` + `train_and_evaluate` set them up, with random variables instead of
  the jitted init: one sharded train step on a pipeline batch, then one decode of a val batch.

  `execute=False` traces both programs with `jax.eval_shape` instead of compiling and running
  them: the model, targets, losses, optimizer update and decoder are all built for the real
  batch and state structures (a shape or structure error fails), but nothing is compiled, so
  the outputs' shapes and structures are checked, not their values.
  """
  assert jax.device_count() >= TEST_DEVICES
  size = int(config.input.size)
  mesh = sharding.make_mesh(config.mesh)
  replicated = sharding.replicated(mesh)
  num_classes = sources.resolve(config).num_classes
  spec = sources.resolve(config).keypoint_spec
  kp_args = () if spec is None else (spec,)
  model = models.build_model(config.model, num_classes, *kp_args)
  tx, schedule = optimizer_lib.make_optimizer(config)
  state = train.train_state_from_variables(
      model_variables.filled_variables(model, size), tx)
  state_sharding = sharding.state_shardings(mesh, jax.eval_shape(lambda: state))
  state = jax.device_put(state, state_sharding)
  keys = train.train_keys(spec)
  batch = next(pipeline.make_train_iterator(config, sources.resolve(config)))
  assert batch['image'].shape == (TEST_DEVICES, size, size, 3)
  global_batch = sharding.to_global(batch, mesh, keys)
  assert len(global_batch['image'].sharding.device_set) == TEST_DEVICES
  step = jax.jit(train.make_train_step(model, tx, schedule, config, num_classes, *kp_args),
                 donate_argnums=(0,), out_shardings=(state_sharding, replicated))
  if execute:
    compiled = step.lower(state, global_batch).compile(compiler_options=FAST_COMPILE)
    new_state, metrics = compiled(state, global_batch)
    metrics = jax.device_get(metrics)
    assert int(new_state.step) == 1
    assert all(math.isfinite(float(v)) for v in metrics.values()), metrics
    assert float(metrics['loss']) > 0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_state.params))
  else:
    new_state, metrics = jax.eval_shape(step, state, global_batch)
    assert (jax.tree.structure(new_state) == jax.tree.structure(state) and
            [(x.shape, x.dtype) for x in jax.tree.leaves(new_state)] ==
            [(x.shape, x.dtype) for x in jax.tree.leaves(state)])
    assert 'loss' in metrics and all(m.shape == () for m in metrics.values()), metrics

  kw = {} if spec is None else {'keypoint_params': evaluate.keypoint_decode_params(spec, config)}
  predict_fn = evaluate.make_predict_fn(model, input_size=size,
                                        max_detections=config.eval.max_detections, **kw)
  eval_iter, num_batches = pipeline.make_eval_iterator(config, sources.resolve(config))
  assert num_batches >= 1
  local = next(iter(eval_iter))
  variables = {'params': new_state.params, 'batch_stats': new_state.batch_stats}
  eval_batch = sharding.to_global(local, mesh, evaluate.PREDICT_KEYS)
  k = config.eval.max_detections
  if execute:
    predict = predict_fn.lower(variables, eval_batch).compile(compiler_options=FAST_COMPILE)
    detections = sharding.to_host(predict(variables, eval_batch))
    assert np.all(np.isfinite(detections['boxes']))
    assert np.all(detections['classes'] < num_classes)
  else:
    detections = jax.eval_shape(predict_fn, variables, eval_batch)
  assert detections['boxes'].shape == (TEST_DEVICES, k, 4)
  assert detections['scores'].shape == (TEST_DEVICES, k)
  if spec is not None:
    assert detections['keypoints'].shape == (TEST_DEVICES, k, spec.num_keypoints, 2)
  return metrics


NON_HOURGLASS_ROWS = sorted(r for r in ROWS if ROWS[r]['backbone'] != 'hourglass')
# Hourglass rows by head set: within a group the models are identical at the test size, so one
# row runs the step (the 1024 one: its square crop) and the others' own data pipeline and
# schedule are checked (`_check_pipeline_and_schedule`).
HOURGLASS_GROUPS = {
    'boxes': ('centernet_hg104_1024x1024_coco17_tpu-32', 'centernet_hg104_512x512_coco17_tpu-8'),
    'keypoints': ('centernet_hg104_1024x1024_kpts_coco17_tpu-32',
                  'centernet_hg104_512x512_kpts_coco17_tpu-32'),
}
# Box rows whose step and decode are traced, not compiled and run (`_one_step_and_decode(...,
# execute=False)`; a compile is 40-150 s of this 2-core CPU), each with the keypoint row whose
# step and decode are compiled and run instead, and the model fields allowed to differ from that
# row's. The executed row's network is the box row's plus the keypoint heads, with at most:
# - 'depth': more of the same bottleneck blocks (ResNet101 V1 FPN: 23 in conv4 instead of
#   ResNet50's 6; its checkpoint layer map is tested in tests/test_tf_checkpoint.py);
# - 'num_classes': another channel count of the centre head's last 1x1 conv (the MobileNetV2
#   FPN box row keeps 90 on the synthetic ids, the keypoint row's label map gives fewer).
# So the values its executed step checks (finite loss, gradients and parameters) come from the
# same layer code; the box-only step and decoder (no keypoint task) are traced in full here, and
# compiled and run for the tiny model in tests/test_train.py.
TRACED_BOX_ROWS = {
    'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8':
        ('centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8', ()),
    'centernet_resnet101_v1_fpn_512x512_coco17_tpu-8':
        ('centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8', ('depth',)),
    'centernet_resnet50_v2_512x512_coco17_tpu-8':
        ('centernet_resnet50_v2_512x512_kpts_coco17_tpu-8', ()),
    'centernet_mobilenetv2fpn_512x512_coco17_od':
        ('centernet_mobilenetv2fpn_512x512_coco17_kpts', ('num_classes',)),
    'centernet_hg104_1024x1024_coco17_tpu-32':
        ('centernet_hg104_1024x1024_kpts_coco17_tpu-32', ()),
}


def _step_and_decode_or_trace(row, config, data_root):
  """`_one_step_and_decode` of `row`'s small `config`, traced for a `TRACED_BOX_ROWS` row after
  checking that its executed twin's network (less the allowed fields), losses and targets are
  its own."""
  twin, may_differ = TRACED_BOX_ROWS.get(row, (None, ()))
  if twin is not None:
    executed = _small(_load(twin), data_root)
    for section in ('model', 'loss', 'targets'):
      mine, theirs = config[section].to_dict(), executed[section].to_dict()
      if section == 'model':
        for field in may_differ:
          del mine[field], theirs[field]
      assert mine == theirs, (twin, section)
  return _one_step_and_decode(config, execute=twin is None)


@pytest.mark.slow  # a full-size model's train step and decoder compiled
@pytest.mark.parametrize('row', NON_HOURGLASS_ROWS)
def test_train_step_and_decode(row, data_root):
  _step_and_decode_or_trace(row, _small(_load(row), data_root), data_root)


def _check_pipeline_and_schedule(config):
  batch = next(pipeline.make_train_iterator(config, sources.resolve(config)))
  size = int(config.input.size)
  assert batch['image'].shape == (TEST_DEVICES, size, size, 3)
  assert batch['box_mask'].sum() > 0
  _, schedule = optimizer_lib.make_optimizer(config)
  rates = [float(schedule(s)) for s in range(0, config.num_train_steps + 1, 10000)]
  assert all(math.isfinite(r) and 0 <= r <= config.optimizer.learning_rate * (1 + 1e-6)
             for r in rates)


@pytest.mark.slow  # an Hourglass-104 train step and decoder compiled
@pytest.mark.parametrize('group', sorted(HOURGLASS_GROUPS))
def test_hourglass_rows_train_step_and_decode(group, data_root):
  """Hourglass rows, at input 256 and width 0.25 (both overrides are the test's).

  Input 256, not 128: at 128 the innermost hourglass level is 1x1, so with a batch of 2 its
  BatchNorms (epsilon 1e-5) normalise over 2 values per channel, and the fresh network's
  gradients explode (global norm ~1e13 at width 0.25, inf at full width); at 256 they are
  ~1e3. Width 0.25: a full-width Hourglass-104 step at 256 takes minutes of CPU (the layer
  structure, which is what the step's compilation depends on, is unchanged).

  The box group's step and decode are traced, not compiled and run: its step row is in
  `TRACED_BOX_ROWS`, which says why nothing is lost.
  """
  rows = [r for r in HOURGLASS_GROUPS[group] if os.path.exists(_path(r))]
  if not rows:
    pytest.fail(f'none of {HOURGLASS_GROUPS[group]} exists')
  configs = [_small(_load(r), data_root) for r in rows]
  for other in configs[1:]:
    assert other.model.to_dict() == configs[0].model.to_dict()
    assert other.loss.to_dict() == configs[0].loss.to_dict()
    assert other.targets.to_dict() == configs[0].targets.to_dict()
    if 'keypoints' in configs[0]:
      assert other.keypoints.to_dict() == configs[0].keypoints.to_dict()
  _step_and_decode_or_trace(rows[0], configs[0], data_root)
  for other in configs[1:]:
    _check_pipeline_and_schedule(other)
