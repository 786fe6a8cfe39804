"""tf.data input pipeline producing the host batch of docs/conventions.md.

The source (data/sources/) yields decoded examples. Evaluation: resize keeping the aspect
ratio so the longer side is S = config.input.size, with the legacy bilinear kernel WITHOUT
half-pixel centers (`ResizeBilinear(half_pixel_centers=False)`, as the TF2 OD API) -> zero pad
bottom/right to S x S -> boxes re-normalized to the padded canvas, padded to `max_boxes` with
`box_mask`, and batches. Training: the augmentations (`config.input.augmentations`,
augment.py) seeded by the stream position move a view of the decoded uint8 image, which
`view.to_canvas` resamples once onto the same keep-aspect, zero-padded canvas (the same
kernel on the same pixels, so exactly cropping, padding and resizing in turn, then rounded);
the colour ops' parameters travel in the batch and the train step applies them on device
(colour_augment.py).

Batch (numpy, one per process):
  image uint8 [B,S,S,3] (training) or float32 (evaluation), raw 0..255 RGB; boxes float32
  [B,M,4]; classes int32 [B,M]; box_mask float32 [B,M]; image_id int32 [B];
  original_size int32 [B,2]; true_size int32 [B,2]; example_mask float32 [B];
  with a keypoint spec also keypoints float32 [B,M,J,2] (y, x) normalized to the padded
  canvas like the boxes, and keypoint_mask float32 [B,M,J] (1 labelled; 0 unlabelled,
  outside an augmentation crop, or padding). Training batches also hold colour_params
  float32 [B,K] and colour_windows float32 [B,K,4] (colour_augment.py; K = the colour ops of
  input.augmentations, 0 without any).
`original_size` is the decoded image's (h, w) before any augmentation. Eval padding examples
have image_id -1, example_mask 0, zero image/boxes and original_size = true_size = (S, S).

Training order and augmentation are a pure function of (config.seed, global position)
(stream.py), so `start_step=k` resumes exactly (nothing skipped is decoded) and the global
batch does not depend on the process count. (The 'tfds' sources stream TFRecords instead;
see data/tfds_coco.py for their weaker guarantees.)
"""

from __future__ import annotations

import math
from typing import Iterator

from absl import logging
import numpy as np
import tensorflow as tf

from centernet_jax.data import augment
from centernet_jax.data import coco_json
from centernet_jax.data import sources
from centernet_jax.data import stream
from centernet_jax.data import view

_GPUS_HIDDEN = False


def hide_gpus_from_tf():
  """Makes TF see no accelerator (JAX owns it). Safe to call repeatedly."""
  global _GPUS_HIDDEN
  if _GPUS_HIDDEN:
    return
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError as e:  # TF already initialised its devices
    logging.warning('could not hide GPUs from TF: %s', e)
  _GPUS_HIDDEN = True


def _num_parallel_calls(config):
  n = int(config.dataset.num_parallel_calls)
  return tf.data.AUTOTUNE if n <= 0 else n


def _options():
  opts = tf.data.Options()
  opts.deterministic = True
  opts.threading.max_intra_op_parallelism = 1
  return opts


# ---------------------------------------------------------------------------------------------
# Per-example preprocessing.


def resize_and_pad(image, boxes, size: int):
  """Keep-aspect resize (longer side = size, legacy bilinear, no half-pixel centers) + pad.

  Args:
    image: float32 [H, W, 3].
    boxes: float32 [N, 4] normalized to `image`.
    size: S.
  Returns:
    (image float32 [S, S, 3] zero padded bottom/right, boxes normalized to the S x S canvas,
     true_size int32 [2] = (resized h, resized w)).
  """
  shape = tf.shape(image)
  h = tf.cast(shape[0], tf.float64)
  w = tf.cast(shape[1], tf.float64)
  scale = tf.constant(float(size), tf.float64) / tf.maximum(h, w)
  nh = tf.clip_by_value(tf.cast(tf.round(h * scale), tf.int32), 1, size)
  nw = tf.clip_by_value(tf.cast(tf.round(w * scale), tf.int32), 1, size)
  resized = tf.raw_ops.ResizeBilinear(
      images=image[tf.newaxis], size=tf.stack([nh, nw]), align_corners=False,
      half_pixel_centers=False)[0]
  padded = tf.image.pad_to_bounding_box(resized, 0, 0, size, size)
  padded = tf.ensure_shape(padded, [size, size, 3])
  fy = tf.cast(nh, tf.float32) / float(size)
  fx = tf.cast(nw, tf.float32) / float(size)
  boxes = boxes * tf.stack([fy, fx, fy, fx])
  return padded, boxes, tf.stack([nh, nw])


