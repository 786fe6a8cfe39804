"""CenterNet losses, following the TF2 Object Detection API (`CenterNetMetaArch.loss`).

- Center heatmap: penalty-reduced logistic focal loss (CornerNet, alpha 2, beta 4), multiplied
  by the valid-pixel mask (the padded area of the input gives no loss).
- Box scale and offset: L1 gathered at the floored box centers, summed over the two components
  and weighted by the box weight; the valid-pixel mask is not applied.
- Each is summed over the batch, divided by `max(num_boxes, 1)` and averaged over the feature
  outputs (2 for the hourglass). Inside a jitted step over the global batch, `num_boxes` is
  the global count (normalisation over the global batch, `docs/conventions.md`).

All arithmetic is float32, whatever the dtype of the head outputs.
"""

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

_PROB_MIN = 1e-4
_PROB_MAX = 1.0 - 1e-4


def _power(x, exponent: float):
  """`x ** exponent`, as repeated multiplication when the exponent is a whole number (the
  focal exponents 2 and 4): a float exponent makes XLA compute exp(exponent * log x) and its
  gradient through another power, the slowest part of the loss on CPU (docs/benchmarks.md,
  "Hot paths")."""
  if float(exponent).is_integer():
    return jax.lax.integer_pow(x, int(exponent))
  return x ** exponent


def penalty_reduced_focal_loss(logits, target_heatmap, *, alpha: float = 2.0,
                               beta: float = 4.0, valid_mask=None):
  """CornerNet's penalty-reduced focal loss on logits; returns the SUM (caller normalizes).

  With `p = clip(sigmoid(logit), 1e-4, 1 - 1e-4)` and target `y`:
    - where `y == 1` exactly: `-(1 - p)^alpha * log(p)`;
    - elsewhere: `-(1 - y)^beta * p^alpha * log(1 - p)`.

  `log p` and `log(1 - p)` come from `log_sigmoid(+-logit)` clipped to the logs of the clip
  bounds (the same values and, like `clip`, zero gradient outside the bounds), so nothing
  overflows or cancels for large logits; `1 - p` is computed as `sigmoid(-logit)`, clipped.

  Args:
    logits: `[B, H, W, C]` (any float dtype).
    target_heatmap: `[B, H, W, C]` in [0, 1].
    alpha, beta: focal exponents.
    valid_mask: optional `[B, H, W]` (broadcast over C) or `[B, H, W, C]`; multiplies the
      per-pixel loss.

  Returns:
    float32 scalar, the sum over all elements.
  """
  x = jnp.asarray(logits, jnp.float32)
  y = jnp.asarray(target_heatmap, jnp.float32)
  log_lo, log_hi = jnp.log(jnp.float32(_PROB_MIN)), jnp.log1p(jnp.float32(-1e-4))
  # One exp and one log1p per element serve both signs (log_sigmoid(+-x) =
  # min(+-x, 0) - log1p(exp(-|x|)), as `jax.nn.log_sigmoid` computes each), and sigmoid(+-x)
  # is 1 / (1 + e) or e / (1 + e): XLA:CPU's transcendentals were most of the loss' time.
  e = jnp.exp(-jnp.abs(x))
  softplus_tail = jnp.log1p(e)
  log_p = jnp.clip(jnp.minimum(x, 0.0) - softplus_tail, log_lo, log_hi)
  log_1mp = jnp.clip(jnp.minimum(-x, 0.0) - softplus_tail, log_lo, log_hi)
  r = 1.0 / (1.0 + e)
  nonneg = x >= 0
  p = jnp.clip(jnp.where(nonneg, r, e * r), _PROB_MIN, _PROB_MAX)
  one_minus_p = jnp.clip(jnp.where(nonneg, e * r, r), _PROB_MIN, _PROB_MAX)
  positive = y == 1.0
  pos_loss = -_power(one_minus_p, alpha) * log_p
  neg_loss = -_power(1.0 - y, beta) * _power(p, alpha) * log_1mp
  loss = jnp.where(positive, pos_loss, neg_loss)
  if valid_mask is not None:
    mask = jnp.asarray(valid_mask, jnp.float32)
    if mask.ndim == loss.ndim - 1:
      mask = mask[..., None]
    loss = loss * mask
  return jnp.sum(loss)


