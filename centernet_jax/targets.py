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

import functools
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
  # On CPU all Gaussians at once + one scatter-max: 2.2-4.9x faster than the per-box scan,
  # identical values, ~200 MB of temporaries at B=16 on COCO (benchmarks/targets.py;
  # docs/benchmarks.md, "Target drawing"). Elsewhere the memory-lean scan until an
  # accelerator measurement says otherwise.
  static = dict(out_h=out_h, out_w=out_w, num_classes=num_classes)
  heatmap = jax.lax.platform_dependent(
      index_y, index_x, sigma, classes, weights,
      cpu=functools.partial(_draw_heatmap_scatter, **static),
      default=functools.partial(_draw_heatmap, **static))

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


def _draw_heatmap_scatter(index_y, index_x, sigma, classes, weights, *, out_h, out_w,
                          num_classes):
  """`_draw_heatmap`'s result from all `[B, M, H, W]` Gaussians at once and one scatter-max
  into a `[B, C + 1, H, W]` map (the extra channel takes masked and out-of-range classes).

  Exactly the same values (the same Gaussian arithmetic, max in any order); more memory
  (B*M*H*W floats of temporaries) for fewer sequential steps. benchmarks/targets.py times
  both; docs/benchmarks.md ("Target drawing") says which one each backend uses and why.
  """
  batch, num_boxes = classes.shape
  grid_y = jnp.arange(out_h, dtype=jnp.float32)[None, None, :, None]
  grid_x = jnp.arange(out_w, dtype=jnp.float32)[None, None, None, :]
  dist2 = (grid_y - index_y[..., None, None]) ** 2 + (grid_x - index_x[..., None, None]) ** 2
  wgt = weights[..., None, None]
  gauss = jnp.exp(-dist2 / (2.0 * (sigma * sigma)[..., None, None])) * wgt
  gauss = jnp.where(wgt > 0, gauss, 0.0)
  safe_classes = jnp.where((classes >= 0) & (classes < num_classes) & (weights > 0), classes,
                           num_classes)
  heat = jnp.zeros((batch, num_classes + 1, out_h, out_w), jnp.float32)
  batch_index = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, num_boxes))
  heat = heat.at[batch_index, safe_classes].max(gauss)
  return jnp.maximum(jnp.transpose(heat[:, :num_classes], (0, 2, 3, 1)), 0.0)


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


# ---------------------------------------------------------------------------------------------
# Keypoints (the OD API's CenterNetKeypointTargetAssigner, `keypoint_estimation_task`).


