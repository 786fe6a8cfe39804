"""COCO box evaluation: a jitted predict step over the sharded eval batch, pycocotools on host.

Every process runs the same number of eval batches (padded with `example_mask` 0); detections
are gathered to every process and COCOeval runs on process 0 only.
"""

import contextlib
import io
import json
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging
from etils import epath
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from centernet_jax import decoder as decoder_lib
from centernet_jax import sharding

# pycocotools' 12 summary statistics, in its order.
STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
              'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


def boxes_to_coco_json(image_ids: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                       classes: np.ndarray, channel_to_category_id: Sequence[int]
                       ) -> list[dict[str, Any]]:
  """Converts decoded detections into COCO result dicts.

  Args:
    image_ids: [N] COCO image ids.
    boxes: [N, K, 4] y-first boxes in original image pixels.
    scores: [N, K].
    classes: [N, K] contiguous channels.
    channel_to_category_id: the COCO category id of each channel (-1: a channel with no
      category, as in the zoo's 90-channel layout; its detections are dropped).
  Returns:
    A list of {'image_id', 'category_id', 'bbox': [x, y, w, h] pixels, 'score'}.
  """
  ids = np.asarray(channel_to_category_id)
  results = []
  for image_id, b, s, c in zip(image_ids, boxes, scores, classes):
    ymin, xmin, ymax, xmax = (b[:, i].astype(np.float64) for i in range(4))
    for k in range(b.shape[0]):
      if ids[c[k]] < 0:
        continue
      results.append({
          'image_id': int(image_id), 'category_id': int(ids[c[k]]),
          'bbox': [round(xmin[k], 3), round(ymin[k], 3),
                   round(xmax[k] - xmin[k], 3), round(ymax[k] - ymin[k], 3)],
          'score': round(float(s[k]), 5)})
  return results


class CocoDetectionEvaluator:
  """Accumulates detections and scores them against a COCO annotation file."""

  def __init__(self, annotation_file: str, channel_to_category_id: Sequence[int]):
    self.annotation_file = str(annotation_file)
    self.channel_to_category_id = list(channel_to_category_id)
    self._results: list[dict[str, Any]] = []
    self._image_ids: set[int] = set()

  def add(self, image_ids, boxes, scores, classes, example_mask=None) -> None:
    """Adds one batch; examples whose `example_mask` is 0 (eval padding) are ignored."""
    image_ids = np.asarray(image_ids)
    keep = np.ones(len(image_ids), bool) if example_mask is None else (
        np.asarray(example_mask) > 0)
    self._image_ids.update(int(i) for i in image_ids[keep])
    self._results.extend(boxes_to_coco_json(
        image_ids[keep], np.asarray(boxes)[keep], np.asarray(scores)[keep],
        np.asarray(classes)[keep], self.channel_to_category_id))

  @property
  def num_images(self) -> int:
    return len(self._image_ids)

  def compute(self) -> dict[str, float]:
    """Runs COCOeval (bbox, 100 detections per image) on the images added so far."""
    with contextlib.redirect_stdout(io.StringIO()):
      ground_truth = COCO(self.annotation_file)
    if not self._image_ids:
      raise ValueError('No images were evaluated.')
    unknown = self._image_ids - set(ground_truth.getImgIds())
    if unknown:
      raise ValueError(f'{self.annotation_file}: predictions for image ids not in the file, '
                       f'e.g. {sorted(unknown)[:5]}.')
    if not self._results:
      return {name: 0.0 for name in STAT_NAMES}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
      detections = ground_truth.loadRes(self._results)
      coco_eval = COCOeval(ground_truth, detections, iouType='bbox')
      coco_eval.params.imgIds = sorted(self._image_ids)
      coco_eval.evaluate()
      coco_eval.accumulate()
      coco_eval.summarize()
    logging.info('COCO box evaluation on %d images:\n%s', self.num_images, buffer.getvalue())
    # -1 means "no ground truth of that size"; report it as such rather than as a score.
    return {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats)}


def make_predict_fn(model, *, input_size: int, max_detections: int) -> Callable[..., Any]:
  """A jitted (variables, batch) -> detections function for the last feature output.

  The batch needs `image` [B, S, S, 3] raw RGB, `true_size` and `original_size` [B, 2];
  detections are {'boxes' [B, K, 4] original pixels y-first, 'scores', 'classes'}.
  """

  def predict(variables, batch):
    outputs = model.apply(variables, batch['image'], train=False)
    return decoder_lib.decode_detections(
        outputs[-1], true_size=batch['true_size'], original_size=batch['original_size'],
        input_size=input_size, max_detections=max_detections)

  return jax.jit(predict)


PREDICT_KEYS = ('image', 'true_size', 'original_size')


def run_evaluation(*, variables, predict_fn, eval_iterator, num_batches: int, mesh,
                   annotation_file: str, channel_to_category_id: Sequence[int]
                   ) -> dict[str, float] | None:
  """Predicts on every eval batch and returns the COCO metrics (None on processes > 0)."""
  evaluator = CocoDetectionEvaluator(annotation_file, channel_to_category_id)
  start = time.time()
  for _, local_batch in zip(range(num_batches), eval_iterator):
    batch = sharding.to_global(local_batch, mesh, PREDICT_KEYS)
    detections = sharding.to_host(predict_fn(variables, batch))
    host = sharding.to_host(sharding.to_global(
        local_batch, mesh, ('image_id', 'example_mask')))
    if jax.process_index() == 0:
      evaluator.add(host['image_id'], detections['boxes'], detections['scores'],
                    detections['classes'], host['example_mask'])
  logging.info('Predicted %d eval batches in %.1f s.', num_batches, time.time() - start)
  if jax.process_index() != 0:
    return None
  return evaluator.compute()


def write_metrics(workdir, step: int, metrics: dict[str, float], prefix: str = '') -> None:
  """Writes DIR/eval_metrics.json (latest) and appends to DIR/eval_metrics_history.jsonl."""
  record = {'step': int(step), **{prefix + k: v for k, v in metrics.items()}}
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'eval_metrics.json').write_text(json.dumps(record, indent=2) + '\n')
  with (workdir / 'eval_metrics_history.jsonl').open('a') as f:
    f.write(json.dumps(record) + '\n')
