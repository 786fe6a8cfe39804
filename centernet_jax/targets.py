"""CenterNet target assignment, following the TF2 Object Detection API semantics.

Everything here is a pure JAX function with static shapes, meant to run on device inside the
jitted train step (`docs/conventions.md`, "Targets, losses, decoder").

Units:
- `boxes` arrive y-first `[ymin, xmin, ymax, xmax]`, normalized to the padded square input
  canvas; they are turned into **output pixels** by multiplying with the output size
  (`S // 4` for an `S x S` input).
- Sizes are `(height, width)`; offsets and indices are `(y, x)`.

The center heatmap is the TF2 OD API's dense `coordinates_to_heatmap`: for every box an
**untruncated** Gaussian over the whole output grid, centred at the floored box center, with
sigma `(2 * floor(r) + 1) / 6` where `r` is CornerNet's `gaussian_radius` (by default with the
bug the OD API keeps on purpose), multiplied by the box weight and merged with an element-wise
**max** over the boxes of the same class. The value at the floored center is exactly 1.0, which
is how the focal loss finds its positives.
"""

from typing import Sequence, Union

import jax
import jax.numpy as jnp

RADIUS_VARIANTS = ('odapi', 'corrected')

IntPair = Union[int, Sequence[int]]


def _pair(value: IntPair) -> tuple[int, int]:
  """`S` or `(H, W)` -> `(H, W)` as Python ints (static)."""
  if isinstance(value, int):
    return int(value), int(value)
  h, w = value
  return int(h), int(w)


def gaussian_radius(height, width, min_overlap: float = 0.7, variant: str = 'odapi'):
  """CornerNet's Gaussian radius for boxes of `height x width` output pixels (elementwise).

  Three corner-displacement cases are solved for the displacement `r` that keeps IoU >=
  `min_overlap` (o), each a quadratic `a r^2 + b r + c = 0`:
    1. a = 1,  b = -(h + w),  c = w h (1 - o) / (1 + o)
    2. a = 4,  b = -2 (h + w), c = (1 - o) w h
    3. a = 4o, b = 2o (h + w), c = (o - 1) w h
  and the radius is the minimum of the three roots.

  Args:
    height: box heights (any shape, output pixels).
    width: box widths, broadcastable with `height`.
    min_overlap: the IoU `o` (0.7 in the TF2 OD API).
    variant: 'odapi' keeps CornerNet's original bug, as the TF2 OD API does: every root is
      `(-b + sqrt(b^2 - 4ac)) / 2`, never divided by `a` (for the usual sizes case 3 wins,
      and is 4o times the correct root). 'corrected' uses the fixed roots (CornerNet commit
      3e71377): the smaller root of cases 1 and 2 and the positive root of case 3, each
      divided by `2a`.

  Returns:
    float32 radii with the broadcast shape of `height` and `width` (not floored).
  """
  if variant not in RADIUS_VARIANTS:
    raise ValueError(f'radius variant must be one of {RADIUS_VARIANTS}, got {variant!r}')
  h = jnp.asarray(height, jnp.float32)
  w = jnp.asarray(width, jnp.float32)
  o = jnp.float32(min_overlap)
  hw_sum = h + w
  area = h * w

  a1, b1, c1 = 1.0, -hw_sum, area * (1.0 - o) / (1.0 + o)
  a2, b2, c2 = 4.0, -2.0 * hw_sum, (1.0 - o) * area
  a3, b3, c3 = 4.0 * o, 2.0 * o * hw_sum, (o - 1.0) * area

  def sqrt_disc(a, b, c):
    return jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0))

  s1, s2, s3 = sqrt_disc(a1, b1, c1), sqrt_disc(a2, b2, c2), sqrt_disc(a3, b3, c3)
  if variant == 'odapi':
    r1 = (-b1 + s1) / 2.0
    r2 = (-b2 + s2) / 2.0
    r3 = (-b3 + s3) / 2.0
  else:
    r1 = (-b1 - s1) / (2.0 * a1)
    r2 = (-b2 - s2) / (2.0 * a2)
    r3 = (-b3 + s3) / (2.0 * a3)
  return jnp.minimum(jnp.minimum(r1, r2), r3)


def gaussian_sigma(radius):
  """The heatmap sigma for a radius: `(2 * max(floor(r), 0) + 1) / 6` (diameter / 6)."""
  r = jnp.maximum(jnp.floor(jnp.asarray(radius, jnp.float32)), 0.0)
  return (2.0 * r + 1.0) / 6.0


