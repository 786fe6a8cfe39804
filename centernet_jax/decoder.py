"""CenterNet box decoding, following `CenterNetMetaArch.postprocess` of the TF2 OD API.

1. `prob = sigmoid(object_center)` of the last feature output.
2. Peak test: a pixel survives if `|prob - maxpool3x3(prob)| < 1e-6` (stride 1, SAME padding
   with -inf), the others are zeroed. Plateaus of equal values all survive.
3. Top-k over the flattened `H * W * C` map of each image (not per class; no score threshold;
   no NMS): class = flat index % C, pixel = flat index // C. Computed exactly in two stages
   (pixels first, then their classes: `top_k_pixels_classes`), and, when it suffices, on the
   peak test of the top pixels' classes alone (`top_k_peaks`; 512 pixels, then 256 more)
   instead of the whole map.
4. Box in output pixels: `(y + oy -/+ h/2, x + ox -/+ w/2)` with `(h, w) = max(scale, 0)` and
   `(oy, ox)` the offset, both read at the peak; clipped to `[0, H_out] x [0, W_out]`.
5. To original image pixels: times the stride (`input_size / output_size`) gives pixels of the
   resized input image; times `original_size / true_size` per axis undoes the resize; clipped to
   `[0, original_h] x [0, original_w]`. (The OD API returns the same boxes normalized by the
   true size and clipped to [0, 1].)

As in the OD API, peaks inside the padded area are not suppressed (its `mask_from_true_image_shape`
is effectively a no-op); such boxes end up clipped to the image border.

Keypoints (`keypoint_params`; the OD API's `_postprocess_keypoints_*` with the
`min_distance` candidate ranking of `refine_keypoints`), for every detection, in output pixels:
6a. Regressed joints: the integer peak `(y, x)` plus the `<task>/keypoint/regression` pair of
    each joint read at the peak.
6b. Candidates per joint type: `sigmoid(<task>/keypoint/heatmap)`, the same 3x3 peak test, the
    top `num_candidates` (100) per channel; position = peak pixel + that joint's own
    `<task>/keypoint/offset` pair at it; candidates scoring below
    `candidate_score_threshold` (0.1) are invalid (their distance counts as 1e5).
6c. Snap: each regressed joint takes its nearest valid candidate of the same type, unless
    that candidate lies outside the detection box scaled by `box_scale` (1.2) about its center,
    scores below the threshold, or is farther than `candidate_search_scale` (0.3) x the longer
    side of the scaled box; then the regressed joint is kept with score `unmatched_score`
    (0.1). A snapped joint's score is the candidate's heatmap score. (The box is the clipped
    output-pixel box of step 4.)
6d. Only detections of the keypoint class (with a score > 0) get joints; the others get
    coordinates and scores 0. Joints go to original image pixels like the boxes, NOT clipped.

Every shape is static, so `jax.jit(decode_detections, static_argnames=('input_size',
'max_detections'))` compiles once per input shape, and works on batch-sharded inputs.
"""

import functools
from typing import Mapping, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp

PEAK_TOLERANCE = 1e-6
PEAK_POOL_SIZE = 3
# `top_k_peaks` peak-tests every class of the PEAK_CANDIDATE_PIXELS pixels with the highest
# class maximum before it falls back to the whole map. Speed only: the result is the same. The
# top 1024 scores of the top 512 pixels of the OD API benchmark's heads (random weights, smooth
# pictures) already held 130-483 peaks above every left-out pixel's score for all four 512
# variants (docs/benchmarks.md, "Decoder"); all the classes of those pixels hold at least as
# many.
PEAK_CANDIDATE_PIXELS = 512
# When those pixels do not settle it, the next PEAK_MORE_PIXELS pixels are peak-tested and
# merged in before the whole map is: a map of that benchmark whose top 100 peaks lay on pixels
# of rank up to 557 took 6.7 ms with the whole map as the only fallback and 3.0 ms with this
# stage, while maps settled by the first stage kept their time (docs/benchmarks.md, "Decoder").
PEAK_MORE_PIXELS = 256
INVALID_CANDIDATE_DISTANCE = 1e5


