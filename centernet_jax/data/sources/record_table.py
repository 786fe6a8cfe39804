"""Host records as captured tensors, for random access by index inside tf.data."""

from __future__ import annotations

from absl import logging
import numpy as np
import tensorflow as tf

from centernet_jax.data import coco_json


def decode_image_file(path):
  """uint8 [H, W, 3] RGB from an encoded image file (grayscale/RGBA converted)."""
  img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False,
                           dtype=tf.uint8)
  img.set_shape([None, None, 3])
  return img


class RecordTable:
  """`coco_json.ImageRecord`s as tensors: image i decoded from its file (or the in-memory
  cache), its boxes, classes and keypoints sliced out of flat arrays."""

  def __init__(self, records: list[coco_json.ImageRecord], cache_decoded=False,
               num_parallel_calls=tf.data.AUTOTUNE, cache_max_mib=2048.0):
    self.size = len(records)
    # surrogateescape: a file name that is not UTF-8 (read from the JSON as lone surrogates)
    # goes back to the bytes the file system has.
    self.paths = tf.constant([r.path.encode('utf-8', 'surrogateescape') for r in records],
                             tf.string)
    self.image_ids = tf.constant([r.image_id for r in records], tf.int32)
    counts = [len(r.boxes) for r in records]
    self.splits = tf.constant(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    boxes = [r.boxes for r in records if len(r.boxes)]
    classes = [r.classes for r in records if len(r.classes)]
    self.boxes = tf.constant(
        np.concatenate(boxes).astype(np.float32) if boxes else np.zeros([0, 4], np.float32))
    self.classes = tf.constant(
        np.concatenate(classes).astype(np.int32) if classes else np.zeros([0], np.int32))
    self.keypoints = None
    if records and records[0].keypoints is not None:
      num_joints = records[0].keypoints.shape[1]
      kps = [r.keypoints for r in records if len(r.keypoints)]
      self.keypoints = tf.constant(np.concatenate(kps).astype(np.float32) if kps
                                   else np.zeros([0, num_joints, 3], np.float32))
    self.cache = None
    if cache_decoded:
      # The JSON's sizes say what the cache would hold before anything is decoded, so a
      # config made for a small set (the demo's) cannot fill the RAM on a large one.
      need_mib = sum(r.height * r.width * 3 for r in records) / 2**20
      if need_mib > cache_max_mib:
        logging.warning('dataset.cache_decoded: the %d images would take %.0f MiB decoded, '
                        'more than dataset.cache_max_mib=%.0f; reading them from the files '
                        'instead.', len(records), need_mib, cache_max_mib)
      else:
        self._build_cache(num_parallel_calls)

  def _build_cache(self, num_parallel_calls):
    ds = tf.data.Dataset.from_tensor_slices(self.paths).map(
        decode_image_file, num_parallel_calls=num_parallel_calls, deterministic=True)
    arrays = list(ds.as_numpy_iterator())
    shapes = np.asarray([a.shape[:2] for a in arrays], np.int64).reshape(-1, 2)
    sizes = shapes[:, 0] * shapes[:, 1] * 3
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros([0], np.uint8)
    logging.info('cached %d decoded images in memory (%.1f MiB)', len(arrays), flat.nbytes / 2**20)
    self.cache = (tf.constant(flat), tf.constant(offsets), tf.constant(shapes))

  def image(self, idx):
    """uint8 [H, W, 3] of record `idx`."""
    if self.cache is None:
      return decode_image_file(self.paths[idx])
    flat, offsets, shapes = self.cache
    hw = shapes[idx]
    img = tf.reshape(flat[offsets[idx]:offsets[idx + 1]], tf.concat([hw, [3]], 0))
    img.set_shape([None, None, 3])
    return img

  def targets(self, idx):
    """(boxes float32 [N, 4] pixels, classes int32 [N], image_id int32)."""
    a, b = self.splits[idx], self.splits[idx + 1]
    return self.boxes[a:b], self.classes[a:b], self.image_ids[idx]

  def keypoints_of(self, idx):
    """float32 [N, J, 3] (y, x, labelled) pixels, or None when read without keypoints."""
    if self.keypoints is None:
      return None
    return self.keypoints[self.splits[idx]:self.splits[idx + 1]]
