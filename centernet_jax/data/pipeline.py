"""tf.data input pipeline producing the host batch of docs/conventions.md.

Per example: decode (any PNG/JPEG/GIF/BMP, grayscale/RGBA -> RGB) -> training augmentations
(augment.py, on raw 0..255 floats) -> resize keeping the aspect ratio so the longer side is
S = config.input.size, with the legacy bilinear kernel WITHOUT half-pixel centers
(`ResizeBilinear(half_pixel_centers=False)`, as the TF2 OD API) -> zero pad bottom/right to
S x S -> boxes re-normalized to the padded canvas, padded to `max_boxes` with `box_mask`.

Batch (numpy, one per process):
  image float32 [B,S,S,3] raw 0..255 RGB; boxes float32 [B,M,4]; classes int32 [B,M];
  box_mask float32 [B,M]; image_id int32 [B]; original_size int32 [B,2];
  true_size int32 [B,2]; example_mask float32 [B];
  with `config.keypoints.enabled` also keypoints float32 [B,M,J,2] (y, x) normalized to the
  padded canvas like the boxes, and keypoint_mask float32 [B,M,J] (1 labelled; 0 unlabelled,
  outside an augmentation crop, or padding).
`original_size` is the decoded image's (h, w) before any augmentation. Eval padding examples
have image_id -1, example_mask 0, zero image/boxes and original_size = true_size = (S, S).

Training order is a pure function of (config.seed, global position): the example at global
stream position g = step * global_batch + process_index * local_batch + i is record
`index_shuffle(g % R, seed=f(config.seed, g // R))` (a fresh permutation per epoch) augmented
with seed f(config.seed, g). So `start_step=k` resumes exactly (nothing skipped is decoded) and
the global batch does not depend on the process count. (The 'tfds' source streams TFRecords
instead; see tfds_coco.py for its weaker guarantees.)
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from absl import logging
import numpy as np
import tensorflow as tf

from centernet_jax import file_io
from centernet_jax.data import augment
from centernet_jax.data import coco_json
from centernet_jax.data import image_check

_GPUS_HIDDEN = False
_SHUFFLE_TAG = 0x5EED
_AUG_TAG = 0xA06


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
# Sources.


def _coco_paths(config, split):
  """(annotation file, image dir) of a file-backed source."""
  d = config.dataset
  if d.source == 'synthetic':
    from centernet_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    p = synthetic.ensure_synthetic_dataset(d)
    return p[f'{split}_annotations'], p[f'{split}_images']
  if d.source == 'synthetic_keypoints':
    from centernet_jax.data import synthetic_keypoints  # pylint: disable=g-import-not-at-top
    p = synthetic_keypoints.ensure_keypoint_dataset(d)
    return p[f'{split}_annotations'], p[f'{split}_images']
  if d.source == 'coco_json':
    ann = d.train_annotations if split == 'train' else d.val_annotations
    img = d.train_images if split == 'train' else d.val_images
    if not ann or not img:
      raise ValueError(f"dataset.source='coco_json' needs dataset.{split}_annotations and "
                       f'dataset.{split}_images (got {ann!r}, {img!r})')
    return ann, img
  raise ValueError(f'no annotation files for dataset.source={d.source!r}')


def annotation_paths(config, split: str) -> tuple[str, str]:
  """(annotation JSON, image folder) of 'train' or 'val' for the file-backed sources (the
  synthetic ones are generated first); ValueError for 'tfds' or a missing path."""
  return _coco_paths(config, split)


_LABEL_MAP_CACHE: dict[Any, coco_json.LabelMap] = {}


def _label_map_from_file(path, mode):
  key = (file_io.identity(path), mode)
  if key not in _LABEL_MAP_CACHE:
    _LABEL_MAP_CACHE[key] = coco_json.LabelMap.from_coco_json(path, mode)
  return _LABEL_MAP_CACHE[key]


def label_map_for(config) -> coco_json.LabelMap:
  """The dataset's LabelMap: from the val annotations (or the train ones when no val file)."""
  d = config.dataset
  if d.source == 'tfds':
    from centernet_jax.data import tfds_coco  # pylint: disable=g-import-not-at-top
    return tfds_coco.label_map(config)
  if d.source == 'coco_json' and not d.val_annotations:
    return _label_map_from_file(_coco_paths(config, 'train')[0], d.label_map_mode)
  return _label_map_from_file(_coco_paths(config, 'val')[0], d.label_map_mode)


_CATEGORY_CACHE: dict[Any, list[dict[str, Any]]] = {}


