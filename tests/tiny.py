"""A tiny experiment for tests: a narrow ResNet-18 FPN on a small synthetic set at 64x64."""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf

from centernet_jax import checkpointing
from centernet_jax import config_base
from centernet_jax import inference
from centernet_jax import models
from centernet_jax import optimizer
from centernet_jax import predict
from centernet_jax import run_files
from centernet_jax import train
from centernet_jax.data import pipeline
from centernet_jax.data import sources


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
  c.input.augmentations = 'random_horizontal_flip'
  c.model.depth = 18
  c.model.width_multiplier = 0.25
  c.model.head_channels = 16
  # A schedule that does not depend on num_train_steps (cosine decays to 0 there): the tests
  # that train for different numbers of steps then compile the same train step, which the
  # persistent compilation cache of tests/conftest.py compiles once.
  c.optimizer.schedule = 'manual_steps'
  c.optimizer.manual_boundaries = (2,)
  c.optimizer.manual_rates = (2.5e-4, 1e-3)
  c.optimizer.warmup_steps = 2  # these two: for tests that set schedule = 'cosine'
  c.optimizer.learning_rate = 1e-3
  # A large Adam epsilon keeps round-off-level gradients (conv biases that feed a BatchNorm)
  # from becoming full-size updates whose sign depends on the all-reduce order, so runs over
  # different meshes and process counts end equal (tests/test_multiprocess.py).
  c.optimizer.adam_epsilon = 1e-3
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


