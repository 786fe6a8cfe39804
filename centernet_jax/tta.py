"""Test-time augmentation (TTA) as the original CenterNet does it: flip and multi-scale.

`predict.make_predict_fn` runs these inside its one jitted function (docs/tta.md):

- **Flip**: the network runs on the images and their horizontal mirrors in one batch; the
  mirrored pass's outputs are flipped back (`unflip_heads`) and averaged with the direct pass
  (`average_flip`): the center heatmap as probabilities (after the sigmoid), the box sizes as
  they are, the joint heatmaps and joint regressions with the joints renamed through the
  keypoint spec's flip permutation. Offsets (box and joint) come from the direct pass only.
- **Multi-scale**: the evaluation-preprocessed canvas `[B, S, S, 3]` is resized on device to
  each scale's side (`scaled_sides`), decoded with the true size scaled alike, and the
  detections of all scales (already in original image pixels) are merged by class-aware
  soft-NMS or NMS (`merge_detections`) down to the usual K.

The mirror flips each image, not the whole canvas: the columns `0..w - 1` with `w` its true
width rounded up to the output stride (at most 3 padding columns join it), padding staying at
the right, as in training's flip augmentation. On the output grid (width W, continuous x in
[0, W), pixel edges at integers; docs/conventions.md) with `Wt = w / 4` cells mirrored, x maps
to `Wt - x` and cell i to cell `Wt - 1 - i` (cells from Wt on stay). A joint regression is
measured from the integer peak cell, so a mirrored pass's `dx'` at cell `Wt - 1 - i` means
`1 - dx'` at cell i (the original CenterNet, whose mirror is x -> W - 1 - x with pixel centers
at integers, negates it instead; here pixel edges sit at integers).
"""

from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from centernet_jax import nms as nms_lib
from centernet_jax.models import hourglass

MODES = ('none', 'flip', 'multiscale', 'flip_multiscale')
OUTPUT_STRIDE = 4  # docs/conventions.md: every backbone
# Input side multiple each backbone needs: the FPNs and ResNet v2 reach stride 32 (their
# __call__ refuses other sides); the hourglass's comes from its own module.
_FIXED_INPUT_MULTIPLE = {'mobilenet_v2_fpn': 32, 'resnet_v1_fpn': 32, 'resnet_v2': 32}


class TTAParams(NamedTuple):
  """Static TTA settings (`config.eval.tta*`; `predict.tta_params`).

  Attributes:
    flip: run the mirrored images too and average (see the module docstring).
    scales: input scales for multi-scale, e.g. (0.5, 0.75, 1.0, 1.25, 1.5); () for one scale
      without any merging.
    size_multiple: each scaled side is rounded to a multiple of it (the backbone's).
    nms: 'soft' (Gaussian soft-NMS) or 'hard' (greedy NMS), merging the scales.
    nms_iou: the IoU threshold of 'hard'.
    soft_nms_sigma: the Gaussian decay of 'soft'.
    flip_permutation: the keypoint task's joint flip permutation (None without keypoints).
    task_name: the keypoint task's head prefix.
  """
  flip: bool = False
  scales: tuple[float, ...] = ()
  size_multiple: int = 32
  nms: str = 'soft'
  nms_iou: float = 0.5
  soft_nms_sigma: float = 0.5
  flip_permutation: tuple[int, ...] | None = None
  task_name: str = 'human_pose'


def input_multiple(model_config) -> int:
  """The input side multiple the `model` config's backbone needs (32, or 128 for the
  Hourglass-104)."""
  backbone = model_config.backbone
  if backbone == 'hourglass':
    return int(hourglass.HourglassNetwork(**dict(model_config.backbone_kwargs.hourglass))
               .input_multiple)
  if backbone not in _FIXED_INPUT_MULTIPLE:
    raise ValueError(f'model.backbone={backbone!r}: no known input multiple for multi-scale '
                     f'TTA (known: hourglass, {", ".join(sorted(_FIXED_INPUT_MULTIPLE))}).')
  return _FIXED_INPUT_MULTIPLE[backbone]