def _categories_from_file(path):
  key = file_io.identity(path)
  if key not in _CATEGORY_CACHE:
    _CATEGORY_CACHE[key] = coco_json.read_categories(path)
  return _CATEGORY_CACHE[key]


def keypoint_annotations_file(config, split: str) -> str:
  """The JSON holding the keypoints of `split` ('' when they are in the annotation file)."""
  d = config.dataset
  return str(d.get(f'{split}_keypoint_annotations', '') or '')


def keypoint_ground_truth_file(config) -> str:
  """The val JSON with the keypoint ground truth (for OKS evaluation)."""
  path = keypoint_annotations_file(config, 'val')
  if path:
    return path
  if config.dataset.source == 'tfds':
    raise ValueError('keypoint evaluation with dataset.source=tfds needs '
                     'dataset.val_keypoint_annotations (person_keypoints_val2017.json)')
  return _coco_paths(config, 'val')[0]


def keypoint_spec_for(config):
  """The dataset's `KeypointSpec` when `config.keypoints.enabled`, else None.

  The joints come from the keypoint category (`keypoints.class_name`, or the one category
  with a 'keypoints' list) of the val keypoint file (the train one when there is no val file);
  COCO's person category for a 'tfds' source without such a file.
  """
  from centernet_jax import keypoint_spec as kps  # pylint: disable=g-import-not-at-top
  kcfg = config.get('keypoints')
  if kcfg is None or not kcfg.get('enabled', False):
    return None
  d = config.dataset
  lm = label_map_for(config)
  source = keypoint_annotations_file(config, 'val') or keypoint_annotations_file(config, 'train')
  if not source and d.source != 'tfds':  # tfds: coco_keypoints/2017's person joints
    if d.source == 'coco_json' and not d.val_annotations:
      source = _coco_paths(config, 'train')[0]
    else:
      source = _coco_paths(config, 'val')[0]
  categories = _categories_from_file(source) if source else [kps.coco_person_category()]
  category = kps.select_keypoint_category(categories, kcfg.get('class_name', ''))
  if category is None:
    raise ValueError(f'keypoints.enabled but {source or "the dataset"} has no category with a '
                     "'keypoints' list of joint names")
  return kps.spec_from_category(category, lm.id_to_channel(category['id']), kcfg)


def dataset_info(config) -> tuple[coco_json.LabelMap, int]:
  """(label_map, num_classes) for the model builder; num_classes = label_map.num_channels."""
  lm = label_map_for(config)
  return lm, lm.num_channels


def load_split(config, split: str, *, image_check_cache: str = '',
               write_image_check_cache: bool = True) -> coco_json.CocoDataset:
  """Host records of 'train' or 'val' for the file-backed sources ('coco_json', 'synthetic').

  Images are checked as `dataset.check_images` says (image_check.py), with the verdicts
  cached in `image_check_cache` ('' for none). The val split must carry what COCOeval reads.
  """
  ann, img_dir = _coco_paths(config, split)
  d = config.dataset
  lm = label_map_for(config)
  file_lm = _label_map_from_file(ann, d.label_map_mode)
  if file_lm != lm:
    raise ValueError(f'{ann}: categories differ from those of the label map source '
                     f'({lm.categories()} vs {file_lm.categories()})')
  checker = None
  if d.check_images != 'none':
    checker = image_check.ImageChecker(d.check_images, max_pixels=d.max_image_pixels,
                                       cache_file=image_check_cache,
                                       num_threads=d.image_check_threads,
                                       write_cache=write_image_check_cache)
  ds = coco_json.load_coco_json(ann, img_dir, label_map=lm,
                                check_images=d.check_images,
                                skip_bad_images=d.skip_bad_images,
                                keypoint_spec=keypoint_spec_for(config),
                                keypoint_annotations=keypoint_annotations_file(config, split),
                                image_checker=checker,
                                require_evaluation_fields=split == 'val')
  ids = [r.image_id for r in ds.records]
  if ids and (min(ids) < 0 or max(ids) > np.iinfo(np.int32).max):
    raise ValueError(f'{ann}: image ids must fit int32 and be >= 0')
  over = sum(len(r.boxes) > d.max_boxes for r in ds.records)
  if over:
    logging.warning('%s: %d images have more than max_boxes=%d boxes; only the first %d of '
                    'each are used', ann, over, d.max_boxes, d.max_boxes)
  ds.stats['images_over_max_boxes'] = over
  return ds


class _RecordTable:
  """The records as captured tensors, for random access by index inside tf.data."""

  def __init__(self, records, cache_decoded=False, num_parallel_calls=tf.data.AUTOTUNE,
               cache_max_mib=2048.0):
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
        self._build_cache(records, num_parallel_calls)

  def _build_cache(self, records, num_parallel_calls):
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