def gather_at_indices(prediction, indices):
  """`prediction [B, H, W, D]` at `indices [B, M, 2]` `(y, x)` -> `[B, M, D]`."""
  batch, height, width, depth = prediction.shape
  flat = prediction.reshape(batch, height * width, depth)
  idx = jnp.asarray(indices, jnp.int32)
  flat_idx = idx[..., 0] * width + idx[..., 1]
  return jnp.take_along_axis(flat, flat_idx[..., None], axis=1)


def l1_at_indices(prediction, indices, target, weights):
  """Weighted L1 at box centers; returns the SUM over boxes (caller normalizes).

  Args:
    prediction: `[B, H, W, 2]` head output.
    indices: int `[B, M, 2]` `(y, x)` inside the grid.
    target: `[B, M, 2]`.
    weights: `[B, M]` box weights (0 for padding).

  Returns:
    float32 scalar `sum_boxes (|dy| + |dx|) * weight`.
  """
  pred = gather_at_indices(jnp.asarray(prediction, jnp.float32), indices)
  diff = jnp.abs(pred - jnp.asarray(target, jnp.float32))
  per_box = jnp.sum(diff, axis=-1) * jnp.asarray(weights, jnp.float32)
  return jnp.sum(per_box)


def centernet_loss(head_outputs_list: Sequence[Mapping[str, jax.Array]],
                   targets: Mapping[str, jax.Array], loss_config: Any,
                   valid_mask=None):
  """The CenterNet detection loss over every feature output.

  Args:
    head_outputs_list: list of head dicts (`'object_center'` `[B, H, W, C]` logits,
      `'box/scale'` and `'box/offset'` `[B, H, W, 2]`), one per feature output.
    targets: the dict from `targets.build_targets`.
    loss_config: `config.loss` (`center_weight`, `scale_weight`, `offset_weight`,
      `focal_alpha`, `focal_beta`; defaults in config_base).
    valid_mask: optional `[B, H, W]` from `targets.valid_output_mask` (center loss only).

  Returns:
    `(total, components)`. `components` maps 'object_center', 'box/scale', 'box/offset' to
    the **weighted** losses (as the OD API reports its `Loss/...` keys), each summed over
    the batch, divided by `max(num_boxes, 1)` and averaged over the feature outputs;
    `total` is their sum.
  """
  if not head_outputs_list:
    raise ValueError('head_outputs_list is empty')
  center_w = float(loss_config.center_weight)
  scale_w = float(loss_config.scale_weight)
  offset_w = float(loss_config.offset_weight)
  alpha = float(loss_config.focal_alpha)
  beta = float(loss_config.focal_beta)

  normalizer = jnp.maximum(jnp.asarray(targets['num_boxes'], jnp.float32), 1.0)
  num_outputs = len(head_outputs_list)
  center = scale = offset = jnp.float32(0.0)
  for outputs in head_outputs_list:
    center += penalty_reduced_focal_loss(outputs['object_center'], targets['heatmap'],
                                         alpha=alpha, beta=beta, valid_mask=valid_mask)
    scale += l1_at_indices(outputs['box/scale'], targets['indices'], targets['size'],
                           targets['weights'])
    offset += l1_at_indices(outputs['box/offset'], targets['indices'], targets['offset'],
                            targets['weights'])
  denom = normalizer * num_outputs
  components = {
      'object_center': center_w * center / denom,
      'box/scale': scale_w * scale / denom,
      'box/offset': offset_w * offset / denom,
  }
  total = components['object_center'] + components['box/scale'] + components['box/offset']
  return total, components


def _l1_at_keypoint_indices(prediction, indices, channels, target, weights):
  """Weighted L1 of (y, x) channel pairs at pixels; returns the SUM (caller normalizes).

  Args:
    prediction: `[B, H, W, 2P]` head output holding P (y, x) pairs.
    indices: int `[B, ..., 2]` (y, x) pixels.
    channels: int array broadcastable to `indices[..., 0]`: the pair read at each entry.
    target: `[B, ..., 2]`.
    weights: `[B, ...]`.
  """
  batch, height, width, depth = prediction.shape
  pairs = depth // 2
  flat = jnp.asarray(prediction, jnp.float32).reshape(batch, height * width * pairs, 2)
  idx = jnp.asarray(indices, jnp.int32)
  flat_idx = (idx[..., 0] * width + idx[..., 1]) * pairs + jnp.asarray(channels, jnp.int32)
  flat_idx = jnp.broadcast_to(flat_idx, idx.shape[:-1]).reshape(batch, -1)
  pred = jnp.take_along_axis(flat, flat_idx[..., None], axis=1).reshape(idx.shape)
  diff = jnp.sum(jnp.abs(pred - jnp.asarray(target, jnp.float32)), axis=-1)
  return jnp.sum(diff * jnp.asarray(weights, jnp.float32))