def scaled_sides(input_size: int, scales: Sequence[float], multiple: int) -> tuple[int, ...]:
  """The distinct canvas sides of `scales`: `scale * input_size` rounded to the nearest
  multiple of `multiple` (at least one multiple), in the order given.

  E.g. 96 with (0.5, 0.75, 1.0, 1.25, 1.5) and 32 -> (64, 96, 128): 48 and 72 both round to
  64, 120 and 144 to 128 (round half to even).
  """
  sides = []
  for s in scales:
    if not s > 0:
      raise ValueError(f'eval.tta_scales={tuple(scales)!r}: every scale must be > 0')
    side = max(int(round(float(s) * input_size / multiple)) * multiple, multiple)
    if side not in sides:
      sides.append(side)
  return tuple(sides)


def mirrored_width(true_width, stride: int = OUTPUT_STRIDE):
  """`[B]` true widths (input pixels, int or float) -> int32 `[B]` widths in output cells
  that the mirror flips: `ceil(true_width / stride)`, so that the flipped span is a whole
  number of output cells (at most stride - 1 padding columns join the image)."""
  # The float true widths of a resized canvas carry rounding: 28.000002 must stay 7 cells.
  return jnp.ceil(jnp.asarray(true_width, jnp.float32) / stride - 1e-4).astype(jnp.int32)


def mirror_width(x, width):
  """`[B, H, W, D]` -> columns `0..width_b - 1` of each example reversed, the rest kept.

  `width`: int `[B]` columns to mirror (the image, not the zero padding to its right), so
  the mirrored canvas is what training's flip augmentation gives: the image flipped, padding
  still bottom/right. Its own inverse.
  """
  cols = jnp.arange(x.shape[2], dtype=jnp.int32)[None, :]
  w = jnp.asarray(width, jnp.int32)[:, None]
  idx = jnp.where(cols < w, w - 1 - cols, cols)  # [B, W]
  return jnp.take_along_axis(x, idx[:, None, :, None], axis=2)


def mirror_images(images, true_size):
  """`[B, S, S, 3]` canvases -> `[2B, S, S, 3]`: the canvases, then each with its image
  (its `true_size` width rounded up to the output stride) mirrored (`mirror_width`)."""
  width = mirrored_width(jnp.asarray(true_size)[:, 1]) * OUTPUT_STRIDE
  return jnp.concatenate([images, mirror_width(images, width)], axis=0)


