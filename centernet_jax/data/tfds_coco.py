"""Reading TFDS `coco/2017` (and this project's `coco_keypoints/2017`) records.

Facts this relies on (tfds 4.9.10, builder `Coco` 1.1.0): features `image` (uint8 jpeg),
`image/id`, `objects/{id, area, bbox (normalized y-first), label, is_crowd}`; `label` is a
ClassLabel 0..79 in the order of the annotation file's categories (sorted COCO ids), NOT a COCO
category id. Labels are mapped back to category ids through the official 80-entry
(id, name) table below, then to channels through the LabelMap, so channels match those of the
official JSON (`contiguous`: 0..79; `id_minus_one`: id - 1, 90 channels). Crowd objects are
excluded; images without objects are kept.

For evaluation the ground truth is the official val JSON (`config.dataset.val_annotations`),
never the TFDS boxes/areas (areas are truncated to int, crowd handling differs).

Ordering guarantees (weaker than the file-backed sources, because TFRecords are streams):
- each process reads its own `tfds.split_for_jax_process` share (drop_remainder=True), so the
  global batch depends on the process count;
- epoch e of process p reads its share with a file order and a shuffle buffer seeded by
  (config.seed, e, p): deterministic given the same process count;
- resuming at `start_step` skips whole epochs without reading them and, inside the first
  epoch, skips records without decoding their images (images are decoded after the skip);
- augmentation seeds come from the global stream position, as for the other sources;
- the stream ends after enough epochs for `config.num_train_steps`.
"""

from __future__ import annotations

import math

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from centernet_jax.data import coco_categories
from centernet_jax.data import coco_json

# The official COCO 2017 detection categories (id, name), in id order = TFDS label order.
COCO_CATEGORIES = coco_categories.COCO_CATEGORIES

# TFDS label (0..79) -> COCO category id.
LABEL_TO_CATEGORY_ID = np.asarray([cid for cid, _ in COCO_CATEGORIES], np.int64)


def check_label_names(builder) -> None:
  """Raises if the builder's label names are not the official table's (when it has names)."""
  try:
    names = list(builder.info.features['objects']['label'].names)
  except Exception:  # pylint: disable=broad-except
    return
  expected = [n for _, n in COCO_CATEGORIES]
  if len(names) == 80 and names != expected and not all(n == str(i)
                                                        for i, n in enumerate(names)):
    raise ValueError(f'TFDS label names differ from the official COCO table: {names[:5]}...')


def convert_example(example, lm: coco_json.LabelMap):
  """A TFDS coco example dict -> {'image' uint8 [H,W,3], 'boxes' [N,4] normalized y-first,
  'classes' int32 [N] channels, 'image_id' int32}.

  `example['image']` may be a decoded uint8 tensor or encoded bytes (SkipDecoding).
  Crowd objects are removed; boxes are clipped to [0, 1] and empty ones dropped. When the
  objects have `keypoints` / `keypoint_visibility` (`coco_keypoints/2017`), the output also
  holds 'keypoints' float32 [N, J, 3]: (y, x) normalized and labelled (v > 0) per joint.
  """
  image = example['image']
  if image.dtype == tf.string:
    image = tf.io.decode_image(image, channels=3, expand_animations=False, dtype=tf.uint8)
  image.set_shape([None, None, 3])
  objects = example['objects']
  bbox = tf.reshape(tf.cast(objects['bbox'], tf.float32), [-1, 4])
  label = tf.reshape(tf.cast(objects['label'], tf.int64), [-1])
  crowd = tf.reshape(tf.cast(objects['is_crowd'], tf.bool), [-1])
  keep = tf.logical_not(crowd)
  bbox = tf.clip_by_value(tf.boolean_mask(bbox, keep), 0.0, 1.0)
  label = tf.boolean_mask(label, keep)
  cat_ids = tf.gather(tf.constant(LABEL_TO_CATEGORY_ID), label)
  id_to_channel = np.full([int(LABEL_TO_CATEGORY_ID.max()) + 1], -1, np.int64)
  known = lm.id_to_channel_array()
  id_to_channel[:len(known)] = known[:len(id_to_channel)]
  channels = tf.gather(tf.constant(id_to_channel), cat_ids)
  # Empty boxes and classes outside the label map (a subset label map) are dropped.
  valid = tf.logical_and(bbox[:, 2] > bbox[:, 0], bbox[:, 3] > bbox[:, 1]) & (channels >= 0)
  out = {
      'image': image,
      'boxes': tf.boolean_mask(bbox, valid),
      'classes': tf.cast(tf.boolean_mask(channels, valid), tf.int32),
      'image_id': tf.cast(example['image/id'], tf.int32),
  }
  if 'keypoints' in objects:
    kp = tf.cast(objects['keypoints'], tf.float32)
    num_joints = kp.shape[-2]
    kp = tf.reshape(kp, [-1, num_joints, 2])
    vis = tf.reshape(tf.cast(objects['keypoint_visibility'], tf.float32), [-1, num_joints])
    kp = tf.concat([kp, tf.cast(vis > 0, tf.float32)[..., tf.newaxis]], axis=-1)
    out['keypoints'] = tf.boolean_mask(tf.boolean_mask(kp, keep), valid)
  return out