def keypoint_loss(head_outputs_list: Sequence[Mapping[str, jax.Array]],
                  targets: Mapping[str, jax.Array], *, task_name: str,
                  keypoint_config: Any, focal_alpha: float, focal_beta: float,
                  valid_mask=None):
  """The keypoint-task losses of the OD API (`_compute_keypoint_estimation_losses`).

  - `<task>/keypoint/heatmap`: the penalty-reduced focal loss against the joint heatmaps,
    multiplied by the valid-pixel mask and the blackout mask, summed and divided by
    `max(number of labelled keypoint-class joints, 1)`.
  - `<task>/keypoint/offset`: L1 (summed over y, x) of joint j's own offset pair (the shared
    pair when the head has 2 channels) at the disc pixels around each joint, weighted, divided
    by `max(sum of weights, 1)`.
  - `<task>/keypoint/regression`: the same for the center -> joint regression at the disc
    pixels around each box center.
  Each is averaged over the feature outputs and weighted (`keypoint_config`'s
  `heatmap_loss_weight`, `offset_loss_weight`, `regression_loss_weight`).

  Args:
    head_outputs_list: head dicts holding `<task>/keypoint/{heatmap,offset,regression}`.
    targets: the dict of `targets.build_keypoint_targets`.
    task_name: the head-name prefix.
    keypoint_config: `config.keypoints` (the three loss weights; defaults in config_base).
    focal_alpha, focal_beta: focal exponents (`config.loss`).
    valid_mask: optional `[B, H, W]` valid-pixel mask (heatmap loss only).

  Returns:
    `(total, components)` with the weighted components keyed by head name.
  """
  heat_w = float(keypoint_config.heatmap_loss_weight)
  off_w = float(keypoint_config.offset_loss_weight)
  reg_w = float(keypoint_config.regression_loss_weight)
  prefix = f'{task_name}/keypoint/'
  num_outputs = len(head_outputs_list)
  mask = jnp.asarray(targets['heatmap_mask'], jnp.float32)
  if valid_mask is not None:
    mask = mask * jnp.asarray(valid_mask, jnp.float32)[..., None]
  num_joints = targets['weights'].shape[-1]
  joint_ids = jnp.arange(num_joints, dtype=jnp.int32)
  heat = off = reg = jnp.float32(0.0)
  for outputs in head_outputs_list:
    heat += penalty_reduced_focal_loss(outputs[prefix + 'heatmap'], targets['heatmap'],
                                       alpha=focal_alpha, beta=focal_beta, valid_mask=mask)
    offset_pred = outputs[prefix + 'offset']
    offset_channels = joint_ids[:, None] if offset_pred.shape[-1] == 2 * num_joints else 0
    off += _l1_at_keypoint_indices(offset_pred, targets['offset_indices'], offset_channels,
                                   targets['offset'], targets['offset_weights'])
    reg_idx = jnp.broadcast_to(targets['regression_indices'][:, :, None],
                               targets['regression'].shape)
    reg += _l1_at_keypoint_indices(outputs[prefix + 'regression'], reg_idx, joint_ids[:, None],
                                   targets['regression'], targets['regression_weights'])
  heat_norm = jnp.maximum(jnp.asarray(targets['num_keypoints'], jnp.float32), 1.0)
  off_norm = jnp.maximum(jnp.sum(targets['offset_weights']), 1.0)
  reg_norm = jnp.maximum(jnp.sum(targets['regression_weights']), 1.0)
  components = {
      prefix + 'heatmap': heat_w * heat / (heat_norm * num_outputs),
      prefix + 'offset': off_w * off / (off_norm * num_outputs),
      prefix + 'regression': reg_w * reg / (reg_norm * num_outputs),
  }
  total = sum(components.values())
  return total, components
