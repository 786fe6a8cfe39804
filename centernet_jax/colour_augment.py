"""The training colour ops on device: hue, contrast, saturation, brightness (jax only).

The host pipeline draws each op's parameter (data/augment.py, ops of kind 'device') and ships
it in the batch with the part of the canvas the op applies to; the train step applies the ops
here, after the uint8 -> float32 conversion, in the order of `config.input.augmentations`,
each as the TF2 OD API's op does (`tf.image.adjust_*` on image / 255, clipped to [0, 1], times
255), so the host does no per-pixel float work. inspect_data shows the training images through
the same function (`train_step.step_images`).

Batch keys (training only):
  colour_params   float32 [B, K]: op k's parameter (hue: shift in turns; contrast and
                  saturation: factor; brightness: delta on the 0..1 scale);
  colour_windows  float32 [B, K, 4]: (y0, x0, y1, x1) normalized to the S x S canvas, the part
                  of the canvas op k applies to (the augmented image as it was when the op
                  ran: a pad or square crop listed after it leaves its black border untouched;
                  the canvas' bottom/right padding is never in it). Canvas pixel (i, j) is in
                  it when y0 * S <= i < y1 * S and x0 * S <= j < x1 * S.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from centernet_jax.data import augment_spec


def _rgb_to_hsv(x):
  """[..., 3] RGB in [0, 1] -> (h in [0, 1) turns, s, v), TF's `rgb_to_hsv` formulas."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  v = jnp.max(x, axis=-1)
  span = v - jnp.min(x, axis=-1)
  s = jnp.where(v > 0, span / jnp.where(v > 0, v, 1.0), 0.0)
  safe = jnp.where(span > 0, span, 1.0)
  h = jnp.where(r == v, (g - b) / safe,
                jnp.where(g == v, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)) / 6.0
  h = jnp.where(span > 0, h, 0.0)
  return jnp.where(h < 0, h + 1.0, h), s, v


def _hsv_to_rgb(h, s, v):
  """Inverse of `_rgb_to_hsv`: [..., 3] RGB."""
  h6 = h * 6.0
  sector = jnp.floor(h6)
  f = h6 - sector
  sector = jnp.mod(sector, 6.0)
  p = v * (1.0 - s)
  q = v * (1.0 - s * f)
  t = v * (1.0 - s * (1.0 - f))
  choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
  out = [jnp.select([sector == k for k in range(6)], [c[i] for c in choices]) for i in range(3)]
  return jnp.stack(out, axis=-1)


def adjust_hue(x, delta, mask):
  """x float32 [B, H, W, 3] in [0, 1]; delta [B] turns."""
  del mask
  h, s, v = _rgb_to_hsv(x)
  return _hsv_to_rgb(jnp.mod(h + delta[:, None, None], 1.0), s, v)


def adjust_contrast(x, factor, mask):
  """(x - mean) * factor + mean, the mean per image and channel over `mask` [B, H, W]."""
  m = mask[..., None].astype(x.dtype)
  mean = jnp.sum(x * m, axis=(1, 2), keepdims=True) / jnp.maximum(
      jnp.sum(m, axis=(1, 2), keepdims=True), 1.0)
  return (x - mean) * factor[:, None, None, None] + mean


def adjust_saturation(x, factor, mask):
  """HSV saturation times factor [B], clipped to [0, 1]."""
  del mask
  h, s, v = _rgb_to_hsv(x)
  return _hsv_to_rgb(h, jnp.clip(s * factor[:, None, None], 0.0, 1.0), v)


def adjust_brightness(x, delta, mask):
  """x + delta [B]."""
  del mask
  return x + delta[:, None, None, None]


# The ops of kind 'device' in data/augment.py's OPS, by the same names: (function(x, param
# [B], mask [B, H, W]), the parameter that leaves the image unchanged).
DEVICE_OPS: dict[str, tuple[Callable[[jax.Array, jax.Array, jax.Array], jax.Array], float]] = {
    'random_adjust_hue': (adjust_hue, 0.0),
    'random_adjust_contrast': (adjust_contrast, 1.0),
    'random_adjust_saturation': (adjust_saturation, 1.0),
    'random_adjust_brightness': (adjust_brightness, 0.0),
}


def device_ops(spec: str) -> tuple[str, ...]:
  """The names of the spec's device ops, in order (op k of `colour_params`)."""
  return tuple(name for name in augment_spec.op_names(spec) if name in DEVICE_OPS)


def apply(images, params, windows, names: tuple[str, ...]):
  """The colour ops `names` on a batch.

  Args:
    images: float32 [B, S, S, 3] raw 0..255.
    params: float32 [B, K] (K = len(names)).
    windows: float32 [B, K, 4] normalized to the canvas (module docstring).
  Returns:
    float32 [B, S, S, 3] 0..255; pixels outside an op's window are left as they are.
  """
  if params.shape[1] != len(names):
    raise ValueError(f'colour_params has {params.shape[1]} ops per image, the spec '
                     f'{len(names)} ({names})')
  size = images.shape[1]
  index = jnp.arange(size, dtype=jnp.float32)
  for k, name in enumerate(names):
    w = windows[:, k] * size
    rows = (index[None] >= w[:, 0:1]) & (index[None] < w[:, 2:3])
    cols = (index[None] >= w[:, 1:2]) & (index[None] < w[:, 3:4])
    mask = rows[:, :, None] & cols[:, None, :]
    fn = DEVICE_OPS[name][0]
    out = jnp.clip(fn(images / 255.0, params[:, k], mask), 0.0, 1.0) * 255.0
    images = jnp.where(mask[..., None], out, images)
  return images


def identity_batch(spec: str, batch_size: int) -> dict[str, np.ndarray]:
  """`colour_params` / `colour_windows` that leave every image unchanged (the ops still run:
  benchmarks that build training batches by hand time them)."""
  names = device_ops(spec)
  params = np.tile(np.asarray([DEVICE_OPS[n][1] for n in names], np.float32), (batch_size, 1))
  windows = np.tile(np.asarray([0.0, 0.0, 1.0, 1.0], np.float32), (batch_size, len(names), 1))
  return {'colour_params': params.reshape(batch_size, len(names)), 'colour_windows': windows}