# ---------------------------------------------------------------------------------------------
# Per-example ops.


def decode_image_file(path):
  """uint8 [H, W, 3] RGB from an encoded image file (grayscale/RGBA converted)."""
  img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False,
                           dtype=tf.uint8)
  img.set_shape([None, None, 3])
  return img


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


def preprocess(image_u8, boxes, classes, image_id, *, config, aug_seed=None, boxes_in_pixels,
               keypoints=None, keypoint_spec=None):
  """One example -> the per-example batch dict (no batch dim).

  Args:
    image_u8: uint8 [H, W, 3].
    boxes: float32 [N, 4] y-first, pixels (`boxes_in_pixels`) or normalized.
    classes: int32 [N] channels.
    image_id: int32 scalar.
    config: the full config.
    aug_seed: shape-[2] seed: apply training augmentations; None: none.
    keypoints: float32 [N, J, 3] (y, x, labelled), in the boxes' units; None with a
      `keypoint_spec`: every joint unlabelled.
    keypoint_spec: a `KeypointSpec` (its flip permutation): adds 'keypoints' [M, J, 2] and
      'keypoint_mask' [M, J] to the output. None: no keypoint keys (box-only batches).
  """
  size = int(config.input.size)
  max_boxes = int(config.dataset.max_boxes)
  shape = tf.shape(image_u8)
  original_size = tf.stack([shape[0], shape[1]])
  image = tf.cast(image_u8, tf.float32)
  boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
  classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
  with_kps = keypoint_spec is not None
  if with_kps:
    num_joints = keypoint_spec.num_keypoints
    if keypoints is None:
      keypoints = tf.zeros([tf.shape(boxes)[0], num_joints, 3], tf.float32)
    keypoints = tf.reshape(tf.cast(keypoints, tf.float32), [-1, num_joints, 3])
    kp_mask = keypoints[:, :, 2]
    keypoints = keypoints[:, :, :2]
  if boxes_in_pixels:
    hf = tf.cast(shape[0], tf.float32)
    wf = tf.cast(shape[1], tf.float32)
    boxes = boxes / tf.stack([hf, wf, hf, wf])
    if with_kps:
      keypoints = keypoints / tf.stack([hf, wf])
  if aug_seed is not None:
    if with_kps:
      image, boxes, classes, keypoints, kp_mask = augment.augment_example(
          image, boxes, classes, aug_seed, config.input, keypoints=keypoints,
          keypoint_mask=kp_mask, flip_permutation=keypoint_spec.flip_permutation)
    else:
      image, boxes, classes = augment.augment_example(image, boxes, classes, aug_seed,
                                                      config.input)
  image, boxes, true_size = resize_and_pad(image, boxes, size)
  if aug_seed is not None:
    # Training images cross to the device as uint8, a quarter of the float32 bytes; the model
    # casts them back (rounding moves a pixel by at most half a grey level). Evaluation keeps
    # float32, so its preprocessing stays equal to the OD API's resizer (docs/parity.md).
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
  boxes = boxes[:max_boxes]
  classes = classes[:max_boxes]
  n = tf.shape(boxes)[0]
  boxes = tf.pad(boxes, [[0, max_boxes - n], [0, 0]])
  classes = tf.pad(classes, [[0, max_boxes - n]])
  box_mask = tf.cast(tf.range(max_boxes) < n, tf.float32)
  extra = {}
  if with_kps:
    # The same rescale as the boxes: normalized to the image -> to the padded canvas.
    scale = tf.cast(true_size, tf.float32) / float(size)
    keypoints = (keypoints * scale)[:max_boxes]
    kp_mask = kp_mask[:max_boxes]
    keypoints = tf.where(kp_mask[:, :, tf.newaxis] > 0, keypoints, 0.0)
    keypoints = tf.pad(keypoints, [[0, max_boxes - n], [0, 0], [0, 0]])
    kp_mask = tf.pad(kp_mask, [[0, max_boxes - n], [0, 0]])
    extra = {'keypoints': tf.ensure_shape(keypoints, [max_boxes, num_joints, 2]),
             'keypoint_mask': tf.ensure_shape(kp_mask, [max_boxes, num_joints])}
  return {
      **extra,
      'image': image,
      'boxes': tf.ensure_shape(boxes, [max_boxes, 4]),
      'classes': tf.ensure_shape(classes, [max_boxes]),
      'box_mask': box_mask,
      'image_id': tf.cast(image_id, tf.int32),
      'original_size': tf.cast(original_size, tf.int32),
      'true_size': tf.cast(true_size, tf.int32),
      'example_mask': tf.constant(1.0, tf.float32),
  }


