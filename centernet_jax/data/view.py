"""The augmented image as a view of the decoded image, sampled once onto the input canvas.

The geometric training ops (flip, crops, pads: augment.py) only translate and mirror pixels,
so instead of cutting, padding and flipping the full image one after the other, they update a
view of the untouched decoded image, and the view is resampled once, straight onto the
`S x S` input canvas (`to_canvas`): the cost is the canvas' pixels, not several passes over
the decoded image in float32.

A view lives in the example dict under these keys (all pixels, y-first, integer):
  source       uint8 or float32 [Hs, Ws, 3]: the decoded image, never modified;
  view_size    int32 [2]: (h, w) of the augmented image the view stands for;
  view_origin  int32 [2]: (y, x) of the augmented image where the (mirrored when view_flip)
               source's pixel (0, 0) lands;
  view_flip    bool []: the source appears mirrored left-right;
  view_valid   int32 [4]: (y0, x0, y1, x1), the part of the augmented image showing source
               pixels (the source as cut by every crop window so far); the rest is black.
Colour ops, which run on the device after the resample (colour_augment.py), record the part
of the augmented image they apply to in `colour_windows` float32 [K, 4] (y0, x0, y1, x1
pixels of the augmented image), which every geometric op moves along with the view, and their
drawn parameters in `colour_params` float32 [K].
"""

from __future__ import annotations

import tensorflow as tf

Example = dict[str, tf.Tensor]
VIEW_KEYS = ('source', 'view_size', 'view_origin', 'view_flip', 'view_valid')


def start(example: Example) -> Example:
  """The example with its `image` turned into an identity view (no-op on a view)."""
  if 'source' in example:
    return example
  example = dict(example)
  image = example.pop('image')
  size = tf.shape(image)[:2]
  example.update(source=image, view_size=size, view_origin=tf.zeros([2], tf.int32),
                 view_flip=tf.constant(False), view_valid=tf.concat([[0, 0], size], 0))
  example.setdefault('colour_params', tf.zeros([0], tf.float32))
  example.setdefault('colour_windows', tf.zeros([0, 4], tf.float32))
  return example


def window(example: Example, y0, x0, h, w) -> Example:
  """The view of the window [y0, y0 + h) x [x0, x0 + w) of the augmented image (int32
  pixels; a window reaching outside the image is black there, i.e. a pad)."""
  example = start(example)
  offset = tf.stack([y0, x0])
  new_size = tf.stack([h, w])
  valid = example['view_valid']
  lo = tf.clip_by_value(valid[:2] - offset, 0, new_size)
  hi = tf.clip_by_value(valid[2:] - offset, lo, new_size)
  shift = tf.cast(tf.concat([offset, offset], 0), tf.float32)
  return {**example, 'view_size': new_size, 'view_origin': example['view_origin'] - offset,
          'view_valid': tf.concat([lo, hi], 0),
          'colour_windows': example['colour_windows'] - shift}


def flip_left_right(example: Example) -> Example:
  """The view mirrored left-right: x -> w - 1 - x for pixels, x -> w - x for pixel edges."""
  example = start(example)
  w = example['view_size'][1]
  source_w = tf.shape(example['source'])[1]
  y0, x0, y1, x1 = tf.unstack(example['view_valid'])
  cy0, cx0, cy1, cx1 = tf.unstack(example['colour_windows'], num=4, axis=1)
  wf = tf.cast(w, tf.float32)
  return {**example,
          'view_origin': tf.stack([example['view_origin'][0],
                                   w - example['view_origin'][1] - source_w]),
          'view_flip': tf.logical_not(example['view_flip']),
          'view_valid': tf.stack([y0, w - x1, y1, w - x0]),
          'colour_windows': tf.stack([cy0, wf - cx1, cy1, wf - cx0], axis=1)}


def _source_part(example: Example):
  """(the source pixels shown in view_valid, in the source's orientation, and its flip)."""
  y0, x0, y1, x1 = tf.unstack(example['view_valid'])
  oy, ox = tf.unstack(example['view_origin'])
  flip = example['view_flip']
  source_w = tf.shape(example['source'])[1]
  sx0 = tf.where(flip, source_w - (x1 - ox), x0 - ox)
  return example['source'][y0 - oy:y1 - oy, sx0:sx0 + (x1 - x0)], flip