def preprocess(example, *, config, augmenter: augment.Augmenter | None = None, seed=None):
  """One decoded example -> the per-example batch dict (no batch dim).

  Args:
    example: the source's decoded example (sources/base.py): image uint8 [H, W, 3]; boxes
      float32 [N, 4] y-first normalized to the image; classes int32 [N]; image_id int32;
      optionally keypoints float32 [N, J, 2] (y, x normalized) and keypoint_mask [N, J]
      (then 'keypoints' [M, J, 2] and 'keypoint_mask' [M, J] are in the output too).
    config: the full config.
    augmenter: the training augmentations, applied with `seed` (shape [2]); None with
      seed None: none (evaluation). Training outputs also hold 'colour_params' [K] and
      'colour_windows' [K, 4] (colour_augment.py) and a uint8 image.
  """
  size = int(config.input.size)
  max_boxes = int(config.dataset.max_boxes)
  shape = tf.shape(example['image'])
  original_size = tf.stack([shape[0], shape[1]])
  # Training keeps the decoded uint8: the augmentations only view it and `view.to_canvas`
  # reads it once.
  image = example['image']
  ex = {'image': image if seed is not None else tf.cast(image, tf.float32),
        'boxes': tf.reshape(tf.cast(example['boxes'], tf.float32), [-1, 4]),
        'classes': tf.reshape(tf.cast(example['classes'], tf.int32), [-1])}
  with_kps = 'keypoints' in example
  if with_kps:
    num_joints = int(example['keypoints'].shape[-2])
    ex['keypoints'] = tf.reshape(tf.cast(example['keypoints'], tf.float32), [-1, num_joints, 2])
    ex['keypoint_mask'] = tf.reshape(tf.cast(example['keypoint_mask'], tf.float32),
                                     [-1, num_joints])
  extra = {}
  if seed is not None:
    # Training: the augmented view is resampled once onto the canvas, and crosses to the
    # device as uint8, a quarter of the float32 bytes (rounding moves a pixel by at most half
    # a grey level); the colour ops follow on device. Evaluation keeps float32, so its
    # preprocessing stays equal to the OD API's resizer (docs/parity.md).
    ex = augmenter(ex, seed)
    image, scale, true_size = view.to_canvas(ex, size)
    boxes = ex['boxes'] * tf.concat([scale, scale], 0)
    k = augmenter.num_device_ops
    windows = ex['colour_windows'] / tf.cast(tf.concat([ex['view_size'], ex['view_size']], 0),
                                             tf.float32) * tf.concat([scale, scale], 0)
    extra = {'colour_params': tf.ensure_shape(ex['colour_params'], [k]),
             'colour_windows': tf.ensure_shape(
                 tf.clip_by_value(windows, 0.0, tf.concat([scale, scale], 0)), [k, 4])}
  else:
    image, boxes, true_size = resize_and_pad(ex['image'], ex['boxes'], size)
  boxes = boxes[:max_boxes]
  classes = ex['classes'][:max_boxes]
  n = tf.shape(boxes)[0]
  boxes = tf.pad(boxes, [[0, max_boxes - n], [0, 0]])
  classes = tf.pad(classes, [[0, max_boxes - n]])
  box_mask = tf.cast(tf.range(max_boxes) < n, tf.float32)
  if with_kps:
    # The same rescale as the boxes: normalized to the image -> to the padded canvas.
    scale = tf.cast(true_size, tf.float32) / float(size)
    keypoints = (ex['keypoints'] * scale)[:max_boxes]
    kp_mask = ex['keypoint_mask'][:max_boxes]
    keypoints = tf.where(kp_mask[:, :, tf.newaxis] > 0, keypoints, 0.0)
    keypoints = tf.pad(keypoints, [[0, max_boxes - n], [0, 0], [0, 0]])
    kp_mask = tf.pad(kp_mask, [[0, max_boxes - n], [0, 0]])
    extra.update(keypoints=tf.ensure_shape(keypoints, [max_boxes, num_joints, 2]),
                 keypoint_mask=tf.ensure_shape(kp_mask, [max_boxes, num_joints]))
  return {
      **extra,
      'image': image,
      'boxes': tf.ensure_shape(boxes, [max_boxes, 4]),
      'classes': tf.ensure_shape(classes, [max_boxes]),
      'box_mask': box_mask,
      'image_id': tf.cast(example['image_id'], tf.int32),
      'original_size': tf.cast(original_size, tf.int32),
      'true_size': tf.cast(true_size, tf.int32),
      'example_mask': tf.constant(1.0, tf.float32),
  }


def padding_example(config, num_keypoints: int = 0):
  """The eval padding example (example_mask 0, image_id -1); keypoint keys when
  num_keypoints > 0."""
  size = int(config.input.size)
  m = int(config.dataset.max_boxes)
  extra = {}
  if num_keypoints:
    extra = {'keypoints': tf.zeros([m, num_keypoints, 2], tf.float32),
             'keypoint_mask': tf.zeros([m, num_keypoints], tf.float32)}
  return {
      **extra,
      'image': tf.zeros([size, size, 3], tf.float32),
      'boxes': tf.zeros([m, 4], tf.float32),
      'classes': tf.zeros([m], tf.int32),
      'box_mask': tf.zeros([m], tf.float32),
      'image_id': tf.constant(-1, tf.int32),
      'original_size': tf.constant([size, size], tf.int32),
      'true_size': tf.constant([size, size], tf.int32),
      'example_mask': tf.constant(0.0, tf.float32),
  }


