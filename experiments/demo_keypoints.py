r"""The keypoint demo: a narrow ResNet-18 FPN CenterNet with a keypoint task on synthetic figures.

Command (what `make demo-keypoints` runs):
  python -m centernet_jax.main --config experiments/demo_keypoints.py \
      --workdir runs/demo_keypoints

The synthetic COCO-format keypoint set (stick figures with 9 named joints, left/right pairs,
some occluded or unlabelled, plus distractor balls; centernet_jax/data/synthetic_keypoints.py)
is generated under data_cache/synthetic_keypoints on first use.

Expected result: MEASURED FIGURES GO HERE.
"""

from centernet_jax import config_base


def get_config():
  c = config_base.base_config()
  c.dataset.source = 'synthetic_keypoints'
  c.dataset.synthetic_dir = 'data_cache/synthetic_keypoints'
  c.dataset.synthetic_num_train = 2000
  c.dataset.synthetic_num_val = 200
  c.dataset.synthetic_image_size = 128
  c.dataset.max_boxes = 8
  c.dataset.cache_decoded = True

  c.input.size = 128
  c.input.random_crop = False
  c.input.random_pad = False

  c.model.backbone = 'resnet_v1_fpn'
  c.model.depth = 18
  c.model.width_multiplier = 0.5
  c.model.head_channels = 64

  c.keypoints.enabled = True  # joints, skeleton and flip permutation from the dataset

  c.optimizer.schedule = 'cosine'
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_learning_rate = 2e-4
  c.optimizer.warmup_steps = 200
  c.batch_size = 16
  c.num_train_steps = 3000

  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 500
  c.eval.batch_size = 20
  return c
