"""The jitted network + decoder that evaluation, `detect`, the benchmarks and exports run.

Test-time augmentation (`config.eval.tta`, tta.py, docs/tta.md) lives behind
`make_predict_fn` too, so every caller that passes `tta=tta_params(config, keypoint_spec)`
gets it. Only jax and the model/decoder code are needed here (no pycocotools or TensorFlow).
"""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from absl import logging

from centernet_jax import decoder as decoder_lib
from centernet_jax import performance
from centernet_jax import tta as tta_lib
from centernet_jax.models import layers


def keypoint_decode_params(keypoint_spec, config):
  """The decoder's static `KeypointDecodeParams` for a spec and `config.keypoints` (None
  without a spec)."""
  if keypoint_spec is None:
    return None
  k = config.keypoints
  return decoder_lib.KeypointDecodeParams(
      task_name=keypoint_spec.task_name, class_channel=int(keypoint_spec.channel),
      num_candidates=int(k.num_candidates),
      candidate_score_threshold=float(k.candidate_score_threshold),
      unmatched_score=float(k.unmatched_score), box_scale=float(k.box_scale),
      candidate_search_scale=float(k.candidate_search_scale))


def tta_params(config, keypoint_spec=None) -> tta_lib.TTAParams | None:
  """The static `tta.TTAParams` of `config.eval.tta*` (None for 'none'); a keypoint spec
  gives flip TTA its joint flip permutation."""
  mode = config.eval.tta
  if mode not in tta_lib.MODES:
    raise ValueError(f'eval.tta={mode!r}: must be one of {list(tta_lib.MODES)}')
  if mode == 'none':
    return None
  multiscale = mode in ('multiscale', 'flip_multiscale')
  keypoints = {} if keypoint_spec is None else {
      'flip_permutation': tuple(int(p) for p in keypoint_spec.flip_permutation),
      'task_name': keypoint_spec.task_name}
  return tta_lib.TTAParams(
      flip=mode in ('flip', 'flip_multiscale'),
      scales=tuple(float(s) for s in config.eval.tta_scales) if multiscale else (),
      size_multiple=tta_lib.input_multiple(config.model) if multiscale else 1,
      nms=str(config.eval.tta_nms), nms_iou=float(config.eval.tta_nms_iou),
      soft_nms_sigma=float(config.eval.tta_soft_nms_sigma), **keypoints)


def images_in_turn(fn: Callable[[Any, dict], Any]) -> Callable[[Any, dict], Any]:
  """`fn(variables, batch)` (outputs per image along axis 0) run as a loop over the images,
  one image per device at a time.

  Inference treats every image on its own (batch norm uses its moving statistics), so this
  gives the same values as one call on the whole batch. On XLA:CPU it is faster for networks
  whose activations are large next to their FLOPs: one image's activations stay in the CPU's
  caches, eight do not (MobileNetV2 FPN 512 at batch 8: 1.27x; ResNet50 V1 FPN 1.07x,
  inside its spread; benchmarks/predict_loop.py, docs/benchmarks.md "Hot paths"). A batch of
  B images sharded over D devices is laid out as `[B / D, D]` so that each step takes one
  image from every device's share: no image moves. The B / D steps share their convolutions'
  kernel tiles (`layers.images_sharing_kernel_tiles`).
  """

  def looped(variables, batch):
    b = batch['image'].shape[0]
    # A symbolic batch (the exports' dynamic batch) cannot be split over devices: one image
    # per step.
    d = math.gcd(b, jax.device_count()) if isinstance(b, int) else 1
    steps = jax.tree.map(lambda a: jnp.swapaxes(a.reshape((d, b // d) + a.shape[1:]), 0, 1),
                         batch)
    with layers.images_sharing_kernel_tiles(b // d if isinstance(b, int) else 1):
      out = jax.lax.map(lambda one: fn(variables, one), steps)
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1).reshape((b,) + a.shape[2:]), out)

  return looped


def make_predict_fn(model, *, input_size: int, max_detections: int,
                    keypoint_params=None, multiclass_scores: bool = False,
                    tta: tta_lib.TTAParams | None = None, top_level: bool = True,
                    images_in_turn_on_cpu: bool = True) -> Callable[..., Any]:
  """A jitted (variables, batch) -> detections function for the last feature output.

  The batch needs `image` [B, S, S, 3] raw RGB, `true_size` and `original_size` [B, 2];
  detections are {'boxes' [B, K, 4] original pixels y-first, 'scores', 'classes'}, plus
  'keypoints' [B, K, J, 2] and 'keypoint_scores' [B, K, J] with `keypoint_params`
  (`decoder.KeypointDecodeParams`), and 'multiclass_scores' [B, K, C] with
  `multiclass_scores` (the exports' OD API signature needs them). `tta` (`tta_params(config)`;
  None: none) adds flip and/or multi-scale test-time augmentation with the same inputs and
  outputs (tta.py). `top_level=False` for a function traced inside another program (the
  exports): it then leaves the backend's compiler options (`performance.compiler_options`) to
  that program, since JAX takes them only on a top-level jit. On CPU the images run one at a
  time (`images_in_turn`) unless `images_in_turn_on_cpu=False` (benchmarks/predict_loop.py).
  """

  if tta is not None:
    sides = (tta_lib.scaled_sides(input_size, tta.scales, tta.size_multiple) if tta.scales
             else (input_size,))
    logging.info('Test-time augmentation: flip %s, canvas sides %s%s.', tta.flip, sides,
                 f', merged by {tta.nms} NMS' if tta.scales else '')

  def decode(heads, true_size, original_size, side):
    return decoder_lib.decode_detections(
        heads, true_size=true_size, original_size=original_size, input_size=side,
        max_detections=max_detections, keypoint_params=keypoint_params,
        multiclass_scores=multiclass_scores)

  def heads_at(variables, images, true_size):
    """The last feature output's heads of `images`, flip-averaged under `tta.flip`."""
    if not tta.flip:
      return model.apply(variables, images, train=False)[-1]
    both = model.apply(variables, tta_lib.mirror_images(images, true_size), train=False)[-1]
    b = images.shape[0]
    direct = {k: v[:b] for k, v in both.items()}
    mirrored = {k: v[b:] for k, v in both.items()}
    return tta_lib.average_flip(direct, tta_lib.unflip_heads(mirrored, true_size, tta), tta)

  def predict(variables, batch):
    if tta is None:
      outputs = model.apply(variables, batch['image'], train=False)
      return decode(outputs[-1], batch['true_size'], batch['original_size'], input_size)
    if not tta.scales:
      return decode(heads_at(variables, batch['image'], batch['true_size']),
                    batch['true_size'], batch['original_size'], input_size)
    per_scale = []
    for side in sides:
      images = batch['image']
      true_size = batch['true_size']
      if side != input_size:
        images = tta_lib.resize_canvas(images, side)
        true_size = jnp.asarray(true_size, jnp.float32) * (side / input_size)
      per_scale.append(decode(heads_at(variables, images, true_size), true_size,
                              batch['original_size'], side))
    return tta_lib.merge_detections(per_scale, max_detections=max_detections, params=tta)

  def predict_any_backend(variables, batch):
    # The images one at a time on CPU (`images_in_turn`), the whole batch at once elsewhere.
    if not images_in_turn_on_cpu:
      return predict(variables, batch)
    return jax.lax.platform_dependent(variables, batch, cpu=images_in_turn(predict),
                                      default=predict)

  return jax.jit(predict_any_backend,
                 compiler_options=performance.compiler_options() if top_level else None)


PREDICT_KEYS = ('image', 'true_size', 'original_size')
