"""A tiny experiment for tests: a narrow ResNet-18 FPN on a small synthetic set at 64x64."""

import ml_collections

from centernet_jax import config_base


def tiny_config(data_dir: str) -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.dataset.source = 'synthetic'
  c.dataset.synthetic_dir = str(data_dir)
  c.dataset.synthetic_num_train = 32
  c.dataset.synthetic_num_val = 8
  c.dataset.synthetic_image_size = 64
  c.dataset.synthetic_min_object_size = 8
  c.dataset.max_boxes = 12
  c.dataset.shuffle_buffer = 64
  c.input.size = 64
  c.input.random_crop = False
  c.input.random_pad = False
  c.input.color_jitter = False
  c.model.depth = 18
  c.model.width_multiplier = 0.25
  c.model.head_channels = 16
  c.optimizer.warmup_steps = 2
  c.optimizer.learning_rate = 1e-3
  c.batch_size = 8
  c.num_train_steps = 4
  c.log_every_steps = 1
  c.eval_every_steps = 0
  c.checkpoint_every_steps = 2
  c.eval.batch_size = 4
  return c


def tiny_keypoint_config(data_dir: str) -> ml_collections.ConfigDict:
  """`tiny_config` on the synthetic keypoint set (9 joints), with the keypoint task on."""
  c = tiny_config(data_dir)
  c.dataset.source = 'synthetic_keypoints'
  c.dataset.synthetic_num_train = 16
  c.dataset.synthetic_num_val = 4
  c.dataset.max_boxes = 6
  c.keypoints.enabled = True
  return c
