"""CenterNet box decoding, following `CenterNetMetaArch.postprocess` of the TF2 OD API.

1. `prob = sigmoid(object_center)` of the last feature output.
2. Peak test: a pixel survives if `|prob - maxpool3x3(prob)| < 1e-6` (stride 1, SAME padding
   with -inf), the others are zeroed. Plateaus of equal values all survive.
3. Top-k over the flattened `H * W * C` map of each image (not per class; no score threshold;
   no NMS): class = flat index % C, pixel = flat index // C.
4. Box in output pixels: `(y + oy -/+ h/2, x + ox -/+ w/2)` with `(h, w) = max(scale, 0)` and
   `(oy, ox)` the offset, both read at the peak; clipped to `[0, H_out] x [0, W_out]`.
5. To original image pixels: times the stride (`input_size / output_size`) gives pixels of the
   resized input image; times `original_size / true_size` per axis undoes the resize; clipped to
   `[0, original_h] x [0, original_w]`. (The OD API returns the same boxes normalized by the
   true size and clipped to [0, 1].)

As in the OD API, peaks inside the padded area are not suppressed (its `mask_from_true_image_shape`
is effectively a no-op); such boxes end up clipped to the image border.

Every shape is static, so `jax.jit(decode_detections, static_argnames=('input_size',
'max_detections'))` compiles once per input shape, and works on batch-sharded inputs.
"""

from typing import Mapping, Sequence, Union

import jax
import jax.numpy as jnp

PEAK_TOLERANCE = 1e-6
PEAK_POOL_SIZE = 3


def _pair(value: Union[int, Sequence[int]]) -> tuple[int, int]:
  if isinstance(value, int):
    return int(value), int(value)
  h, w = value
  return int(h), int(w)


def peak_mask(prob):
  """`[B, H, W, C]` probabilities -> float32 mask of 3x3 local maxima (|p - maxpool| < 1e-6)."""
  pooled = jax.lax.reduce_window(
      prob, -jnp.inf, jax.lax.max,
      window_dimensions=(1, PEAK_POOL_SIZE, PEAK_POOL_SIZE, 1),
      window_strides=(1, 1, 1, 1), padding='SAME')
  return (jnp.abs(prob - pooled) < PEAK_TOLERANCE).astype(prob.dtype)


def decode_detections(head_outputs: Mapping[str, jax.Array], *, true_size, original_size,
                      input_size: Union[int, Sequence[int]], max_detections: int = 100):
  """Decodes the last feature output into the top-k boxes per image.

  Args:
    head_outputs: the head dict of the LAST feature output: 'object_center' `[B, H, W, C]`
      logits, 'box/scale' `[B, H, W, 2]` (h, w) output pixels, 'box/offset' `[B, H, W, 2]`
      (y, x).
    true_size: int/float `[B, 2]` (height, width) of the resized, unpadded image, input pixels.
    original_size: int/float `[B, 2]` (height, width) of the decoded image, pixels.
    input_size: static `S` (or `(S_h, S_w)`), the padded input canvas.
    max_detections: static `K`, at most `H * W * C`.

  Returns:
    {'boxes': float32 `[B, K, 4]` y-first `[ymin, xmin, ymax, xmax]` in original image pixels,
     'scores': float32 `[B, K]` sigmoid scores, descending,
     'classes': int32 `[B, K]` contiguous channel ids}.
  """
  logits = jnp.asarray(head_outputs['object_center'], jnp.float32)
  scale = jnp.asarray(head_outputs['box/scale'], jnp.float32)
  offset = jnp.asarray(head_outputs['box/offset'], jnp.float32)
  batch, out_h, out_w, num_classes = logits.shape
  in_h, in_w = _pair(input_size)
  k = int(max_detections)
  if k > out_h * out_w * num_classes:
    raise ValueError(f'max_detections={k} exceeds H*W*C={out_h * out_w * num_classes}')

  prob = jax.nn.sigmoid(logits)
  prob = prob * peak_mask(prob)
  scores, flat_idx = jax.lax.top_k(prob.reshape(batch, out_h * out_w * num_classes), k)
  classes = (flat_idx % num_classes).astype(jnp.int32)
  pixel = flat_idx // num_classes
  y = (pixel // out_w).astype(jnp.float32)
  x = (pixel % out_w).astype(jnp.float32)

  def gather(field):  # [B, H, W, 2] -> [B, K, 2]
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
  return {'boxes': boxes, 'scores': scores, 'classes': classes}
