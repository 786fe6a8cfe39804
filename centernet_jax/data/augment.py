"""Training augmentations as TF graph ops (for tf.data map functions), TF2 OD API semantics.

Every op is stateless: it takes a shape-[2] int seed and derives its own sub-seeds with
`tf.random.experimental.stateless_fold_in`, so a given (seed, example) always produces the same
output, and switching one op off does not change the randomness of the others.

Inputs are one example: `image` float32 [H, W, 3] raw 0..255, `boxes` float32 [N, 4] y-first
and normalized to the current image (N dynamic). Ops that can drop boxes also return the
int32 indices of the kept input boxes so callers can gather any per-box tensor (classes,
keypoints, ...).

Order (as the zoo configs list them; see research notes section 5.1):
  flip -> patch gaussian -> crop -> hue -> contrast -> saturation -> brightness
  -> square crop by scale -> pad,
all on the decoded image before the resizer. (No zoo row uses both crops or both the square
crop and the pad: the HG104 1024 rows use flip, colour, square crop; the MobileNetV2 rows use
flip, patch gaussian, crop, colour, pad.)
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
_TAG_SQUARE_CROP = 8
_TAG_PATCH_GAUSSIAN = 9


def _sub_seed(seed, tag):
  return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tag)


def _uniform(seed, minval=0.0, maxval=1.0):
  return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval,
                                     dtype=tf.float32)


def _keypoints_to_window(keypoints, keypoint_mask, window):
  """Keypoints [N, J, 2] normalized to an image -> normalized to `window` (wy0, wx0, wh, ww,
  in the image's normalized units); joints outside [0, 1] x [0, 1] become unlabelled (the OD
  API's `prune_outside_window`, inclusive bounds)."""
  wy0, wx0, wh, ww = window
  k = (keypoints - tf.stack([wy0, wx0])) / tf.stack([wh, ww])
  inside = tf.reduce_all((k >= 0.0) & (k <= 1.0), axis=-1)
  mask = keypoint_mask * tf.cast(inside, keypoint_mask.dtype)
  return tf.where(mask[..., tf.newaxis] > 0, k, 0.0), mask


def random_horizontal_flip(image, boxes, seed, probability=0.5, *, keypoints=None,
                           keypoint_mask=None, flip_permutation=None):
  """Flips left-right with `probability`; boxes become x' = 1 - x.

  With `keypoints` [N, J, 2] (y, x normalized) and `keypoint_mask` [N, J], joints become
  x' = 1 - x and are renamed through `flip_permutation` (joint j of the output is joint
  `flip_permutation[j]` of the input, so left and right swap), and the function returns
  (image, boxes, keypoints, keypoint_mask).
  """
  do_flip = _uniform(_sub_seed(seed, 0)) < probability

  def flip():
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    return image[:, ::-1, :], tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=1)

  if keypoints is None:
    return tf.cond(do_flip, flip, lambda: (image, boxes))
  perm = tf.constant(list(flip_permutation), tf.int32)

  def flip_with_keypoints():
    flipped_image, flipped_boxes = flip()
    k = tf.gather(keypoints, perm, axis=1)
    m = tf.gather(keypoint_mask, perm, axis=1)
    k = tf.stack([k[..., 0], 1.0 - k[..., 1]], axis=-1)
    return flipped_image, flipped_boxes, tf.where(m[..., tf.newaxis] > 0, k, 0.0), m

  return tf.cond(do_flip, flip_with_keypoints,
                 lambda: (image, boxes, keypoints, keypoint_mask))


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
                      max_attempts=100,
                      keypoints=None,
                      keypoint_mask=None):
  """The zoo's `random_crop_image`.

  With probability `random_coef` the example is returned unchanged. Otherwise a window is drawn
  by `sample_distorted_bounding_box` (it fully contains at least one box when
  min_object_covered=1; an image without boxes is kept whole), boxes whose intersection with
  the window covers less than `overlap_thresh` of their own area are dropped, and the rest are
  moved to the window's frame and clipped to it.

  Returns (image, boxes, kept) with `kept` the int32 indices of the surviving input boxes;
  with `keypoints` [N, J, 2] and `keypoint_mask` [N, J] also the kept boxes' keypoints in the
  window's frame and their mask, where joints outside the window are unlabelled.
  """
  n = tf.shape(boxes)[0]
  keep_original = _uniform(_sub_seed(seed, 0)) < random_coef
  with_kps = keypoints is not None

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
    if with_kps:
      k, m = _keypoints_to_window(tf.gather(keypoints, kept), tf.gather(keypoint_mask, kept),
                                  (wy0, wx0, wh, ww))
      return cropped, b, kept, k, m
    return cropped, b, kept

  if with_kps:
    return tf.cond(keep_original, lambda: (image, boxes, tf.range(n, dtype=tf.int32),
                                           keypoints, keypoint_mask), crop)
  return tf.cond(keep_original, lambda: (image, boxes, tf.range(n, dtype=tf.int32)), crop)


