"""The augmented image as a view of the decoded image, sampled once onto the input canvas.

The geometric training ops (flip, crops, pads: augment.py) only translate and mirror pixels,
so instead of cutting, padding and flipping the full image one after the other, they update a
view of the untouched decoded image, and the view is resampled once onto the `S x S` input
canvas (`to_canvas`): one uint8 copy of the augmented image and the canvas' pixels, not
several passes over the decoded image in float32.

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


def _pixels(example: Example):
  """The view's image [h, w, 3] in the source's dtype (the source part, mirrored when the
  view is, placed in black). Built with concats of black blocks: a memory copy, several
  times cheaper on uint8 than `tf.pad`."""
  part, flip = _source_part(example)
  part = tf.cond(flip, lambda: tf.reverse(part, [1]), lambda: part)
  h, w = tf.unstack(example['view_size'])
  y0, x0, y1, x1 = tf.unstack(example['view_valid'])
  dtype = part.dtype
  part = tf.concat([tf.zeros(tf.stack([y1 - y0, x0, 3]), dtype), part,
                    tf.zeros(tf.stack([y1 - y0, w - x1, 3]), dtype)], 1)
  return tf.concat([tf.zeros(tf.stack([y0, w, 3]), dtype), part,
                    tf.zeros(tf.stack([h - y1, w, 3]), dtype)], 0)


def materialize(example: Example) -> Example:
  """The example with the view's image as `image` float32 [h, w, 3] (exact: the view only
  translates and mirrors pixels). Host pixel ops and tests use it; training does not."""
  if 'source' not in example:
    return example
  out = {k: v for k, v in example.items() if k not in VIEW_KEYS}
  out['image'] = tf.cast(_pixels(example), tf.float32)
  return out


def canvas_size(image_size, size: int):
  """(nh, nw) int32: the keep-aspect resize of an (h, w) image whose longer side becomes
  `size` (rounded, at least 1), as `pipeline.resize_and_pad` computes it."""
  hw = tf.cast(image_size, tf.float64)
  scale = tf.constant(float(size), tf.float64) / tf.maximum(hw[0], hw[1])
  return tf.clip_by_value(tf.cast(tf.round(hw * scale), tf.int32), 1, size)


def to_canvas(example: Example, size: int):
  """The view resampled once onto the S x S canvas: keep-aspect resize + zero pad.

  Equals `materialize` followed by `pipeline.resize_and_pad` (legacy bilinear without
  half-pixel centers: output row i samples row i * h / nh of the augmented image, the last
  row repeating past the bottom; black outside view_valid, interpolated with it at its edges)
  and rounding: it is the same `ResizeBilinear` of the same pixels, read in the source's
  dtype (uint8 in training; the kernel reads it as float32, so the values are the same).
  The augmented image is materialized first (a uint8 copy, about the source's bytes): its
  black border cannot be left out, since the kernel's sampling grid starts at the input's
  row 0 with step h / nh, and a flip cannot move after the resize (mirrored, the grid
  samples other positions). TF's generic `crop_and_resize`, which could sample the visible
  part alone, costs more than twice `ResizeBilinear` per output pixel.

  Returns:
    (image uint8 [S, S, 3] (rounded), zero padded bottom/right; scale float32 [2], the
     factor (nh / S, nw / S) that takes coordinates normalized to the augmented image to
     the canvas; true_size int32 [2] = (nh, nw)).
  """
  new = canvas_size(example['view_size'], size)
  # Cast before the kernel: it reads uint8 as float32 anyway (the same values), and its float32
  # instantiation is faster than its uint8 one, cast included (docs/benchmarks.md, "Input
  # pipeline").
  resized = tf.raw_ops.ResizeBilinear(
      images=tf.cast(_pixels(example), tf.float32)[tf.newaxis], size=new, align_corners=False,
      half_pixel_centers=False)[0]
  # Rounded before the pad: the pad then moves a quarter of the float32 bytes. Bilinear
  # weights keep the values in 0..255: no clipping.
  image = tf.cast(tf.round(resized), tf.uint8)
  image = tf.image.pad_to_bounding_box(image, 0, 0, size, size)
  return tf.ensure_shape(image, [size, size, 3]), tf.cast(new, tf.float32) / size, new