class KeypointDecodeParams(NamedTuple):
  """Static keypoint-decoding settings (the OD API's proto defaults; `config.keypoints`)."""
  task_name: str = 'human_pose'
  class_channel: int = 0
  num_candidates: int = 100
  candidate_score_threshold: float = 0.1
  unmatched_score: float = 0.1
  box_scale: float = 1.2
  candidate_search_scale: float = 0.3


def _pair(value: Union[int, Sequence[int]]) -> tuple[int, int]:
  if isinstance(value, int):
    return int(value), int(value)
  h, w = value
  return int(h), int(w)


def max_pool_same(x):
  """`[B, H, W, C]` -> the max over each pixel's `PEAK_POOL_SIZE`^2 window (stride 1, SAME,
  outside = -inf), as a max of shifted slices along W, then along H.

  The same values as `lax.reduce_window` (a max is exact in any order), ~5x faster on
  XLA:CPU at 128 x 128 x 90; W first is faster than H first there (docs/benchmarks.md,
  "Decoder").
  """
  r = PEAK_POOL_SIZE // 2
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), constant_values=-jnp.inf)
  x = functools.reduce(jnp.maximum, [xp[:, :, j:j + w] for j in range(2 * r + 1)])
  xp = jnp.pad(x, ((0, 0), (r, r), (0, 0), (0, 0)), constant_values=-jnp.inf)
  return functools.reduce(jnp.maximum, [xp[:, i:i + h] for i in range(2 * r + 1)])


def peak_mask(prob):
  """`[B, H, W, C]` probabilities -> float32 mask of 3x3 local maxima (|p - maxpool| < 1e-6)."""
  return (jnp.abs(prob - max_pool_same(prob)) < PEAK_TOLERANCE).astype(prob.dtype)


def top_k_pixels_classes(scores, k: int):
  """The top `k` of each image's flattened `[P * C]` scores, as `lax.top_k` over
  `scores.reshape(B, P * C)` gives them (same values, same indices, same order: descending,
  ties by lower flat index), computed in two smaller stages.

  Stage 1 takes the `k'` = min(k, P) pixels with the highest per-pixel maximum over the C
  classes (ties: lower pixel first); stage 2 runs the top-k over those pixels' `k' * C`
  scores, laid out in ascending pixel order so that the candidates keep their flat order.
  Exact because every pixel holding one of the top-k elements is among the stage-1 pixels: a
  pixel left out has k' pixels before it (a higher maximum, or the same maximum and a lower
  index), and each of their maxima is an element that comes before every element of the left
  out pixel in the (value descending, index ascending) order, so none of its elements can be
  in the top k. On XLA:CPU at 128 x 128 x 90, k = 100 it is ~2x faster than one `lax.top_k`
  over the 1.5M scores (docs/benchmarks.md, "Decoder").

  Args:
    scores: float `[B, P, C]` (P pixels, C classes).
    k: static, at most `P * C`.

  Returns:
    (values `[B, k]` descending, pixels int32 `[B, k]`, classes int32 `[B, k]`; the flat
     index is pixel * C + class).
  """
  batch, num_pixels, num_classes = scores.shape
  kp = min(int(k), num_pixels)
  _, pixels = jax.lax.top_k(jnp.max(scores, axis=-1), kp)
  return _top_k_of_pixels(scores, pixels, k)


