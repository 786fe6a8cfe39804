"""Training augmentations as TF graph ops (for tf.data map functions), TF2 OD API semantics.

Every op is stateless: it takes a shape-[2] int seed and derives its own sub-seeds with
`tf.random.experimental.stateless_fold_in`, so a given (seed, example) always produces the same
output, and switching one op off does not change the randomness of the others.

Inputs are one example: `image` float32 [H, W, 3] raw 0..255, `boxes` float32 [N, 4] y-first
and normalized to the current image (N dynamic). Ops that can drop boxes also return the
int32 indices of the kept input boxes so callers can gather any per-box tensor (classes,
keypoints, ...).

Order (as the zoo configs list them; see research notes section 5.1):
  flip -> crop -> hue -> contrast -> saturation -> brightness -> pad,
all on the decoded image before the resizer.
"""

from __future__ import annotations

import tensorflow as tf

# Sub-seed tags: one per op, fixed so toggling an op leaves the others' randomness unchanged.
_TAG_FLIP = 1
_TAG_CROP = 2
_TAG_HUE = 3
_TAG_CONTRAST = 4
_TAG_SATURATION = 5
_TAG_BRIGHTNESS = 6
_TAG_PAD = 7


def _sub_seed(seed, tag):
  return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tag)


def _uniform(seed, minval=0.0, maxval=1.0):
  return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval,
                                     dtype=tf.float32)


def random_horizontal_flip(image, boxes, seed, probability=0.5):
  """Flips left-right with `probability`; boxes become x' = 1 - x."""
  do_flip = _uniform(_sub_seed(seed, 0)) < probability

  def flip():
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    return image[:, ::-1, :], tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=1)

  return tf.cond(do_flip, flip, lambda: (image, boxes))


def random_crop_image(image,
                      boxes,
                      seed,
                      *,
                      min_object_covered=1.0,
                      aspect_ratio_range=(0.5, 1.7),
                      area_range=(0.1, 1.0),
                      overlap_thresh=0.3,
                      clip_boxes=True,
                      random_coef=0.25,
                      max_attempts=100):
  """The zoo's `random_crop_image`.

  With probability `random_coef` the example is returned unchanged. Otherwise a window is drawn
  by `sample_distorted_bounding_box` (it fully contains at least one box when
  min_object_covered=1; an image without boxes is kept whole), boxes whose intersection with
  the window covers less than `overlap_thresh` of their own area are dropped, and the rest are
  moved to the window's frame and clipped to it.

  Returns (image, boxes, kept) with `kept` the int32 indices of the surviving input boxes.
  """
  n = tf.shape(boxes)[0]
  keep_original = _uniform(_sub_seed(seed, 0)) < random_coef

  def crop():
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.clip_by_value(boxes, 0.0, 1.0)[tf.newaxis],
        seed=_sub_seed(seed, 1),
        min_object_covered=min_object_covered,
        aspect_ratio_range=list(aspect_ratio_range),
        area_range=list(area_range),
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True)
    cropped = tf.slice(image, begin, size)
    wy0 = tf.cast(begin[0], tf.float32) / h
    wx0 = tf.cast(begin[1], tf.float32) / w
    wh = tf.cast(size[0], tf.float32) / h
    ww = tf.cast(size[1], tf.float32) / w
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    ih = tf.maximum(0.0, tf.minimum(ymax, wy0 + wh) - tf.maximum(ymin, wy0))
    iw = tf.maximum(0.0, tf.minimum(xmax, wx0 + ww) - tf.maximum(xmin, wx0))
    area = (ymax - ymin) * (xmax - xmin)
    ioa = tf.math.divide_no_nan(ih * iw, area)
    kept = tf.cast(tf.reshape(tf.where(ioa >= overlap_thresh), [-1]), tf.int32)
    b = tf.gather(boxes, kept)
    b = (b - tf.stack([wy0, wx0, wy0, wx0])) / tf.stack([wh, ww, wh, ww])
    if clip_boxes:
      b = tf.clip_by_value(b, 0.0, 1.0)
    return cropped, b, kept

  return tf.cond(keep_original, lambda: (image, boxes, tf.range(n, dtype=tf.int32)), crop)