def disc_offsets(radius: int) -> tuple[tuple[int, int], ...]:
  """The integer (dy, dx) with dy^2 + dx^2 <= radius^2, row-major (29 for radius 3)."""
  r = int(radius)
  return tuple((dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
               if dy * dy + dx * dx <= r * r)


def build_keypoint_targets(boxes, classes, box_mask, keypoints, keypoint_mask,
                           output_size: IntPair, *, keypoint_channel: int,
                           std_devs: Sequence[float], min_overlap: float = 0.7,
                           radius_variant: str = 'odapi', peak_radius: int = 3):
  """Builds the keypoint targets of one keypoint task for a batch, on device.

  Every instance of class `keypoint_channel` with a real box carries J joints; a joint counts
  (weight 1) when it is labelled (`keypoint_mask`), otherwise weight 0 (the OD API's NaN
  keypoints). Coordinates go to output pixels like the boxes (times the output size).

  - Heatmap: per joint type j an untruncated Gaussian at `floor(kp)` with sigma
    `std_devs[j] * sigma_box`, `sigma_box` the box's center-heatmap sigma
    (`gaussian_sigma(gaussian_radius(h, w))`), times the joint weight, max-merged over
    instances.
  - Blackout: `heatmap_mask` is 0 at the output pixels inside any real box (y >= ymin,
    y < ymax, x >= xmin, x < xmax in output pixels) whose weight for that joint is 0, i.e.
    inside every box of another class and inside keypoint-class boxes where the joint is
    unlabelled; 1 elsewhere. The heatmap loss is multiplied by it.
  - Offsets: at every pixel `floor(kp) + d` of the disc `disc_offsets(peak_radius)` (29 pixels
    for radius 3) inside the grid, target `kp - pixel`, read from joint j's own channels.
  - Regression (center -> joint): at every pixel `floor(box center) + d` of the same disc,
    target `kp - pixel` for every joint.

  Args:
    boxes: float `[B, M, 4]` y-first, normalized to the padded input canvas.
    classes: int `[B, M]` channels.
    box_mask: float `[B, M]`, 1 for a real box.
    keypoints: float `[B, M, J, 2]` (y, x) normalized like the boxes.
    keypoint_mask: float `[B, M, J]`, 1 for a labelled joint.
    output_size: static `(H_out, W_out)` (or one int).
    keypoint_channel: static class channel of the keypoint task.
    std_devs: static J per-joint sigma multipliers.
    min_overlap, radius_variant: as `build_targets` (the box sigma).
    peak_radius: static radius of the offset/regression disc.

  Returns:
    A dict of float32 arrays unless noted (D = number of disc pixels):
    - 'heatmap' `[B, H, W, J]`; 'heatmap_mask' `[B, H, W, J]` (the blackout);
    - 'num_keypoints' scalar: the sum of joint weights (the heatmap loss normalizer,
      clamped to >= 1 by the loss);
    - 'offset_indices' int32 `[B, M, J, D, 2]` (y, x) pixels (0 where invalid),
      'offset' `[B, M, J, D, 2]`, 'offset_weights' `[B, M, J, D]`;
    - 'regression_indices' int32 `[B, M, D, 2]`, 'regression' `[B, M, J, D, 2]`,
      'regression_weights' `[B, M, J, D]`;
    - 'weights' `[B, M, J]` the joint weights.
  """
  out_h, out_w = _pair(output_size)
  boxes = jnp.asarray(boxes, jnp.float32)
  classes = jnp.asarray(classes, jnp.int32)
  box_w8 = jnp.asarray(box_mask, jnp.float32)
  kp_mask = jnp.asarray(keypoint_mask, jnp.float32)
  num_joints = kp_mask.shape[-1]
  std = jnp.asarray(tuple(float(s) for s in std_devs), jnp.float32)
  if std.shape != (num_joints,):
    raise ValueError(f'std_devs has {std.shape[0]} values for {num_joints} joints')

  real_box = box_w8 > 0
  instance = real_box & (classes == int(keypoint_channel))
  weights = jnp.where(instance[..., None] & (kp_mask > 0), 1.0, 0.0)  # [B, M, J]
  hw = jnp.array([out_h, out_w], jnp.float32)
  kps = jnp.where(weights[..., None] > 0, jnp.asarray(keypoints, jnp.float32) * hw, 0.0)
  abs_boxes = jnp.where(real_box[..., None], boxes * jnp.concatenate([hw, hw]), 0.0)
  ymin, xmin, ymax, xmax = (abs_boxes[..., i] for i in range(4))
  sigma_box = gaussian_sigma(gaussian_radius(ymax - ymin, xmax - xmin, min_overlap,
                                             radius_variant))
  sigma = sigma_box[..., None] * std  # [B, M, J]
  blackout = real_box[..., None] & (weights < 1e-3)  # [B, M, J]

  heatmap, heatmap_mask = _draw_keypoint_heatmaps(
      jnp.floor(kps[..., 0]), jnp.floor(kps[..., 1]), sigma, weights, abs_boxes, blackout,
      out_h=out_h, out_w=out_w)

  disc = jnp.asarray(disc_offsets(peak_radius), jnp.float32)  # [D, 2]

  def neighbours(points):  # [..., 2] output pixels -> pixels [..., D, 2], valid [..., D]
    pix = jnp.floor(points)[..., None, :] + disc
    valid = ((pix[..., 0] >= 0) & (pix[..., 0] < out_h) & (pix[..., 1] >= 0)
             & (pix[..., 1] < out_w))
    return jnp.where(valid[..., None], pix, 0.0), valid

  off_pix, off_valid = neighbours(kps)  # [B, M, J, D, 2], [B, M, J, D]
  offset = jnp.where(off_valid[..., None], kps[..., None, :] - off_pix, 0.0)
  offset_weights = weights[..., None] * off_valid

  center = jnp.stack([(ymin + ymax) / 2.0, (xmin + xmax) / 2.0], axis=-1)  # [B, M, 2]
  reg_pix, reg_valid = neighbours(center)  # [B, M, D, 2], [B, M, D]
  regression = kps[:, :, :, None, :] - reg_pix[:, :, None, :, :]  # [B, M, J, D, 2]
  regression_weights = weights[..., None] * reg_valid[:, :, None, :]
  regression = jnp.where(regression_weights[..., None] > 0, regression, 0.0)

  targets = {
      'heatmap': heatmap,
      'heatmap_mask': heatmap_mask,
      'num_keypoints': jnp.sum(weights),
      'offset_indices': off_pix.astype(jnp.int32),
      'offset': offset,
      'offset_weights': offset_weights,
      'regression_indices': reg_pix.astype(jnp.int32),
      'regression': regression,
      'regression_weights': regression_weights,
      'weights': weights,
  }
  return jax.tree.map(jax.lax.stop_gradient, targets)


def _draw_keypoint_heatmaps(floor_y, floor_x, sigma, weights, abs_boxes, blackout, *, out_h,
                            out_w):
  """Per-joint Gaussians max-merged over instances, and the blackout mask, by a scan over M.

  floor_y, floor_x, sigma, weights, blackout: `[B, M, J]`; abs_boxes `[B, M, 4]` output
  pixels. Returns (heatmap `[B, H, W, J]`, mask `[B, H, W, J]`).
  """
  batch, _, num_joints = weights.shape
  grid_y = jnp.arange(out_h, dtype=jnp.float32)[None, :, None, None]
  grid_x = jnp.arange(out_w, dtype=jnp.float32)[None, None, :, None]

  def step(carry, per_box):
    heat, mask = carry
    ky, kx, sig, wgt, box, black = per_box  # [B, J] x4, [B, 4], [B, J]
    dist2 = (grid_y - ky[:, None, None, :]) ** 2 + (grid_x - kx[:, None, None, :]) ** 2
    sig2 = jnp.maximum(sig * sig, 1e-12)[:, None, None, :]
    gauss = jnp.where(wgt[:, None, None, :] > 0,
                      jnp.exp(-dist2 / (2.0 * sig2)) * wgt[:, None, None, :], 0.0)
    heat = jnp.maximum(heat, gauss)
    in_y = (grid_y >= box[:, 0, None, None, None]) & (grid_y < box[:, 2, None, None, None])
    in_x = (grid_x >= box[:, 1, None, None, None]) & (grid_x < box[:, 3, None, None, None])
    mask = jnp.where(in_y & in_x & black[:, None, None, :], 0.0, mask)
    return (heat, mask), None

  init = (jnp.zeros((batch, out_h, out_w, num_joints), jnp.float32),
          jnp.ones((batch, out_h, out_w, num_joints), jnp.float32))
  per_box = tuple(jnp.swapaxes(a, 0, 1) for a in
                  (floor_y, floor_x, sigma, weights, abs_boxes, blackout))
  (heat, mask), _ = jax.lax.scan(step, init, per_box)
  return heat, mask