def unflip_heads(heads: Mapping[str, jax.Array], true_size,
                 params: TTAParams) -> dict[str, jax.Array]:
  """The head dict of a mirrored pass (`mirror_images`), mapped back onto the canvas.

  `true_size` `[B, 2]` (input pixels of the pass) gives the mirrored width. Only the heads
  that flip averaging uses: 'object_center' `[B, H, W, C]` and 'box/scale' `[B, H, W, 2]`
  (h, w) are mirrored back; with keypoints, `<task>/keypoint/heatmap` `[B, H, W, J]` is
  mirrored back with its joints renamed (joint j <- mirrored joint perm[j]) and
  `<task>/keypoint/regression` `[B, H, W, 2J]` (y, x) pairs likewise, its x turned into
  `1 - x` (module docstring). Offsets are not returned: flip TTA uses the direct pass's.
  """
  width = mirrored_width(jnp.asarray(true_size)[:, 1])
  out = {'object_center': mirror_width(heads['object_center'], width),
         'box/scale': mirror_width(heads['box/scale'], width)}
  if params.flip_permutation is not None:
    perm = jnp.asarray(params.flip_permutation, jnp.int32)
    prefix = f'{params.task_name}/keypoint/'
    out[prefix + 'heatmap'] = jnp.take(mirror_width(heads[prefix + 'heatmap'], width), perm,
                                       axis=-1)
    reg = mirror_width(heads[prefix + 'regression'], width)
    b, h, w, depth = reg.shape
    reg = jnp.take(reg.reshape(b, h, w, depth // 2, 2), perm, axis=3)
    reg = jnp.stack([reg[..., 0], 1.0 - reg[..., 1]], axis=-1)
    out[prefix + 'regression'] = reg.reshape(b, h, w, depth)
  return out


def mean_probability_logits(a, b):
  """`logit((sigmoid(a) + sigmoid(b)) / 2)`, computed in log space.

  The decoder takes logits; averaging the probabilities (as the original does) and handing
  back their logit keeps the decoder unchanged, and the log-space form stays finite where a
  probability rounds to 0 or 1 in float32.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  log_p = jnp.logaddexp(jax.nn.log_sigmoid(a), jax.nn.log_sigmoid(b))
  log_q = jnp.logaddexp(jax.nn.log_sigmoid(-a), jax.nn.log_sigmoid(-b))
  return log_p - log_q


def average_flip(direct: Mapping[str, jax.Array], unflipped: Mapping[str, jax.Array],
                 params: TTAParams) -> dict[str, jax.Array]:
  """The flip-averaged head dict: `direct` (the unmirrored pass) with its center heatmap,
  box sizes and (with keypoints) joint heatmap and regression averaged with `unflipped`
  (`unflip_heads` of the mirrored pass); heatmaps as probabilities, returned as logits."""
  out = dict(direct)
  out['object_center'] = mean_probability_logits(direct['object_center'],
                                                 unflipped['object_center'])
  out['box/scale'] = (direct['box/scale'] + unflipped['box/scale']) / 2.0
  if params.flip_permutation is not None:
    prefix = f'{params.task_name}/keypoint/'
    out[prefix + 'heatmap'] = mean_probability_logits(direct[prefix + 'heatmap'],
                                                      unflipped[prefix + 'heatmap'])
    out[prefix + 'regression'] = (direct[prefix + 'regression']
                                  + unflipped[prefix + 'regression']) / 2.0
  return out


def resize_canvas(images, side: int):
  """`[B, S, S, 3]` evaluation canvas (resized image + bottom/right zero padding) ->
  `[B, side, side, 3]`, bilinear (antialiased when shrinking). The padding scales with the
  image, so the image's true size scales by `side / S` too."""
  b, _, _, c = images.shape
  return jax.image.resize(jnp.asarray(images, jnp.float32), (b, side, side, c),
                          method='linear', antialias=True)


def merge_detections(per_scale: Sequence[Mapping[str, jax.Array]], *, max_detections: int,
                     params: TTAParams) -> dict[str, jax.Array]:
  """Merges the decoder's detections of several scales into the usual K per image.

  Args:
    per_scale: decoder outputs (boxes `[B, K_s, 4]` original pixels, scores, classes, and any
      other per-detection field `[B, K_s, ...]` such as keypoints), already in original image
      pixels.
    max_detections: static K of the result.
    params: `nms` ('soft' or 'hard'), `nms_iou`, `soft_nms_sigma`.

  Returns:
    The same fields with `[B, K, ...]`, scores descending (soft-NMS: the decayed scores);
    slots without a detection have score 0 and every other field 0.
  """
  merged = {key: jnp.concatenate([d[key] for d in per_scale], axis=1) for key in per_scale[0]}
  if params.nms == 'soft':
    idx, scores, valid = nms_lib.soft_nms(merged['boxes'], merged['scores'], merged['classes'],
                                          max_outputs=max_detections,
                                          sigma=params.soft_nms_sigma)
  elif params.nms == 'hard':
    idx, scores, valid = nms_lib.nms(merged['boxes'], merged['scores'], merged['classes'],
                                     max_outputs=max_detections, iou_threshold=params.nms_iou)
  else:
    raise ValueError(f'eval.tta_nms={params.nms!r}: must be one of {list(nms_lib.METHODS)}')
  out = {}
  for key, value in merged.items():
    picked = jnp.take_along_axis(value, idx.reshape(idx.shape + (1,) * (value.ndim - 2)),
                                 axis=1)
    mask = valid.reshape(valid.shape + (1,) * (value.ndim - 2))
    out[key] = jnp.where(mask, picked, jnp.zeros_like(picked))
  out['scores'] = scores
  return out