def random_absolute_pad_image(image, boxes, seed, max_height_padding=200,
                              max_width_padding=200):
  """The zoo's `random_absolute_pad_image` with black padding (a zoom-out).

  The new size is a uniform integer in [H, H + max_height_padding] x [W, W + max_width_padding]
  and the image is placed at a uniform random integer offset.
  """
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  th = h + tf.random.stateless_uniform([], _sub_seed(seed, 0), 0, max_height_padding + 1,
                                       dtype=tf.int32)
  tw = w + tf.random.stateless_uniform([], _sub_seed(seed, 1), 0, max_width_padding + 1,
                                       dtype=tf.int32)
  oy = tf.random.stateless_uniform([], _sub_seed(seed, 2), 0, th - h + 1, dtype=tf.int32)
  ox = tf.random.stateless_uniform([], _sub_seed(seed, 3), 0, tw - w + 1, dtype=tf.int32)
  padded = tf.image.pad_to_bounding_box(image, oy, ox, th, tw)
  hf, wf, thf, twf, oyf, oxf = (tf.cast(v, tf.float32) for v in (h, w, th, tw, oy, ox))
  scale = tf.stack([hf / thf, wf / twf, hf / thf, wf / twf])
  offset = tf.stack([oyf / thf, oxf / twf, oyf / thf, oxf / twf])
  return padded, boxes * scale + offset


def _on_unit_range(image, fn):
  """Applies `fn` to image/255, clips to [0, 1] and scales back to 0..255 (zoo colour ops)."""
  return tf.clip_by_value(fn(image / 255.0), 0.0, 1.0) * 255.0


def random_adjust_hue(image, seed, max_delta=0.02):
  delta = _uniform(seed, -max_delta, max_delta)
  return _on_unit_range(image, lambda x: tf.image.adjust_hue(x, delta))


def random_adjust_contrast(image, seed, min_delta=0.8, max_delta=1.25):
  factor = _uniform(seed, min_delta, max_delta)
  return _on_unit_range(image, lambda x: tf.image.adjust_contrast(x, factor))


def random_adjust_saturation(image, seed, min_delta=0.8, max_delta=1.25):
  factor = _uniform(seed, min_delta, max_delta)
  return _on_unit_range(image, lambda x: tf.image.adjust_saturation(x, factor))


def random_adjust_brightness(image, seed, max_delta=0.2):
  delta = _uniform(seed, -max_delta, max_delta)
  return _on_unit_range(image, lambda x: tf.image.adjust_brightness(x, delta))


def color_jitter(image, seed, input_config):
  """hue -> contrast -> saturation -> brightness, each on x/255 and clipped back to 0..255."""
  c = input_config
  image = random_adjust_hue(image, _sub_seed(seed, _TAG_HUE), c.hue_delta)
  image = random_adjust_contrast(image, _sub_seed(seed, _TAG_CONTRAST), *c.contrast_range)
  image = random_adjust_saturation(image, _sub_seed(seed, _TAG_SATURATION),
                                   *c.saturation_range)
  image = random_adjust_brightness(image, _sub_seed(seed, _TAG_BRIGHTNESS), c.brightness_delta)
  return image


def augment_example(image, boxes, classes, seed, input_config):
  """Applies the `input.*`-enabled augmentations in zoo order.

  Args:
    image: float32 [H, W, 3], raw 0..255.
    boxes: float32 [N, 4], y-first, normalized to `image`.
    classes: [N] per-box tensor that follows the boxes when boxes are dropped.
    seed: int shape-[2] per-example seed.
    input_config: the `config.input` section.

  Returns:
    (image float32 [H', W', 3] in 0..255, boxes [N', 4] normalized to the new image, classes).
  """
  c = input_config
  image = tf.cast(image, tf.float32)
  boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
  if c.random_flip:
    image, boxes = random_horizontal_flip(image, boxes, _sub_seed(seed, _TAG_FLIP))
  if c.random_crop:
    image, boxes, kept = random_crop_image(
        image, boxes, _sub_seed(seed, _TAG_CROP),
        aspect_ratio_range=(c.crop_min_aspect_ratio, c.crop_max_aspect_ratio),
        area_range=(c.crop_min_area, c.crop_max_area),
        overlap_thresh=c.crop_overlap_thresh,
        random_coef=c.crop_keep_original_prob)
    classes = tf.gather(classes, kept)
  if c.color_jitter:
    image = color_jitter(image, seed, c)
  if c.random_pad:
    image, boxes = random_absolute_pad_image(image, boxes, _sub_seed(seed, _TAG_PAD),
                                             c.max_pad_pixels, c.max_pad_pixels)
  return image, boxes, classes
