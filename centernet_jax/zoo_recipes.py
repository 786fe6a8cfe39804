"""The TF2 zoo's COCO 2017 recipes as config building blocks (docs/odapi_reference.md,
sections 5, 8 and 9); each `experiments/centernet_*.py` row composes them.

Every block sets all the fields it owns, so a row's config does not depend on
`config_base` defaults that might change. Units: pixels for sizes, steps for schedules.
"""

from __future__ import annotations

import ml_collections

from centernet_jax import config_base

# Official ground truth for evaluation (not TFDS's areas); override with
# --config.dataset.val_annotations=... / --config.dataset.val_keypoint_annotations=...
VAL_INSTANCES = 'data_cache/instances_val2017.json'
VAL_PERSON_KEYPOINTS = 'data_cache/person_keypoints_val2017.json'


def coco17(*, keypoints: bool = False, person_only: bool = False,
           max_detections: int = 100) -> ml_collections.ConfigDict:
  """A base config on COCO 2017 from TFDS, the zoo's label layout and detection count.

  Args:
    keypoints: read `coco_keypoints/2017` (this project's TFDS builder: every instance plus
      the 17 person joints) and enable the zoo's `human_pose` task (`keypoints_human_pose`).
    person_only: one class, person (the MobileNetV2 keypoint row): its ground truth is the
      person keypoint file.
    max_detections: `max_box_predictions` of the row.
  """
  c = config_base.base_config()
  c.dataset.source = 'tfds'
  c.dataset.tfds_name = 'coco_keypoints/2017' if keypoints else 'coco/2017'
  c.dataset.val_annotations = VAL_PERSON_KEYPOINTS if person_only else VAL_INSTANCES
  if keypoints:
    c.dataset.val_keypoint_annotations = VAL_PERSON_KEYPOINTS
  c.dataset.label_map_mode = 'id_minus_one'  # channel = COCO id - 1 (90 channels, or 1)
  c.dataset.max_boxes = 100  # max_number_of_boxes
  c.eval.max_detections = max_detections
  c.init_checkpoint = ''  # a converted init (see the row's docstring); '' = from scratch
  if keypoints:
    keypoints_human_pose(c)
  return c


def keypoints_human_pose(c: ml_collections.ConfigDict) -> None:
  """The zoo's keypoint task (docs/odapi_reference.md, 5): `human_pose` on person, joints, skeleton
  and flip permutation from the person category of the keypoint files, per-joint std devs and
  OKS sigmas from the COCO joint names (keypoint_spec.py), offsets and regression on the
  radius-3 disc, per-keypoint offsets, loss weights 1.0 / 1.0 / 0.1."""
  c.keypoints.enabled = True
  c.keypoints.class_name = 'person'
  c.keypoints.task_name = 'human_pose'
  c.keypoints.heatmap_loss_weight = 1.0
  c.keypoints.offset_loss_weight = 1.0
  c.keypoints.regression_loss_weight = 0.1
  c.keypoints.offset_peak_radius = 3
  c.keypoints.per_keypoint_offset = True


# The zoo's colour ops, in its order (hue 0.02, contrast and saturation 0.8-1.25,
# brightness 0.2; each on x/255, clipped).
COLOUR = ('random_adjust_hue(max_delta=0.02)|'
          'random_adjust_contrast(min_delta=0.8, max_delta=1.25)|'
          'random_adjust_saturation(min_delta=0.8, max_delta=1.25)|'
          'random_adjust_brightness(max_delta=0.2)')


def crop_pad_augmentation(c: ml_collections.ConfigDict, size: int = 512, *,
                          patch_gaussian: bool = False) -> None:
  """The 512 rows' augmentation: flip (with the keypoint permutation on keypoint rows),
  `random_crop_image` (aspect 0.5-1.7, random_coef 0.25), colour, `random_absolute_pad_image`
  200/200 black.

  patch_gaussian: also `random_patch_gaussian` right after the flip (size 1-250, stddev
  0-1, random_coef 0: always applied), as in the MobileNetV2 keypoint config.
  """
  c.input.size = size
  ops = ['random_horizontal_flip(probability=0.5)']
  if patch_gaussian:
    ops.append('random_patch_gaussian(min_patch_size=1, max_patch_size=250, '
               'min_gaussian_stddev=0.0, max_gaussian_stddev=1.0, random_coef=0.0)')
  ops += ['random_crop_image(min_object_covered=1.0, aspect_ratio_range=(0.5, 1.7), '
          'area_range=(0.1, 1.0), overlap_thresh=0.3, clip_boxes=True, random_coef=0.25)',
          COLOUR,
          'random_absolute_pad_image(max_height_padding=200, max_width_padding=200)']
  c.input.augmentations = '|'.join(ops)


def square_crop_augmentation(c: ml_collections.ConfigDict, size: int = 1024) -> None:
  """The Hourglass 1024 rows' augmentation: flip, colour (as above), then
  `random_square_crop_by_scale` (scale 0.6-1.3, max border 128, 8 scales); no crop, no pad."""
  c.input.size = size
  c.input.augmentations = '|'.join([
      'random_horizontal_flip(probability=0.5)', COLOUR,
      'random_square_crop_by_scale(scale_min=0.6, scale_max=1.3, max_border=128, '
      'num_scales=8)'])


def model(c: ml_collections.ConfigDict, backbone: str, *, num_classes: int = 90,
          depth: int | None = None, depthwise_heads: bool = False, **backbone_kwargs) -> None:
  """The network: a backbone family (models/__init__.py) at full width, 256-channel heads."""
  c.model.backbone = backbone
  if depth is not None:
    if backbone == 'hourglass':
      c.model.backbone_kwargs.hourglass.depth = depth
    else:
      c.model.depth = depth
  c.model.width_multiplier = 1.0
  c.model.num_classes = num_classes
  c.model.head_channels = 256
  c.model.depthwise_heads = depthwise_heads
  for key, value in backbone_kwargs.items():  # the backbone module's own settings
    c.model.backbone_kwargs[backbone][key] = value


def adam_cosine(c: ml_collections.ConfigDict, *, batch_size: int, num_train_steps: int,
                learning_rate: float, warmup_learning_rate: float, warmup_steps: int,
                adam_epsilon: float = 1e-7) -> None:
  """Adam, cosine decay to 0 after a linear warmup (`cosine_decay_learning_rate`)."""
  c.optimizer.adam_epsilon = adam_epsilon
  c.optimizer.schedule = 'cosine'
  c.optimizer.learning_rate = learning_rate
  c.optimizer.warmup_learning_rate = warmup_learning_rate
  c.optimizer.warmup_steps = warmup_steps
  c.batch_size = batch_size
  c.num_train_steps = num_train_steps


def adam_manual_steps(c: ml_collections.ConfigDict, *, batch_size: int, num_train_steps: int,
                      boundaries: tuple[int, ...], rates: tuple[float, ...],
                      adam_epsilon: float = 1e-7) -> None:
  """Adam, piecewise-constant `rates` changing at step `boundaries` (`manual_step_learning_rate`)."""
  c.optimizer.adam_epsilon = adam_epsilon
  c.optimizer.schedule = 'manual_steps'
  c.optimizer.manual_boundaries = tuple(boundaries)
  c.optimizer.manual_rates = tuple(rates)
  c.batch_size = batch_size
  c.num_train_steps = num_train_steps