def padding_example(config, keypoint_spec=None):
  """The eval padding example (example_mask 0, image_id -1)."""
  size = int(config.input.size)
  m = int(config.dataset.max_boxes)
  extra = {}
  if keypoint_spec is not None:
    j = keypoint_spec.num_keypoints
    extra = {'keypoints': tf.zeros([m, j, 2], tf.float32),
             'keypoint_mask': tf.zeros([m, j], tf.float32)}
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


# ---------------------------------------------------------------------------------------------
# Seeds and positions.


def _base_seed(config, tag):
  return tf.constant([int(config.seed) & 0x7FFFFFFF, tag], tf.int64)


def example_aug_seed(config, g):
  """Augmentation seed of global stream position g (int64 scalar tensor)."""
  return tf.random.experimental.stateless_fold_in(_base_seed(config, _AUG_TAG),
                                                  tf.cast(g, tf.int64))


def shuffled_index(config, g, num_records: int):
  """Record index at global stream position g: a fresh stateless permutation per epoch."""
  g = tf.cast(g, tf.int64)
  epoch = g // num_records
  seed = tf.random.experimental.stateless_fold_in(_base_seed(config, _SHUFFLE_TAG), epoch)
  return tf.random.experimental.index_shuffle(
      g % num_records, tf.cast(seed, tf.int64), tf.constant(num_records - 1, tf.int64))


def local_batch_size(global_batch: int, process_count: int, what='batch_size') -> int:
  if global_batch % process_count:
    raise ValueError(f'{what}={global_batch} is not divisible by process_count={process_count}')
  return global_batch // process_count


# ---------------------------------------------------------------------------------------------
# Iterators.