def make_augmenter(config, facts: sources.DatasetFacts) -> augment.Augmenter:
  """The ops of `config.input.augmentations`, with the keypoint spec's flip permutation."""
  spec = facts.keypoint_spec
  return augment.Augmenter(config.input.augmentations,
                           flip_permutation=spec.flip_permutation if spec else None)


# ---------------------------------------------------------------------------------------------
# Iterators.


def make_train_dataset(config, facts: sources.DatasetFacts, *, start_step=0, process_index=0,
                       process_count=1, dataset: coco_json.CocoDataset | None = None):
  """The batched training tf.data.Dataset of this process (see make_train_iterator).

  `dataset`: the train split already loaded (startup.check_before_build); None: read it.
  """
  hide_gpus_from_tf()
  local = stream.local_batch_size(int(config.batch_size), process_count)
  stream.check_process(process_index, process_count)
  train = sources.for_config(config).train_stream(
      facts, start_step=start_step, process_index=process_index, process_count=process_count,
      dataset=dataset)
  augmenter = make_augmenter(config, facts)

  def fn(*element):
    example = train.decode(*element)
    return preprocess(example, config=config, augmenter=augmenter,
                      seed=stream.example_aug_seed(config, example['position']))

  ds = train.elements.map(fn, num_parallel_calls=_num_parallel_calls(config), deterministic=True)
  ds = ds.batch(local, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options())


def make_train_iterator(config, facts: sources.DatasetFacts, *, start_step=0, process_index=0,
                        process_count=1, dataset: coco_json.CocoDataset | None = None
                        ) -> Iterator[dict[str, np.ndarray]]:
  """Endless iterator of numpy batch dicts with config.batch_size // process_count examples.

  Deterministic and resumable: starting at `start_step` yields exactly the batches the
  uninterrupted run yields from that step on, and concatenating the processes' local batches
  (in process order) gives the 1-process global batch.
  """
  ds = make_train_dataset(config, facts, start_step=start_step, process_index=process_index,
                          process_count=process_count, dataset=dataset)
  return ds.as_numpy_iterator()


class EvalIterator:
  """Iterates one pass over this process's eval share (a fresh pass at each `iter()`).

  Attributes:
    num_batches: batches per pass, the same on every process.
    image_ids: ids of this process's real examples, in order (None for tfds).
    all_image_ids: ids of all evaluated images over all processes (None for tfds: use the
      ids of the batches' real examples).
    num_examples: real examples over all processes.
  """

  def __init__(self, dataset, num_batches, image_ids, all_image_ids, num_examples):
    self.dataset = dataset
    self.num_batches = num_batches
    self.image_ids = image_ids
    self.all_image_ids = all_image_ids
    self.num_examples = num_examples
    self._it = None

  def __iter__(self):
    self._it = self.dataset.as_numpy_iterator()
    return self

  def __next__(self):
    if self._it is None:
      self._it = self.dataset.as_numpy_iterator()
    return next(self._it)

  def __len__(self):
    return self.num_batches


def make_eval_iterator(config, facts: sources.DatasetFacts, *, process_index=0,
                       process_count=1, dataset: coco_json.CocoDataset | None = None
                       ) -> tuple[EvalIterator, int]:
  """(iterator, num_batches) over the val set, without augmentation.

  `dataset`: the val split already loaded (startup.check_before_build); None: read it.

  Every val record (or the first `config.eval.num_examples` when > 0) appears exactly once over
  all processes; process p takes a contiguous even share. Each process yields
  ceil(max share / local batch) batches of config.eval.batch_size // process_count, the last
  ones completed with padding examples (example_mask 0, image_id -1).
  """
  hide_gpus_from_tf()
  local = stream.local_batch_size(int(config.eval.batch_size), process_count, 'eval.batch_size')
  stream.check_process(process_index, process_count)
  share = sources.for_config(config).eval_share(
      facts, process_index=process_index, process_count=process_count, dataset=dataset)
  pad_example = padding_example(config, facts.num_keypoints)
  if share.count:
    real = share.elements.map(lambda e: preprocess(share.decode(e), config=config),
                              num_parallel_calls=_num_parallel_calls(config), deterministic=True)
  else:
    real = tf.data.Dataset.from_tensors(pad_example).take(0)
  num_batches = int(math.ceil(share.max_count / local)) if share.max_count else 0
  pad = num_batches * local - share.count
  ds = real.concatenate(tf.data.Dataset.from_tensors(pad_example).repeat(pad))
  ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(_options())
  it = EvalIterator(ds, num_batches, share.image_ids, share.all_image_ids, share.total)
  return it, num_batches