def materialize(example: Example) -> Example:
  """The example with the view's image as `image` float32 [h, w, 3] (exact: the view only
  translates and mirrors pixels). Host pixel ops and tests use it; training does not."""
  if 'source' not in example:
    return example
  part, flip = _source_part(example)
  part = tf.cond(flip, lambda: part[:, ::-1], lambda: part)
  h, w = tf.unstack(example['view_size'])
  y0, x0, y1, x1 = tf.unstack(example['view_valid'])
  image = tf.pad(tf.cast(part, tf.float32), [[y0, h - y1], [x0, w - x1], [0, 0]])
  out = {k: v for k, v in example.items() if k not in VIEW_KEYS}
  out['image'] = image
  return out


def canvas_size(image_size, size: int):
  """(nh, nw) int32: the keep-aspect resize of an (h, w) image whose longer side becomes
  `size` (rounded, at least 1), as `pipeline.resize_and_pad` computes it."""
  hw = tf.cast(image_size, tf.float64)
  scale = tf.constant(float(size), tf.float64) / tf.maximum(hw[0], hw[1])
  return tf.clip_by_value(tf.cast(tf.round(hw * scale), tf.int32), 1, size)


def to_canvas(example: Example, size: int):
  """The view resampled once onto the S x S canvas: keep-aspect resize + zero pad.

  Equals, up to float rounding of the sampling positions, `materialize` followed by
  `pipeline.resize_and_pad` (legacy bilinear without half-pixel centers: output row i samples
  row i * h / nh of the augmented image, the last row repeating past the bottom; black
  outside view_valid, interpolated with it at its edges). It is one `crop_and_resize` of the
  visible source part with a 1-pixel border (black where the augmented image continues in
  black, a copy of the edge where the augmented image ends), read in uint8.

  Returns:
    (image uint8 [S, S, 3] (rounded), zero padded bottom/right; scale float32 [2], the
     factor (nh / S, nw / S) that takes coordinates normalized to the augmented image to
     the canvas; true_size int32 [2] = (nh, nw)).
  """
  h, w = tf.unstack(example['view_size'])
  new = canvas_size(example['view_size'], size)
  nh, nw = tf.unstack(new)
  y0, x0, y1, x1 = tf.unstack(example['view_valid'])
  part, flip = _source_part(example)
  # Border sides in the source's orientation: a mirrored view swaps left and right.
  black = tf.stack([y0 > 0, y1 < h, x0 > 0, x1 < w])
  left, right = tf.where(flip, black[3], black[2]), tf.where(flip, black[2], black[3])
  # A view showing none of the image (a window after a pad that falls in the pad) samples a
  # black 2 x 2 part.
  empty = (y1 <= y0) | (x1 <= x0)
  part = tf.cond(empty, lambda: tf.zeros([2, 2, 3], part.dtype), lambda: part)

  def edge(pixels, is_black):
    return pixels * tf.cast(tf.logical_not(is_black | empty), pixels.dtype)

  # The border as one row / column each side, concatenated (a memory copy; TF's mirror pad
  # costs several times more on uint8).
  part = tf.concat([edge(part[:1], black[0]), part, edge(part[-1:], black[1])], 0)
  part = tf.concat([edge(part[:, :1], left), part, edge(part[:, -1:], right)], 1)
  ph = tf.cast(tf.shape(part)[0] - 1, tf.float32)
  pw = tf.cast(tf.shape(part)[1] - 1, tf.float32)
  hf, wf, nhf, nwf = (tf.cast(v, tf.float32) for v in (h, w, nh, nw))
  # Border-padded part row of augmented-image row y: y - y0 + 1 (columns alike).
  top = (1.0 - tf.cast(y0, tf.float32)) / ph
  bottom = ((nhf - 1.0) * (hf / nhf) + 1.0 - tf.cast(y0, tf.float32)) / ph
  first = (1.0 - tf.cast(x0, tf.float32)) / pw
  last = ((nwf - 1.0) * (wf / nwf) + 1.0 - tf.cast(x0, tf.float32)) / pw
  first, last = tf.where(flip, 1.0 - first, first), tf.where(flip, 1.0 - last, last)
  resized = tf.image.crop_and_resize(
      part[tf.newaxis], tf.stack([top, first, bottom, last])[tf.newaxis], [0], new,
      method='bilinear', extrapolation_value=0.0)[0]
  # Rounded before the pad: the pad then moves a quarter of the float32 bytes. Bilinear
  # weights keep the values in 0..255: no clipping.
  image = tf.cast(tf.round(resized), tf.uint8)
  image = tf.image.pad_to_bounding_box(image, 0, 0, size, size)
  return tf.ensure_shape(image, [size, size, 3]), tf.cast(new, tf.float32) / size, new