def make_train_dataset(config, *, start_step=0, process_index=0, process_count=1,
                       dataset: coco_json.CocoDataset | None = None):
  """The batched training tf.data.Dataset of this process (see make_train_iterator).

  `dataset`: the train split already loaded (startup.check_before_build); None: read it.
  """
  hide_gpus_from_tf()
  global_batch = int(config.batch_size)
  local = local_batch_size(global_batch, process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  npc = _num_parallel_calls(config)
  kp_spec = keypoint_spec_for(config)
  if config.dataset.source == 'tfds':
    from centernet_jax.data import tfds_coco  # pylint: disable=g-import-not-at-top
    ds = tfds_coco.train_examples(config, start_step=start_step, process_index=process_index,
                                  process_count=process_count)

    def fn_tfds(ex):
      return preprocess(ex['image'], ex['boxes'], ex['classes'], ex['image_id'], config=config,
                        aug_seed=example_aug_seed(config, ex['position']),
                        boxes_in_pixels=False, keypoints=ex.get('keypoints'),
                        keypoint_spec=kp_spec)

    ds = ds.map(fn_tfds, num_parallel_calls=npc, deterministic=True)
  else:
    records = (dataset if dataset is not None else load_split(config, 'train')).records
    if not records:
      raise ValueError('the training set has no images')
    table = _RecordTable(records, cache_decoded=config.dataset.cache_decoded,
                         cache_max_mib=float(config.dataset.get('cache_max_mib', 2048.0)),
                         num_parallel_calls=npc)
    num = table.size

    def fn(j):
      step = j // local
      i = j % local
      g = step * global_batch + process_index * local + i
      idx = shuffled_index(config, g, num)
      boxes, classes, image_id = table.targets(idx)
      return preprocess(table.image(idx), boxes, classes, image_id, config=config,
                        aug_seed=example_aug_seed(config, g), boxes_in_pixels=True,
                        keypoints=table.keypoints_of(idx), keypoint_spec=kp_spec)

    ds = tf.data.Dataset.range(int(start_step) * local, np.iinfo(np.int64).max)
    ds = ds.map(fn, num_parallel_calls=npc, deterministic=True)
  ds = ds.batch(local, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options())


def make_train_iterator(config, *, start_step=0, process_index=0, process_count=1,
                        dataset: coco_json.CocoDataset | None = None
                        ) -> Iterator[dict[str, np.ndarray]]:
  """Endless iterator of numpy batch dicts with config.batch_size // process_count examples.

  Deterministic and resumable: starting at `start_step` yields exactly the batches the
  uninterrupted run yields from that step on, and concatenating the processes' local batches
  (in process order) gives the 1-process global batch.
  """
  ds = make_train_dataset(config, start_step=start_step, process_index=process_index,
                          process_count=process_count, dataset=dataset)
  return ds.as_numpy_iterator()


def _even_share(n, process_index, process_count):
  base, extra = divmod(n, process_count)
  start = process_index * base + min(process_index, extra)
  count = base + (1 if process_index < extra else 0)
  return start, count, base + (1 if extra else 0)


class EvalIterator:
  """Iterates one pass over this process's eval share (a fresh pass at each `iter()`).

  Attributes:
    num_batches: batches per pass, the same on every process.
    label_map: the val LabelMap (channels <-> COCO category ids).
    annotation_file: the ground-truth COCO JSON for COCOeval.
    image_ids: ids of this process's real examples, in order (None for tfds).
    all_image_ids: ids of all evaluated images over all processes (None for tfds: use the
      ids of the batches' real examples).
    num_examples: real examples over all processes.
    keypoint_spec: the `KeypointSpec` when keypoints are enabled, else None.
    keypoint_annotation_file: the keypoint ground truth JSON for OKS (None without keypoints).
  """

  def __init__(self, dataset, num_batches, label_map, annotation_file, image_ids,
               all_image_ids, num_examples, keypoint_spec=None, keypoint_annotation_file=None):
    self.dataset = dataset
    self.num_batches = num_batches
    self.label_map = label_map
    self.annotation_file = annotation_file
    self.image_ids = image_ids
    self.all_image_ids = all_image_ids
    self.num_examples = num_examples
    self.keypoint_spec = keypoint_spec
    self.keypoint_annotation_file = keypoint_annotation_file
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


def make_eval_iterator(config, *, process_index=0, process_count=1,
                       dataset: coco_json.CocoDataset | None = None
                       ) -> tuple[EvalIterator, int]:
  """(iterator, num_batches) over the val set, without augmentation.

  `dataset`: the val split already loaded (startup.check_before_build); None: read it.

  Every val record (or the first `config.eval.num_examples` when > 0) appears exactly once over
  all processes; process p takes a contiguous even share. Each process yields
  ceil(max share / local batch) batches of config.eval.batch_size // process_count, the last
  ones completed with padding examples (example_mask 0, image_id -1).
  """
  hide_gpus_from_tf()
  local = local_batch_size(int(config.eval.batch_size), process_count, 'eval.batch_size')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  npc = _num_parallel_calls(config)
  limit = int(config.eval.num_examples)
  kp_spec = keypoint_spec_for(config)
  if config.dataset.source == 'tfds':
    from centernet_jax.data import tfds_coco  # pylint: disable=g-import-not-at-top
    real, count, max_count, total = tfds_coco.eval_examples(
        config, process_index=process_index, process_count=process_count)

    def fn_tfds(ex):
      return preprocess(ex['image'], ex['boxes'], ex['classes'], ex['image_id'], config=config,
                        boxes_in_pixels=False, keypoints=ex.get('keypoints'),
                        keypoint_spec=kp_spec)

    real = real.map(fn_tfds, num_parallel_calls=npc, deterministic=True)
    image_ids = all_ids = None
    annotation_file = config.dataset.val_annotations
    lm = label_map_for(config)
  else:
    data = dataset if dataset is not None else load_split(config, 'val')
    records = data.records[:limit] if limit > 0 else data.records
    total = len(records)
    start, count, max_count = _even_share(total, process_index, process_count)
    mine = records[start:start + count]
    image_ids = [r.image_id for r in mine]
    all_ids = [r.image_id for r in records]
    annotation_file = data.annotation_file
    lm = data.label_map
    if mine:
      table = _RecordTable(mine)

      def fn(idx):
        boxes, classes, image_id = table.targets(idx)
        return preprocess(table.image(idx), boxes, classes, image_id, config=config,
                          boxes_in_pixels=True, keypoints=table.keypoints_of(idx),
                          keypoint_spec=kp_spec)

      real = tf.data.Dataset.range(count).map(fn, num_parallel_calls=npc, deterministic=True)
    else:
      real = tf.data.Dataset.from_tensors(padding_example(config, kp_spec)).take(0)
  num_batches = int(math.ceil(max_count / local)) if max_count else 0
  pad = num_batches * local - count
  ds = real.concatenate(tf.data.Dataset.from_tensors(padding_example(config, kp_spec)).repeat(pad))
  ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(_options())
  it = EvalIterator(ds, num_batches, lm, annotation_file, image_ids, all_ids, total,
                    keypoint_spec=kp_spec,
                    keypoint_annotation_file=(keypoint_ground_truth_file(config)
                                              if kp_spec is not None else None))
  return it, num_batches