def write_coco_split(root: str, split: str, *, num_images: int = 3, size: int = 32,
                     categories=({'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}),
                     keypoint_names=None) -> dict[str, Any]:
  """Writes `root/<split>/*.png` (`size` x `size`, one box each) and `root/<split>.json`;
  returns the JSON dict (already written; rewrite it with `write_json` after changing it).

  Annotations carry every field COCOeval reads (id, area, iscrowd). With `keypoint_names`,
  category 1 gets them and its annotations 'keypoints' (all labelled, inside the box).
  """
  img_dir = os.path.join(root, split)
  os.makedirs(img_dir, exist_ok=True)
  cats = [dict(c) for c in categories]
  if keypoint_names:
    cats[0]['keypoints'] = list(keypoint_names)
    cats[0]['skeleton'] = []
  images, anns = [], []
  rng = np.random.default_rng(len(split))
  for i in range(num_images):
    name = f'{split}{i}.png'
    Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(
        os.path.join(img_dir, name))
    images.append({'id': i + 1, 'file_name': name, 'height': size, 'width': size})
    ann = {'id': 100 + i, 'image_id': i + 1, 'category_id': cats[i % len(cats)]['id'],
           'bbox': [4.0, 4.0, 12.0, 10.0], 'area': 120.0, 'iscrowd': 0}
    if keypoint_names and ann['category_id'] == cats[0]['id']:
      ann['keypoints'] = [v for j in range(len(keypoint_names)) for v in (6 + j, 8, 2)]
      ann['num_keypoints'] = len(keypoint_names)
    anns.append(ann)
  data = {'images': images, 'annotations': anns, 'categories': cats}
  write_json(os.path.join(root, f'{split}.json'), data)
  return data


def write_json(path: str, data: Any) -> None:
  with open(path, 'w') as f:
    json.dump(data, f)


def coco_json_config(root: str, *, keypoint_names=None, num_images: int = 3
                     ) -> ml_collections.ConfigDict:
  """`tiny_config` reading a small two-split COCO-format set written under `root`
  (`write_coco_split`): root/train.json + root/train/, root/val.json + root/val/."""
  c = tiny_config(os.path.join(root, 'unused_synthetic'))
  c.dataset.source = 'coco_json'
  for split in ('train', 'val'):
    write_coco_split(root, split, num_images=num_images, keypoint_names=keypoint_names)
    c.dataset[f'{split}_annotations'] = os.path.join(root, f'{split}.json')
    c.dataset[f'{split}_images'] = os.path.join(root, split)
  c.batch_size = 4
  c.eval.batch_size = 4
  if keypoint_names:
    c.keypoints.enabled = True
  return c


class FakeCenterNet:
  """A compile-in-a-second stand-in for the CenterNet module: `apply(variables, images, train)`
  returns the heads of docs/conventions.md (one feature output) computed from 4x4 block means
  of the image, for tests of code that only needs outputs of the right form."""

  def __init__(self, num_classes: int, num_joints: int = 0, task_name: str = 'human_pose'):
    self.num_classes = num_classes
    self.num_joints = num_joints
    self.task_name = task_name

  def init(self):
    return {'params': {'bias': -2.0 * np.ones([self.num_classes], np.float32)}}

  def apply(self, variables, images, train=False):
    del train
    b, s = images.shape[0], images.shape[1]
    blocks = images.reshape(b, s // 4, 4, s // 4, 4, 3).mean(axis=(2, 4, 5)) / 255.0
    ramp = jnp.arange(self.num_classes, dtype=jnp.float32) / max(self.num_classes, 1)
    heads = {
        'object_center': 6.0 * blocks[..., None] * (1.0 - ramp) + variables['params']['bias'],
        'box/scale': jnp.full(blocks.shape + (2,), 6.0),
        'box/offset': jnp.full(blocks.shape + (2,), 0.5),
    }
    if self.num_joints:
      j = self.num_joints
      prefix = f'{self.task_name}/keypoint/'
      heads[prefix + 'heatmap'] = jnp.repeat(4.0 * blocks[..., None] - 2.0, j, axis=-1)
      heads[prefix + 'offset'] = jnp.zeros(blocks.shape + (2 * j,))
      heads[prefix + 'regression'] = jnp.ones(blocks.shape + (2 * j,))
    return [heads]


def random_variables(model, size: int, seed: int = 0, gain: float = 0.5) -> dict[str, Any]:
  """The model's variables drawn with numpy, without compiling `model.init` (its random number
  generation compiles for minutes on a loaded 2-core CPU): kernels normal with std
  `gain / sqrt(fan_in)` (small enough that the untrained network's logits stay unsaturated,
  so scores differ from peak to peak), biases small normal, BN scale / variance 1, the rest 0."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3), jnp.float32), train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = getattr(path[-1], 'key', str(path[-1]))
    if name == 'kernel':
      fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
      return jnp.asarray(rng.normal(0.0, gain / np.sqrt(fan_in), leaf.shape), leaf.dtype)
    if name == 'bias':
      return jnp.asarray(rng.normal(0.0, 0.5, leaf.shape), leaf.dtype)
    return jnp.full(leaf.shape, 1.0 if name in ('scale', 'var') else 0.0, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def write_random_workdir(config: ml_collections.ConfigDict, workdir: str, *, step: int = 1,
                         seed: int = 0) -> None:
  """A workdir with one checkpoint of `config`'s model at `random_variables` (no training):
  the state, config and label map as training saves them."""
  facts = sources.resolve(config)
  num_classes, spec = facts.num_classes, facts.keypoint_spec
  model = models.build_model(config.model, num_classes, spec)
  tx, _ = optimizer.make_optimizer(config)
  variables = random_variables(model, int(config.input.size), seed)
  state = train.TrainState(step=jnp.asarray(step, jnp.int32), params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}),
                           opt_state=tx.init(variables['params']))
  manager = checkpointing.make_manager(workdir)
  checkpointing.save(manager, step, state, run_files.checkpoint_meta(
      config, facts.label_map, facts.keypoint_spec, step))
  checkpointing.close(manager)


def evaluation_detections(workdir: str, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
  """Per image, the detections evaluation computes: `pipeline.preprocess` without augmentation
  (evaluation's resize and pad) and `predict.make_predict_fn` on the checkpoint's variables,
  all images in one batch."""
  run = run_files.restore_for_inference(workdir, None)
  examples = [pipeline.preprocess(
      {'image': tf.constant(im), 'boxes': tf.zeros([0, 4]), 'classes': tf.zeros([0], tf.int32),
       'image_id': 0}, config=run.config) for im in images]
  batch = {k: np.stack([ex[k].numpy() for ex in examples]) for k in predict.PREDICT_KEYS}
  predict_fn = predict.make_predict_fn(
      run.model, input_size=int(run.config.input.size),
      max_detections=int(run.config.eval.max_detections),
      keypoint_params=predict.keypoint_decode_params(run.keypoint_spec, run.config))
  out = jax.device_get(predict_fn(run.variables, batch))
  return [{k: np.asarray(v[i]) for k, v in out.items()} for i in range(len(images))]