def build_targets(boxes, classes, box_mask, output_size: IntPair, *, num_classes: int,
                  min_overlap: float = 0.7, radius_variant: str = 'odapi'):
  """Builds the CenterNet detection targets for a batch, on device.

  Args:
    boxes: float `[B, M, 4]` y-first `[ymin, xmin, ymax, xmax]`, normalized to the padded
      input canvas. Padding rows may hold anything (usually 0).
    classes: int `[B, M]` contiguous channel ids in `[0, num_classes)`. A real box with a
      class outside that range draws no heatmap (its regression targets are kept).
    box_mask: float `[B, M]`, 1 for a real box and 0 for padding; it is the per-box weight
      (the Gaussian is multiplied by it, as the OD API does with its box weights).
    output_size: static `(H_out, W_out)` (or one int for a square map).
    num_classes: static `C`.
    min_overlap: static IoU for `gaussian_radius`.
    radius_variant: static, 'odapi' or 'corrected' (see `gaussian_radius`).

  Returns:
    A dict of float32 arrays unless noted:
    - 'heatmap' `[B, H, W, C]`: per-class max of the untruncated Gaussians; exactly
      `weight` (1.0) at `indices` of every real box, 0 everywhere for masked boxes.
    - 'indices' int32 `[B, M, 2]`: `(y, x)` floored center, clipped into the grid.
    - 'size' `[B, M, 2]`: `(h, w)` in output pixels.
    - 'offset' `[B, M, 2]`: `(y, x)` center minus `indices`; equals `center - floor(center)`
      for every center inside the grid (it can reach 1.0 only for a center lying exactly on
      the bottom/right border, where the clipping moves the index back by one).
    - 'weights' `[B, M]`: `box_mask` as float32.
    - 'num_boxes' scalar: `sum(box_mask)` over the (global) batch; not clamped, the losses
      divide by `max(num_boxes, 1)`.
  """
  out_h, out_w = _pair(output_size)
  num_classes = int(num_classes)
  boxes = jnp.asarray(boxes, jnp.float32)
  classes = jnp.asarray(classes, jnp.int32)
  weights = jnp.asarray(box_mask, jnp.float32)
  batch, num_boxes_max = classes.shape

  scale = jnp.array([out_h, out_w, out_h, out_w], jnp.float32)
  abs_boxes = boxes * scale
  ymin, xmin, ymax, xmax = (abs_boxes[..., i] for i in range(4))
  center_y = (ymin + ymax) / 2.0
  center_x = (xmin + xmax) / 2.0
  box_h = ymax - ymin
  box_w = xmax - xmin

  index_y = jnp.clip(jnp.floor(center_y), 0, out_h - 1)
  index_x = jnp.clip(jnp.floor(center_x), 0, out_w - 1)

  sigma = gaussian_sigma(gaussian_radius(box_h, box_w, min_overlap, radius_variant))
  heatmap = _draw_heatmap(index_y, index_x, sigma, classes, weights,
                          out_h=out_h, out_w=out_w, num_classes=num_classes)

  targets = {
      'heatmap': heatmap,
      'indices': jnp.stack([index_y, index_x], axis=-1).astype(jnp.int32),
      'size': jnp.stack([box_h, box_w], axis=-1),
      'offset': jnp.stack([center_y - index_y, center_x - index_x], axis=-1),
      'weights': weights,
      'num_boxes': jnp.sum(weights),
  }
  del batch, num_boxes_max
  return jax.tree.map(jax.lax.stop_gradient, targets)


def _draw_heatmap(index_y, index_x, sigma, classes, weights, *, out_h, out_w, num_classes):
  """Max-merges one untruncated Gaussian per box into its class channel.

  A `lax.scan` over the M boxes keeps the memory at the output heatmap plus one `[B, H, W]`
  Gaussian: each step scatter-maxes the step's B Gaussians into their class channels of the
  carried `[B, H, W, C]` map, which XLA updates in place. (A dense `[B, M, H, W]` Gaussian
  followed by a single scatter-max is the other obvious choice: at B=16, M=100, 128x128,
  C=90 on CPU it needs ~105 MB of temporaries against ~1 MB here, for ~25% less time.)
  """
  batch = classes.shape[0]
  grid_y = jnp.arange(out_h, dtype=jnp.float32)[None, :, None]
  grid_x = jnp.arange(out_w, dtype=jnp.float32)[None, None, :]
  batch_index = jnp.arange(batch)
  # Classes outside [0, C) are dropped by the scatter (mode='drop'); so are masked boxes,
  # whose Gaussian is multiplied by a zero weight and cannot raise a max over zeros.
  safe_classes = jnp.where((classes >= 0) & (classes < num_classes), classes, num_classes)

  def step(heatmap, per_box):
    cy, cx, sig, cls, wgt = per_box  # each [B]
    dist2 = ((grid_y - cy[:, None, None]) ** 2 + (grid_x - cx[:, None, None]) ** 2)
    gauss = jnp.exp(-dist2 / (2.0 * (sig * sig)[:, None, None])) * wgt[:, None, None]
    # A where, not only the product, so a padding row holding garbage (NaN) stays harmless.
    gauss = jnp.where(wgt[:, None, None] > 0, gauss, 0.0)
    heatmap = heatmap.at[batch_index, :, :, cls].max(gauss, mode='drop')
    return heatmap, None

  init = jnp.zeros((batch, out_h, out_w, num_classes), jnp.float32)
  per_box = (index_y.T, index_x.T, sigma.T, safe_classes.T, weights.T)  # scan over M
  heatmap, _ = jax.lax.scan(step, init, per_box)
  return jnp.maximum(heatmap, 0.0)


def valid_output_mask(true_size, input_size: IntPair, output_size: IntPair):
  """Output pixels that lie over the real (unpadded) image, as the OD API's loss uses them.

  Args:
    true_size: int `[B, 2]` `(height, width)` of the resized, unpadded image, input pixels.
    input_size: static `S` or `(S_h, S_w)`, the padded input canvas.
    output_size: static `(H_out, W_out)` (or one int).

  Returns:
    float32 `[B, H_out, W_out]`: 1 where `y < ceil(true_h / stride_y)` and
    `x < ceil(true_w / stride_x)`, `stride = input_size / output_size` (4), else 0.
  """
  in_h, in_w = _pair(input_size)
  out_h, out_w = _pair(output_size)
  true_size = jnp.asarray(true_size, jnp.float32)
  stride_y, stride_x = in_h / out_h, in_w / out_w
  limit_y = jnp.ceil(true_size[:, 0] / stride_y)
  limit_x = jnp.ceil(true_size[:, 1] / stride_x)
  ys = jnp.arange(out_h, dtype=jnp.float32)
  xs = jnp.arange(out_w, dtype=jnp.float32)
  valid_y = ys[None, :] < limit_y[:, None]
  valid_x = xs[None, :] < limit_x[:, None]
  return (valid_y[:, :, None] & valid_x[:, None, :]).astype(jnp.float32)
