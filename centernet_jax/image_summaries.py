"""TensorBoard images at each evaluation: what the model predicts next to what it is taught.

For the first `config.eval.num_image_summaries` val images, one row of panels per image:
ground truth | detections | predicted center heatmap | target center heatmap (both the max over
classes), plus predicted | target joint heatmaps (max over joints) for a keypoint task;
skeletons are drawn on the ground truth and the detections. The target heatmaps come from
`targets.build_targets` / `build_keypoint_targets` with the train step's arguments, on the
val batch (no augmentation). Written through clu's writer (`write_images`) under
`images/val_examples`. A drawing problem is logged and skipped; it never stops a run.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from centernet_jax import decoder as decoder_lib
from centernet_jax import sharding
from centernet_jax import train_step
from centernet_jax import visualize

SUMMARY_KEY = 'images/val_examples'
BOX_KEYS = ('image', 'true_size', 'original_size', 'boxes', 'classes', 'box_mask')
KEYPOINT_KEYS = ('keypoints', 'keypoint_mask')


def make_summary_fn(model, config: ml_collections.ConfigDict, num_classes: int,
                    keypoint_spec=None, keypoint_params=None) -> Callable[..., Any]:
  """A jitted (variables, batch) -> dict of what the summaries draw.

  The batch holds `BOX_KEYS` (+ `KEYPOINT_KEYS` with a spec) as in docs/conventions.md.
  Returns the decoder's detections (original pixels) and float32 `[B, S/4, S/4]` heatmaps:
  'pred_heatmap' / 'target_heatmap' (max over classes; sigmoid of the logits for the
  prediction), with a keypoint spec also 'pred_keypoint_heatmap' / 'target_keypoint_heatmap'
  (max over joints). Reduced on device so that only B small maps reach the host.
  """
  input_size = int(config.input.size)

  def summarize(variables, batch):
    outputs = model.apply(variables, batch['image'], train=False)[-1]
    out = decoder_lib.decode_detections(
        outputs, true_size=batch['true_size'], original_size=batch['original_size'],
        input_size=input_size, max_detections=config.eval.max_detections,
        keypoint_params=keypoint_params)
    targets, kp_targets = train_step.step_targets(batch, config, num_classes, keypoint_spec)
    out['pred_heatmap'] = jnp.max(jax.nn.sigmoid(outputs['object_center']), axis=-1)
    out['target_heatmap'] = jnp.max(targets['heatmap'], axis=-1)
    if keypoint_spec is not None:
      heads = outputs[f'{keypoint_spec.task_name}/keypoint/heatmap']
      out['pred_keypoint_heatmap'] = jnp.max(jax.nn.sigmoid(heads), axis=-1)
      out['target_keypoint_heatmap'] = jnp.max(kp_targets['heatmap'], axis=-1)
    return out

  return jax.jit(summarize)


def example_rows(batch: dict[str, np.ndarray], result: dict[str, np.ndarray],
                 class_names: Sequence[str], num: int, keypoint_spec=None,
                 min_score: float = 0.3) -> list[np.ndarray]:
  """One uint8 `[H, W, 3]` row of panels per real example, at most `num`.

  Args:
    batch: the host batch (docs/conventions.md): images on the padded S x S canvas, boxes
      normalized to it.
    result: host arrays of a `make_summary_fn` function on that batch.
    class_names: name of each channel.
    num: how many examples.
    keypoint_spec: the task's spec (skeleton, joint heatmaps) or None.
    min_score: detections drawn from this score up.
  """
  size = batch['image'].shape[1]
  rows = []
  real = np.nonzero(np.asarray(batch['example_mask']) > 0)[0][:num]
  for b in real:
    image = np.clip(batch['image'][b], 0, 255).astype(np.uint8)
    mask = batch['box_mask'][b] > 0
    skeleton = keypoint_spec.skeleton if keypoint_spec is not None else ()
    flip = keypoint_spec.flip_permutation if keypoint_spec is not None else ()
    kp_channel = keypoint_spec.channel if keypoint_spec is not None else -1
    gt = visualize.draw_ground_truth(
        image, batch['boxes'][b][mask] * size, batch['classes'][b][mask], class_names,
        keypoints=(batch['keypoints'][b][mask] * size if keypoint_spec is not None else None),
        keypoint_mask=(batch['keypoint_mask'][b][mask] if keypoint_spec is not None else None),
        skeleton=skeleton, keypoint_channel=kp_channel, flip_permutation=flip)
    # Detections are in original pixels; the canvas is the resized image (one factor per axis).
    factor = batch['true_size'][b] / batch['original_size'][b]
    boxes = result['boxes'][b] * np.tile(factor, 2)
    keypoints = keypoint_scores = None
    if 'keypoints' in result:
      keypoints = result['keypoints'][b] * factor
      keypoint_scores = result['keypoint_scores'][b]
    det = visualize.draw_detections(
        image, boxes, result['scores'][b], result['classes'][b], class_names,
        min_score=min_score, keypoints=keypoints, keypoint_scores=keypoint_scores,
        skeleton=skeleton,
        keypoint_channel=kp_channel, flip_permutation=flip)
    panels = [visualize.titled(gt, 'ground truth'),
              visualize.titled(det, f'detections >= {min_score:g}'),
              visualize.titled(visualize.overlay_heatmap(image, result['pred_heatmap'][b]),
                               'predicted centers (max over classes)'),
              visualize.titled(visualize.overlay_heatmap(image, result['target_heatmap'][b]),
                               'target centers (train step targets)')]
    if keypoint_spec is not None:
      panels += [
          visualize.titled(visualize.overlay_heatmap(image, result['pred_keypoint_heatmap'][b]),
                           'predicted joints'),
          visualize.titled(visualize.overlay_heatmap(image,
                                                     result['target_keypoint_heatmap'][b]),
                           'target joints')]
    rows.append(np.asarray(visualize.compose([panels])))
  return rows


def write_image_summaries(writer, step: int, *, summary_fn, variables, eval_iterator, mesh,
                          class_names: Sequence[str], config: ml_collections.ConfigDict,
                          keypoint_spec=None) -> bool:
  """Draws the first val batch's examples and writes them with `writer.write_images`.

  Every process runs the (collective) summary function on its share of the first eval batch;
  process 0 draws and writes. Returns True when images were written; any failure (an empty
  val set, a drawing error, a writer error) is logged and returns False.
  """
  try:
    if len(eval_iterator) == 0:
      logging.warning('Image summaries: the val set is empty; nothing to draw.')
      return False
    local = next(iter(eval_iterator))
    keys = BOX_KEYS + (KEYPOINT_KEYS if keypoint_spec is not None else ())
    result = sharding.to_host(summary_fn(variables, sharding.to_global(local, mesh, keys)))
    batch = sharding.to_host(sharding.to_global(local, mesh, keys + ('example_mask',)))
    if jax.process_index() != 0:
      return False
    rows = example_rows(batch, result, class_names, int(config.eval.num_image_summaries),
                        keypoint_spec, float(config.eval.image_summary_min_score))
    if not rows:
      logging.warning('Image summaries: the first val batch has no real example.')
      return False
    height = max(r.shape[0] for r in rows)
    width = max(r.shape[1] for r in rows)
    stack = np.zeros((len(rows), height, width, 3), np.uint8)
    for i, r in enumerate(rows):
      stack[i, :r.shape[0], :r.shape[1]] = r
    writer.write_images(step, {SUMMARY_KEY: stack})
    return True
  except Exception:  # pylint: disable=broad-except
    logging.exception('Image summaries at step %d failed; training goes on without them.', step)
    return False