def random_absolute_pad_image(image, boxes, seed, max_height_padding=200,
                              max_width_padding=200, *, keypoints=None):
  """The zoo's `random_absolute_pad_image` with black padding (a zoom-out).

  The new size is a uniform integer in [H, H + max_height_padding] x [W, W + max_width_padding]
  and the image is placed at a uniform random integer offset. With `keypoints` [N, J, 2] it
  returns (image, boxes, keypoints) with the joints moved like the boxes.
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
  if keypoints is not None:
    return padded, boxes * scale + offset, keypoints * scale[:2] + offset[:2]
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


def _crop_center_border(max_border, size):
  """The border kept free of crop centres on an axis of `size` pixels (int32 scalar).

  `max_border` divided by the smallest power of two (at least 1, at most `max_border`) that
  brings it to no more than size / 2, as the OD API's `_get_crop_border`: 128 for sides of 256
  pixels or more, 64 for 128..255, and so on.
  """
  size_f = tf.maximum(tf.cast(size, tf.float32), 1.0)
  border_f = tf.cast(max_border, tf.float32)
  exponent = tf.math.ceil(tf.math.log(2.0 * border_f / size_f) / tf.math.log(2.0))
  divisor = tf.clip_by_value(tf.pow(2.0, exponent), 1.0, border_f)
  return tf.cast(max_border, tf.int32) // tf.cast(divisor, tf.int32)


def random_square_crop_by_scale(image, boxes, seed, *, scale_min=0.6, scale_max=1.3,
                                max_border=128, num_scales=8, keypoints=None,
                                keypoint_mask=None):
  """The zoo's `random_square_crop_by_scale` (HG104 1024 rows): a square crop, zero padded.

  The side is `scale * max(H, W)` with `scale` drawn uniformly from
  `linspace(scale_min, scale_max, num_scales)`; the centre is a uniform integer pixel at least
  `_crop_center_border(max_border, side of that axis)` from the image edges; the window
  `[c - side // 2, c - side // 2 + side)` is cut out and whatever falls outside the image is
  black. Boxes move to the window's frame; boxes completely outside it are dropped, the others
  are clipped to it. (The OD API also leaves the last image row/column out of the window and
  can make the visible part one pixel shorter than the side for odd sides; those zero
  pixels are not reproduced: here the pixels agree exactly with the box frame.)

  Returns (image [side, side, 3], boxes, kept) with `kept` the int32 indices of the surviving
  input boxes; with `keypoints` [N, J, 2] and `keypoint_mask` [N, J] also the kept boxes'
  keypoints in the window's frame and their mask (joints outside the window unlabelled, as the
  OD API prunes them).
  """
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  scales = tf.linspace(float(scale_min), float(scale_max), int(num_scales))
  index = tf.random.stateless_uniform([], _sub_seed(seed, 0), 0, int(num_scales),
                                      dtype=tf.int32)
  side = tf.cast(scales[index] * tf.cast(tf.maximum(h, w), tf.float32), tf.int32)
  side = tf.maximum(side, 1)

  def center(size, sub):
    border = _crop_center_border(max_border, size)
    hi = tf.maximum(size - border + 1, border + 1)
    c = tf.random.stateless_uniform([], _sub_seed(seed, sub), border, hi, dtype=tf.int32)
    return tf.clip_by_value(c, 0, size - 1)

  y0 = center(h, 1) - side // 2
  x0 = center(w, 2) - side // 2
  vy0, vx0 = tf.maximum(y0, 0), tf.maximum(x0, 0)
  vy1, vx1 = tf.minimum(y0 + side, h), tf.minimum(x0 + side, w)
  visible = image[vy0:vy1, vx0:vx1]
  cropped = tf.image.pad_to_bounding_box(visible, vy0 - y0, vx0 - x0, side, side)

  hf, wf, sf = (tf.cast(v, tf.float32) for v in (h, w, side))
  wy0, wx0 = tf.cast(y0, tf.float32) / hf, tf.cast(x0, tf.float32) / wf
  wh, ww = sf / hf, sf / wf
  b = (boxes - tf.stack([wy0, wx0, wy0, wx0])) / tf.stack([wh, ww, wh, ww])
  ymin, xmin, ymax, xmax = tf.unstack(b, axis=1)
  inside = (ymin < 1.0) & (ymax > 0.0) & (xmin < 1.0) & (xmax > 0.0)
  kept = tf.cast(tf.reshape(tf.where(inside), [-1]), tf.int32)
  b = tf.clip_by_value(tf.gather(b, kept), 0.0, 1.0)
  if keypoints is not None:
    k, m = _keypoints_to_window(tf.gather(keypoints, kept), tf.gather(keypoint_mask, kept),
                                (wy0, wx0, wh, ww))
    return cropped, b, kept, k, m
  return cropped, b, kept


def random_patch_gaussian(image, seed, *, min_patch_size=1, max_patch_size=250,
                          min_gaussian_stddev=0.0, max_gaussian_stddev=1.0, random_coef=0.0):
  """The zoo's `random_patch_gaussian` (MobileNetV2 rows): Gaussian noise inside one square.

  With probability `random_coef` the image is returned unchanged (0: always applied).
  Otherwise the patch side is a uniform integer in [min_patch_size, max_patch_size), sigma is
  uniform in [min_gaussian_stddev, max_gaussian_stddev), the patch centre is a uniform pixel,
  and the patch `[c - side // 2, c - side // 2 + side)` (cut at the image edges) gets
  `clip(x / 255 + N(0, sigma), 0, 1) * 255`; pixels outside it are unchanged. Geometry (and so
  the boxes) does not change.
  """
  apply_patch = _uniform(_sub_seed(seed, 0)) >= random_coef

  def patch():
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    side = tf.random.stateless_uniform([], _sub_seed(seed, 1), int(min_patch_size),
                                       int(max_patch_size), dtype=tf.int32)
    sigma = _uniform(_sub_seed(seed, 2), min_gaussian_stddev, max_gaussian_stddev)
    cy = tf.random.stateless_uniform([], _sub_seed(seed, 3), 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], _sub_seed(seed, 4), 0, w, dtype=tf.int32)
    y0, x0 = cy - side // 2, cx - side // 2
    rows = tf.range(h)[:, tf.newaxis]
    cols = tf.range(w)[tf.newaxis, :]
    mask = (rows >= y0) & (rows < y0 + side) & (cols >= x0) & (cols < x0 + side)
    noise = tf.random.stateless_normal(shape, _sub_seed(seed, 5), stddev=sigma)
    noisy = tf.clip_by_value(image / 255.0 + noise, 0.0, 1.0) * 255.0
    return tf.where(mask[:, :, tf.newaxis], noisy, image)

  return tf.cond(apply_patch, patch, lambda: image)


def augment_example(image, boxes, classes, seed, input_config, *, keypoints=None,
                    keypoint_mask=None, flip_permutation=None):
  """Applies the `input.*`-enabled augmentations in zoo order.

  Args:
    image: float32 [H, W, 3], raw 0..255.
    boxes: float32 [N, 4], y-first, normalized to `image`.
    classes: [N] per-box tensor that follows the boxes when boxes are dropped.
    seed: int shape-[2] per-example seed.
    input_config: the `config.input` section.
    keypoints: optional float32 [N, J, 2] (y, x) normalized to `image`; they follow the
      geometry (flip with `flip_permutation`, crops, pad) and their boxes.
    keypoint_mask: float32 [N, J], 1 for labelled joints (needed with `keypoints`); joints
      that a crop leaves outside its window become 0.
    flip_permutation: J ints, the left/right renaming of a horizontal flip.

  Returns:
    (image float32 [H', W', 3] in 0..255, boxes [N', 4] normalized to the new image, classes),
    plus (keypoints [N', J, 2], keypoint_mask [N', J]) when `keypoints` is given.
  """
  c = input_config
  image = tf.cast(image, tf.float32)
  boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
  kps = keypoints is not None
  if kps:
    if flip_permutation is None:
      raise ValueError('augment_example: keypoints need a flip_permutation')
    keypoints = tf.cast(keypoints, tf.float32)
    keypoint_mask = tf.cast(keypoint_mask, tf.float32)
  if c.random_flip:
    if kps:
      image, boxes, keypoints, keypoint_mask = random_horizontal_flip(
          image, boxes, _sub_seed(seed, _TAG_FLIP), keypoints=keypoints,
          keypoint_mask=keypoint_mask, flip_permutation=flip_permutation)
    else:
      image, boxes = random_horizontal_flip(image, boxes, _sub_seed(seed, _TAG_FLIP))
  if c.get('random_patch_gaussian', False):
    image = random_patch_gaussian(
        image, _sub_seed(seed, _TAG_PATCH_GAUSSIAN),
        min_patch_size=c.patch_gaussian_min_size, max_patch_size=c.patch_gaussian_max_size,
        min_gaussian_stddev=c.patch_gaussian_min_stddev,
        max_gaussian_stddev=c.patch_gaussian_max_stddev,
        random_coef=c.patch_gaussian_keep_original_prob)
  if c.random_crop:
    out = random_crop_image(
        image, boxes, _sub_seed(seed, _TAG_CROP),
        aspect_ratio_range=(c.crop_min_aspect_ratio, c.crop_max_aspect_ratio),
        area_range=(c.crop_min_area, c.crop_max_area),
        overlap_thresh=c.crop_overlap_thresh,
        random_coef=c.crop_keep_original_prob,
        keypoints=keypoints, keypoint_mask=keypoint_mask)
    image, boxes, kept = out[:3]
    if kps:
      keypoints, keypoint_mask = out[3:]
    classes = tf.gather(classes, kept)
  if c.color_jitter:
    image = color_jitter(image, seed, c)
  if c.get('random_square_crop', False):
    out = random_square_crop_by_scale(
        image, boxes, _sub_seed(seed, _TAG_SQUARE_CROP),
        scale_min=c.square_crop_scale_min, scale_max=c.square_crop_scale_max,
        max_border=c.square_crop_max_border, num_scales=c.square_crop_num_scales,
        keypoints=keypoints, keypoint_mask=keypoint_mask)
    image, boxes, kept = out[:3]
    if kps:
      keypoints, keypoint_mask = out[3:]
    classes = tf.gather(classes, kept)
  if c.random_pad:
    if kps:
      image, boxes, keypoints = random_absolute_pad_image(
          image, boxes, _sub_seed(seed, _TAG_PAD), c.max_pad_pixels, c.max_pad_pixels,
          keypoints=keypoints)
    else:
      image, boxes = random_absolute_pad_image(image, boxes, _sub_seed(seed, _TAG_PAD),
                                               c.max_pad_pixels, c.max_pad_pixels)
  if kps:
    return image, boxes, classes, keypoints, keypoint_mask
  return image, boxes, classes