def _skip_decoding():
  return {'image': tfds.decode.SkipDecoding()}


def _epoch_seed(config, epoch, process_index):
  return int(np.random.SeedSequence([int(config.seed) & 0x7FFFFFFF, 0x7FD5, epoch,
                                     process_index]).generate_state(1)[0] & 0x7FFFFFFF)


def builder_of(config):
  """The TFDS builder of `dataset.tfds_name` in `dataset.tfds_data_dir`."""
  d = config.dataset
  return tfds.builder(d.tfds_name, data_dir=d.tfds_data_dir or None)


def train_records(config, builder, *, start_step=0, process_index=0, process_count=1):
  """(this process's undecoded records from `start_step`, enumerated by j = the process's
  example count from step 0; as `(j, record)` pairs) -- see the module docstring's order."""
  d = config.dataset
  check_label_names(builder)
  split = tfds.split_for_jax_process(d.tfds_train_split, process_index=process_index,
                                     process_count=process_count, drop_remainder=True)
  n = int(builder.info.splits[split].num_examples)
  if n == 0:
    raise ValueError(f'{d.tfds_name} {d.tfds_train_split}: empty share for process '
                     f'{process_index}/{process_count}')
  global_batch = int(config.batch_size)
  local = global_batch // process_count
  j0 = int(start_step) * local
  e0, off = divmod(j0, n)
  end = max(int(config.num_train_steps), int(start_step) + 1) * local
  e_end = max(e0 + 1, int(math.ceil(end / n)))

  def epoch_ds(e):
    seed = _epoch_seed(config, e, process_index)
    rc = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
    ds = builder.as_dataset(split=split, shuffle_files=True, read_config=rc,
                            decoders=_skip_decoding())
    if d.shuffle_buffer > 1:
      ds = ds.shuffle(int(d.shuffle_buffer), seed=seed, reshuffle_each_iteration=False)
    return ds

  ds = epoch_ds(e0).skip(off)
  for e in range(e0 + 1, e_end):
    ds = ds.concatenate(epoch_ds(e))
  logging.info('tfds train: %d examples per process share, epochs %d..%d', n, e0, e_end - 1)

  return ds.enumerate(start=j0)


def eval_records(config, builder, *, process_index=0, process_count=1):
  """(this process's undecoded val records, its count, the max count, total)."""
  d = config.dataset
  check_label_names(builder)
  split = d.tfds_val_split
  if int(config.eval.num_examples) > 0:
    split = f'{split}[:{int(config.eval.num_examples)}]'
  subs = tfds.even_splits(split, n=process_count)
  counts = [int(builder.info.splits[s].num_examples) for s in subs]
  ds = builder.as_dataset(split=subs[process_index], shuffle_files=False,
                          decoders=_skip_decoding())
  return ds, counts[process_index], max(counts), sum(counts)