def _top_k_of_pixels(scores, pixels, k: int):
  """Stage 2 of `top_k_pixels_classes`: the top `k` of the `[B, P, C]` scores of the given
  `[B, k']` pixels, in the flat (value descending, index ascending) order."""
  batch, _, num_classes = scores.shape
  kp = pixels.shape[1]
  pixels = jnp.sort(pixels, axis=-1)
  candidates = jnp.take_along_axis(scores, pixels[..., None], axis=1)
  values, idx = jax.lax.top_k(candidates.reshape(batch, kp * num_classes), k)
  # Pixel and class straight from `idx`: a flat index rebuilt as `pixel * C + class` and then
  # divided again would be an integer (a + b) / 2 when C = 2, which jax2onnx 0.17 turns into
  # an ONNX Mean, invalid on integers (the ONNX export replays this code).
  pixel = jnp.take_along_axis(pixels, idx // num_classes, axis=1)
  return values, pixel.astype(jnp.int32), (idx % num_classes).astype(jnp.int32)


def top_k_peaks_whole_map(logits, k: int):
  """`top_k_peaks` by the definition: the peak test over the whole map, then the top-k
  (its fallback, and the reference the tests and benchmarks compare it with)."""
  batch, h, w, c = logits.shape
  prob = jax.nn.sigmoid(logits)
  return top_k_pixels_classes((prob * peak_mask(prob)).reshape(batch, h * w, c), k)


def _peak_test_of_pixels(per_pixel, pixels, w: int):
  """Every class of the given pixels: score and peak test against the same class of the 8
  neighbours, read as whole rows of C logits (9 row gathers, no per-element gather). The 3x3
  maximum is taken on the logits and goes through the sigmoid once: the sigmoid keeps the
  logits' order (checked on XLA:CPU for every float32 of magnitude below 88,
  docs/benchmarks.md, "Decoder"), so it gives the very value the whole-map max-pool of the
  probabilities gives.

  Args:
    per_pixel: float32 `[B, H * W, C]` logits (pixel y * W + x).
    pixels: int32 `[B, q]` pixel indices.
    w: static W.
  Returns:
    (prob float32 `[B, q * C]`, is_peak bool `[B, q * C]`), pixel-major in the order of
    `pixels`.
  """
  batch, q = pixels.shape
  h = per_pixel.shape[1] // w
  y = pixels // w
  x = pixels % w
  r = PEAK_POOL_SIZE // 2
  block = pooled = None
  for dy in range(-r, r + 1):
    for dx in range(-r, r + 1):
      ny, nx = y + dy, x + dx
      inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
      index = jnp.clip(ny, 0, h - 1) * w + jnp.clip(nx, 0, w - 1)
      rows = jnp.take_along_axis(per_pixel, index[..., None], axis=1)  # [B, q, C]
      if dy == 0 and dx == 0:
        block = rows
      rows = jnp.where(inside[..., None], rows, -jnp.inf)
      pooled = rows if pooled is None else jnp.maximum(pooled, rows)
  size = q * per_pixel.shape[-1]
  prob = jax.nn.sigmoid(block).reshape(batch, size)
  is_peak = jnp.abs(prob - jax.nn.sigmoid(pooled).reshape(batch, size)) < PEAK_TOLERANCE
  return prob, is_peak


def _top_k_peaks_of_more_pixels(logits, first, num_first: int, num_pixels: int):
  """The top-k peaks among every element of the `num_pixels` pixels with the highest class
  maximum, given `first`, the top-k peaks of the first `num_first` of them (the first stage's
  answer, `(values, pixels, classes)` as `top_k_peaks`, exact within those pixels): only the
  pixels ranked `num_first` to `num_pixels - 1` are peak-tested, and the two top-k are merged
  in the map's order (score descending, ties by the lower flat index).

  Found: the merged k-th score is above the `num_pixels`-th pixel's maximum score, which no
  element of a pixel left out exceeds (condition (b) of `_top_k_peaks_of_pixels` over all
  `num_pixels` pixels); the k scores are then above 0, so all of them peaks.

  Returns ((values, pixels, classes) as `top_k_peaks`, found `[B]` bool; only where found are
  the values the map's).
  """
  batch, h, w, c = logits.shape
  k = first[0].shape[1]
  per_pixel = logits.reshape(batch, h * w, c)
  # Recomputed rather than handed over from the first stage: as an operand of the `lax.cond`
  # it cost the calls that the first stage settles ~0.1 ms (docs/benchmarks.md, "Decoder").
  maxima = jnp.max(per_pixel, axis=-1)
  top_maxima, ranked = jax.lax.top_k(maxima, num_pixels)
  pixels = jnp.sort(ranked[:, num_first:], axis=-1)
  prob, is_peak = _peak_test_of_pixels(per_pixel, pixels, w)
  # The first stage's k and these at most k: the union's top k is among them.
  top, position = jax.lax.top_k(jnp.where(is_peak, prob, 0.0), min(k, prob.shape[1]))
  more_flat = jnp.take_along_axis(pixels, position // c, axis=1) * c + position % c
  values = jnp.concatenate([first[0], top], axis=1)
  flat = jnp.concatenate([first[1] * c + first[2], more_flat.astype(jnp.int32)], axis=1)
  negated, flat = jax.lax.sort((-values, flat), dimension=1, num_keys=2)
  values, flat = -negated[:, :k], flat[:, :k]
  found = jnp.min(values, axis=1) > jax.nn.sigmoid(top_maxima[:, -1])
  return (values, flat // c, flat % c), found


def _top_k_peaks_of_pixels(logits, k: int, num_pixels: int):
  """The top-k peaks among every element of the `num_pixels` (p) pixels with the highest
  class maximum, in the map's (score descending, flat index ascending) order.

  Each selected pixel's C scores are peak-tested (`_peak_test_of_pixels`). The p pixels are
  laid out in ascending pixel order, so a position in the `[p * C]` block orders as the flat
  index does.

  The block's top k peaks are the map's when either
  (a) the pixels were selected strictly (below) and the k-th found peak has a score > 0 and
      lies among the block's first p elements: the two-stage argument of
      `top_k_pixels_classes` makes those the map's top p elements, and every element left
      out of the block comes after them; or
  (b) the block holds k peaks scoring above the p-th pixel's maximum score, which no element
      of a pixel left out exceeds.
  (a) holds on maps of ties (plateaus, saturated scores), (b) on smooth maps whose top scores
  are slopes of a few maxima in several classes.

  Returns ((values, pixels, classes) as `top_k_peaks`, found `[B]` bool: (a) or (b); only
  there are the values exact).
  """
  batch, h, w, c = logits.shape
  per_pixel = logits.reshape(batch, h * w, c)
  # The pixels by their maximum logit (no sigmoid of the whole map). The sigmoid keeps the
  # logits' order but may round distinct logits to one score (saturation), which would change
  # how ties are broken. If no pixel's maximum scores as the last selected one's without
  # having its logit, the pixels of that score are those of that logit, and the selected
  # pixels are the score order's top p (ties by lower index, as `lax.top_k`): "strictly".
  # (A top-k of p + 1 to look at the next pixel instead became a full sort of the maxima on
  # XLA:CPU: 2.7 ms.)
  maxima = jnp.max(per_pixel, axis=-1)
  top_maxima, pixels = jax.lax.top_k(maxima, num_pixels)
  last = top_maxima[:, -1:]
  bound = jax.nn.sigmoid(last)
  selected_strictly = ~jnp.any((jax.nn.sigmoid(maxima) == bound) & (maxima != last), axis=1)
  pixels = jnp.sort(pixels, axis=-1)
  prob, is_peak = _peak_test_of_pixels(per_pixel, pixels, w)
  size = num_pixels * c
  # Non-peaks score 0, as in the full map; ties go to the lower position, which is the lower
  # flat index, so the order is the full map's.
  top, position = jax.lax.top_k(jnp.where(is_peak, prob, 0.0), k)
  found_above = jnp.sum(is_peak & (prob > bound), axis=1) >= k
  # The k-th peak's rank in the block, from reductions: a slice of a top-k output inside a
  # fusion made XLA:CPU sort the whole block instead (2.3 ms; the HLO showed it).
  kth = jnp.min(top, axis=1, keepdims=True)
  kth_position = jnp.max(jnp.where(top == kth, position, -1), axis=1, keepdims=True)
  before_kth = (prob > kth) | ((prob == kth) & (jnp.arange(size) < kth_position))
  found_first = selected_strictly & (jnp.sum(before_kth, axis=1) < num_pixels) & (kth[:, 0] > 0)
  return (top, jnp.take_along_axis(pixels, position // c, axis=1).astype(jnp.int32),
          (position % c).astype(jnp.int32)), found_above | found_first


def top_k_peaks(logits, k: int, num_pixels: int = PEAK_CANDIDATE_PIXELS,
                more_pixels: int = PEAK_MORE_PIXELS):
  """The top `k` of each image's peak-tested scores (steps 1-3 of the module docstring):
  `top_k_pixels_classes` of `sigmoid(logits) * peak_mask(sigmoid(logits))`, same values,
  pixels, classes and order, without the peak test of the whole map when it can be avoided.

  The `num_pixels` pixels with the highest class maximum are picked first (p, at least 2.5 k),
  then every class of each is peak-tested against its neighbours. If they hold the map's top k
  peaks (`_top_k_peaks_of_pixels` says when that is certain), those are the answer, in their
  order. Else the next `more_pixels` pixels by class maximum are peak-tested and merged in
  (`_top_k_peaks_of_more_pixels`; with these, every pixel of a map of at most
  `num_pixels + more_pixels` pixels, whose merged top k is then the map's), and if that is not
  certain either (a map whose highest scores are mostly slopes of broad maxima) the whole map
  is peak-tested (`lax.cond`s on the batch). On XLA:CPU at 128 x 128 x 90, k = 100, the first
  stage is ~2.7x faster than the whole-map path; each fallback adds its cost to the stages
  before it (docs/benchmarks.md, "Decoder").

  Args:
    logits: float32 `[B, H, W, C]` object-center logits.
    k: static, at most `H * W * C`.
    num_pixels: static; speed only.
    more_pixels: static, 0 for none; speed only.

  Returns:
    (scores float32 `[B, k]` descending, pixels int32 `[B, k]` (y * W + x, output pixels),
     classes int32 `[B, k]`).
  """
  _, h, w, c = logits.shape
  p = min(h * w, max(int(num_pixels), (5 * int(k) + 1) // 2))
  if p == h * w or p * c <= k:
    return top_k_peaks_whole_map(logits, k)
  whole_map = lambda: top_k_peaks_whole_map(logits, k)
  first, found = _top_k_peaks_of_pixels(logits, k, p)
  wider = min(h * w, p + int(more_pixels))
  if wider == p:
    return jax.lax.cond(jnp.all(found), lambda: first, whole_map)

  def second_stage():
    more, found_more = _top_k_peaks_of_more_pixels(logits, first, p, wider)
    if wider == h * w:  # every pixel peak-tested: the merged top k is the map's
      return more
    return jax.lax.cond(jnp.all(found_more), lambda: more, whole_map)

  return jax.lax.cond(jnp.all(found), lambda: first, second_stage)


def decode_detections(head_outputs: Mapping[str, jax.Array], *, true_size, original_size,
                      input_size: Union[int, Sequence[int]], max_detections: int = 100,
                      keypoint_params: KeypointDecodeParams | None = None,
                      multiclass_scores: bool = False):
  """Decodes the last feature output into the top-k boxes (and joints) per image.

  Args:
    head_outputs: the head dict of the LAST feature output: 'object_center' `[B, H, W, C]`
      logits, 'box/scale' `[B, H, W, 2]` (h, w) output pixels, 'box/offset' `[B, H, W, 2]`
      (y, x).
    true_size: int/float `[B, 2]` (height, width) of the resized, unpadded image, input pixels.
    original_size: int/float `[B, 2]` (height, width) of the decoded image, pixels.
    input_size: static `S` (or `(S_h, S_w)`), the padded input canvas.
    max_detections: static `K`, at most `H * W * C`.
    keypoint_params: static `KeypointDecodeParams` of the keypoint task whose heads
      `<task>/keypoint/{heatmap,offset,regression}` the outputs hold; None: boxes only.
    multiclass_scores: static; also return every class's sigmoid score at each detection's
      peak pixel (the OD API's `detection_multiclass_scores`, read before the peak test).

  Returns:
    {'boxes': float32 `[B, K, 4]` y-first `[ymin, xmin, ymax, xmax]` in original image pixels,
     'scores': float32 `[B, K]` sigmoid scores, descending,
     'classes': int32 `[B, K]` contiguous channel ids}, plus with `keypoint_params`
    'keypoints' float32 `[B, K, J, 2]` (y, x) original image pixels and 'keypoint_scores'
    float32 `[B, K, J]` (zeros for detections of other classes), and with `multiclass_scores`
    'multiclass_scores' float32 `[B, K, C]`.
  """
  logits = jnp.asarray(head_outputs['object_center'], jnp.float32)
  scale = jnp.asarray(head_outputs['box/scale'], jnp.float32)
  offset = jnp.asarray(head_outputs['box/offset'], jnp.float32)
  batch, out_h, out_w, num_classes = logits.shape
  in_h, in_w = _pair(input_size)
  k = int(max_detections)
  if k > out_h * out_w * num_classes:
    raise ValueError(f'max_detections={k} exceeds H*W*C={out_h * out_w * num_classes}')

  scores, pixel, classes = top_k_peaks(logits, k)
  y = (pixel // out_w).astype(jnp.float32)
  x = (pixel % out_w).astype(jnp.float32)

  def gather(field):  # [B, H, W, D] -> [B, K, D]
    flat = field.reshape(batch, out_h * out_w, field.shape[-1])
    return jnp.take_along_axis(flat, pixel[..., None], axis=1)

  size = jnp.maximum(gather(scale), 0.0)
  off = gather(offset)
  center_y = y + off[..., 0]
  center_x = x + off[..., 1]
  half_h = size[..., 0] / 2.0
  half_w = size[..., 1] / 2.0
  ymin = jnp.clip(center_y - half_h, 0.0, out_h)
  ymax = jnp.clip(center_y + half_h, 0.0, out_h)
  xmin = jnp.clip(center_x - half_w, 0.0, out_w)
  xmax = jnp.clip(center_x + half_w, 0.0, out_w)

  # Output pixels -> input pixels of the resized image -> original image pixels.
  true_size = jnp.asarray(true_size, jnp.float32)
  original_size = jnp.asarray(original_size, jnp.float32)
  stride = jnp.array([in_h / out_h, in_w / out_w], jnp.float32)
  factor = stride * original_size / true_size  # [B, 2]
  fy = factor[:, 0:1]
  fx = factor[:, 1:2]
  orig_h = original_size[:, 0:1]
  orig_w = original_size[:, 1:2]
  boxes = jnp.stack([
      jnp.clip(ymin * fy, 0.0, orig_h),
      jnp.clip(xmin * fx, 0.0, orig_w),
      jnp.clip(ymax * fy, 0.0, orig_h),
      jnp.clip(xmax * fx, 0.0, orig_w),
  ], axis=-1)
  out = {'boxes': boxes, 'scores': scores, 'classes': classes}
  if multiclass_scores:
    out['multiclass_scores'] = jax.nn.sigmoid(gather(logits))
  if keypoint_params is not None:
    strided_boxes = jnp.stack([ymin, xmin, ymax, xmax], axis=-1)
    kps, kp_scores = decode_keypoints(head_outputs, y=y, x=x, pixel=pixel,
                                      strided_boxes=strided_boxes, scores=scores,
                                      classes=classes, params=keypoint_params)
    out['keypoints'] = kps * factor[:, None, None, :]
    out['keypoint_scores'] = kp_scores
  return out


def keypoint_candidates(heatmap_logits, offsets, num_candidates: int):
  """Per-joint-type candidates: top `num_candidates` 3x3 peaks of each heatmap channel.

  Args:
    heatmap_logits: `[B, H, W, J]`.
    offsets: `[B, H, W, 2J]` (per-joint (y, x) pairs) or `[B, H, W, 2]` (shared).
    num_candidates: static N (clamped to H * W).

  Returns:
    (positions `[B, J, N, 2]` (y, x) output pixels = peak pixel + offset,
     scores `[B, J, N]` sigmoid scores, descending per joint).
  """
  logits = jnp.asarray(heatmap_logits, jnp.float32)
  batch, out_h, out_w, num_joints = logits.shape
  n = min(int(num_candidates), out_h * out_w)
  prob = jax.nn.sigmoid(logits)
  prob = prob * peak_mask(prob)
  per_joint = jnp.transpose(prob, (0, 3, 1, 2)).reshape(batch, num_joints, out_h * out_w)
  scores, pix = jax.lax.top_k(per_joint, n)  # [B, J, N]
  off = jnp.asarray(offsets, jnp.float32)
  pairs = off.shape[-1] // 2
  off = off.reshape(batch, out_h * out_w * pairs, 2)
  channel = jnp.arange(num_joints)[None, :, None] if pairs == num_joints else 0
  flat = (pix * pairs + channel).reshape(batch, num_joints * n)
  picked = jnp.take_along_axis(off, flat[..., None], axis=1).reshape(batch, num_joints, n, 2)
  cy = (pix // out_w).astype(jnp.float32) + picked[..., 0]
  cx = (pix % out_w).astype(jnp.float32) + picked[..., 1]
  return jnp.stack([cy, cx], axis=-1), scores


def decode_keypoints(head_outputs: Mapping[str, jax.Array], *, y, x, pixel, strided_boxes,
                     scores, classes, params: KeypointDecodeParams):
  """Joints of the detections in output pixels (steps 6a-6d of the module docstring).

  Args:
    head_outputs: the last feature output's head dict (with the keypoint heads).
    y, x: float `[B, K]` integer peak positions; pixel: int `[B, K]` their flat `y * W + x`.
    strided_boxes: `[B, K, 4]` the detection boxes in output pixels.
    scores, classes: `[B, K]` of the detections.
    params: the `KeypointDecodeParams`.

  Returns:
    (keypoints `[B, K, J, 2]` (y, x) output pixels, scores `[B, K, J]`).
  """
  prefix = f'{params.task_name}/keypoint/'
  regression = jnp.asarray(head_outputs[prefix + 'regression'], jnp.float32)
  batch, out_h, out_w, reg_depth = regression.shape
  num_joints = reg_depth // 2
  flat_reg = regression.reshape(batch, out_h * out_w, reg_depth)
  reg = jnp.take_along_axis(flat_reg, pixel[..., None], axis=1)
  reg = reg.reshape(batch, -1, num_joints, 2) + jnp.stack([y, x], axis=-1)[:, :, None, :]

  cands, cand_scores = keypoint_candidates(head_outputs[prefix + 'heatmap'],
                                           head_outputs[prefix + 'offset'],
                                           params.num_candidates)
  threshold = float(params.candidate_score_threshold)
  valid = cand_scores >= threshold  # [B, J, N]
  diff = reg[:, :, :, None, :] - cands[:, None, :, :, :]  # [B, K, J, N, 2]
  dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
  dist = jnp.where(valid[:, None], dist, INVALID_CANDIDATE_DISTANCE)
  nearest = jnp.argmin(dist, axis=-1)  # [B, K, J]
  min_dist = jnp.min(dist, axis=-1)
  k = reg.shape[1]
  cand_b = jnp.broadcast_to(cands[:, None], (batch, k) + cands.shape[1:])
  chosen = jnp.take_along_axis(cand_b, nearest[..., None, None], axis=3)[:, :, :, 0, :]
  score_b = jnp.broadcast_to(cand_scores[:, None], (batch, k) + cand_scores.shape[1:])
  chosen_score = jnp.take_along_axis(score_b, nearest[..., None], axis=3)[..., 0]

  ymin, xmin, ymax, xmax = (strided_boxes[..., i] for i in range(4))
  cy, cx = (ymin + ymax) / 2.0, (xmin + xmax) / 2.0
  half_h = (ymax - ymin) * params.box_scale / 2.0
  half_w = (xmax - xmin) * params.box_scale / 2.0
  sy0, sy1 = (cy - half_h)[..., None], (cy + half_h)[..., None]
  sx0, sx1 = (cx - half_w)[..., None], (cx + half_w)[..., None]
  radius = (jnp.maximum(2.0 * half_h, 2.0 * half_w) * params.candidate_search_scale)[..., None]
  keep_regressed = ((chosen[..., 0] < sy0) | (chosen[..., 0] > sy1) | (chosen[..., 1] < sx0)
                    | (chosen[..., 1] > sx1) | (chosen_score < threshold)
                    | (min_dist > radius))
  keypoints = jnp.where(keep_regressed[..., None], reg, chosen)
  kp_scores = jnp.where(keep_regressed, jnp.float32(params.unmatched_score), chosen_score)
  has_joints = ((classes == int(params.class_channel)) & (scores > 0))[..., None]
  keypoints = jnp.where(has_joints[..., None], keypoints, 0.0)
  kp_scores = jnp.where(has_joints, kp_scores, 0.0)
  return keypoints, kp_scores
