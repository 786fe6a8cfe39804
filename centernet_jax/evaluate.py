"""COCO box evaluation: a jitted predict step over the sharded eval batch, pycocotools on host.

Every process runs the same number of eval batches (padded with `example_mask` 0); detections
are gathered to every process and COCOeval runs on process 0 only.

With a keypoint task, COCO keypoint AP (OKS, pycocotools `iouType='keypoints'`, its default
20 detections per image) runs next to box AP, with the task's per-joint `oks_sigmas` (COCO's
17 for COCO, 0.05 for unknown joint names; keypoint_spec.py), on the keypoint category's
detections; its 10 statistics are reported as `keypoints/AP`, ... (`KEYPOINT_STAT_NAMES`).
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
from centernet_jax import file_io
from centernet_jax import sharding

# pycocotools' 12 summary statistics, in its order.
STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
              'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')
# pycocotools' 10 keypoint summary statistics, in its order (reported under KEYPOINT_PREFIX).
KEYPOINT_STAT_NAMES = ('AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75', 'ARm', 'ARl')
KEYPOINT_PREFIX = 'keypoints/'


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


def load_coco_ground_truth(annotation_file: str) -> COCO:
  """pycocotools' COCO index of an annotation file: local, gs:// or any tf.io.gfile path."""
  data = file_io.read_json(annotation_file)
  ground_truth = COCO()
  ground_truth.dataset = data
  with contextlib.redirect_stdout(io.StringIO()):
    ground_truth.createIndex()
  return ground_truth


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
    ground_truth = load_coco_ground_truth(self.annotation_file)
    # -1 means "no ground truth of that size"; it is reported as such rather than as a score.
    return run_cocoeval(ground_truth, self._results, self._image_ids, self.annotation_file,
                        'bbox', STAT_NAMES)


def run_cocoeval(ground_truth: COCO, results: list[dict[str, Any]], image_ids: set[int],
                 annotation_file: str, iou_type: str, stat_names: Sequence[str],
                 configure: Callable[[Any], None] | None = None) -> dict[str, float]:
  """COCOeval (`iou_type` 'bbox' or 'keypoints') of `results` on `image_ids` -> its 12 / 10
  summary stats under `stat_names`. Raises when no image was evaluated or a prediction names an
  image id that `annotation_file` does not have. `configure(params)` adjusts the parameters."""
  if not image_ids:
    raise ValueError('No images were evaluated.')
  unknown = image_ids - set(ground_truth.getImgIds())
  if unknown:
    raise ValueError(f'{annotation_file}: predictions for image ids not in the file, '
                     f'e.g. {sorted(unknown)[:5]}.')
  if not results:
    return {name: 0.0 for name in stat_names}
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    detections = ground_truth.loadRes(results)
    coco_eval = COCOeval(ground_truth, detections, iouType=iou_type)
    if configure is not None:
      configure(coco_eval.params)
    coco_eval.params.imgIds = sorted(image_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  logging.info('COCO %s evaluation on %d images:\n%s', iou_type, len(image_ids),
               buffer.getvalue())
  return {name: float(v) for name, v in zip(stat_names, coco_eval.stats)}


def keypoints_to_coco_json(image_ids: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                           classes: np.ndarray, *, channel: int, category_id: int
                           ) -> list[dict[str, Any]]:
  """Decoded joints of the keypoint class -> COCO keypoint result dicts.

  Args:
    image_ids: [N]; keypoints: [N, K, J, 2] (y, x) original pixels; scores, classes: [N, K].
    channel: the keypoint class channel (other detections are skipped); category_id: its id.
  Returns:
    A list of {'image_id', 'category_id', 'keypoints': [x, y, 1] * J, 'score'} (the
    detection score, as the OD API's evaluator reports it).
  """
  results = []
  for image_id, kp, s, c in zip(image_ids, keypoints, scores, classes):
    for k in np.nonzero(np.asarray(c) == channel)[0]:
      flat = []
      for y, x in np.asarray(kp[k], np.float64):
        flat += [round(float(x), 3), round(float(y), 3), 1]
      results.append({'image_id': int(image_id), 'category_id': int(category_id),
                      'keypoints': flat, 'score': round(float(s[k]), 5)})
  return results


class CocoKeypointEvaluator:
  """Accumulates decoded joints and scores them with COCO's OKS keypoint AP."""

  def __init__(self, annotation_file: str, keypoint_spec):
    self.annotation_file = str(annotation_file)
    self.spec = keypoint_spec
    self._results: list[dict[str, Any]] = []
    self._image_ids: set[int] = set()

  def add(self, image_ids, keypoints, scores, classes, example_mask=None) -> None:
    """Adds one batch; examples whose `example_mask` is 0 (eval padding) are ignored."""
    image_ids = np.asarray(image_ids)
    keep = np.ones(len(image_ids), bool) if example_mask is None else (
        np.asarray(example_mask) > 0)
    self._image_ids.update(int(i) for i in image_ids[keep])
    self._results.extend(keypoints_to_coco_json(
        image_ids[keep], np.asarray(keypoints)[keep], np.asarray(scores)[keep],
        np.asarray(classes)[keep], channel=self.spec.channel,
        category_id=self.spec.category_id))

  def compute(self) -> dict[str, float]:
    """COCOeval (keypoints, OKS with the spec's sigmas) on the images added so far.

    Ground-truth annotations without `num_keypoints` get it counted from their `keypoints`
    (pycocotools ignores instances with 0 labelled joints), keypoint-class annotations without
    `keypoints` get none labelled, and annotations without `area` the box area.
    """
    data = file_io.read_json(self.annotation_file)
    num_joints = self.spec.num_keypoints
    for ann in data.get('annotations', []):
      if ann.get('category_id') == self.spec.category_id and 'keypoints' not in ann:
        ann['keypoints'] = [0] * (3 * num_joints)  # no joints annotated: ignored by COCOeval
      if 'keypoints' in ann and 'num_keypoints' not in ann:
        ann['num_keypoints'] = int(sum(1 for v in ann['keypoints'][2::3] if v > 0))
      if 'area' not in ann and 'bbox' in ann:
        ann['area'] = float(ann['bbox'][2] * ann['bbox'][3])
    ground_truth = COCO()
    ground_truth.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
      ground_truth.createIndex()

    def oks_settings(params):
      params.kpt_oks_sigmas = np.asarray(self.spec.oks_sigmas, np.float64)
      params.catIds = [int(self.spec.category_id)]

    return run_cocoeval(ground_truth, self._results, self._image_ids, self.annotation_file,
                        'keypoints', KEYPOINT_STAT_NAMES, oks_settings)


def keypoint_decode_params(keypoint_spec, config):
  """The decoder's static `KeypointDecodeParams` for a spec and `config.keypoints` (None
  without a spec)."""
  if keypoint_spec is None:
    return None
  k = config.get('keypoints') or {}
  return decoder_lib.KeypointDecodeParams(
      task_name=keypoint_spec.task_name, class_channel=int(keypoint_spec.channel),
      num_candidates=int(k.get('num_candidates', 100)),
      candidate_score_threshold=float(k.get('candidate_score_threshold', 0.1)),
      unmatched_score=float(k.get('unmatched_score', 0.1)),
      box_scale=float(k.get('box_scale', 1.2)),
      candidate_search_scale=float(k.get('candidate_search_scale', 0.3)))


def make_predict_fn(model, *, input_size: int, max_detections: int,
                    keypoint_params=None) -> Callable[..., Any]:
  """A jitted (variables, batch) -> detections function for the last feature output.

  The batch needs `image` [B, S, S, 3] raw RGB, `true_size` and `original_size` [B, 2];
  detections are {'boxes' [B, K, 4] original pixels y-first, 'scores', 'classes'}, plus
  'keypoints' [B, K, J, 2] and 'keypoint_scores' [B, K, J] with `keypoint_params`
  (`decoder.KeypointDecodeParams`).
  """

  def predict(variables, batch):
    outputs = model.apply(variables, batch['image'], train=False)
    return decoder_lib.decode_detections(
        outputs[-1], true_size=batch['true_size'], original_size=batch['original_size'],
        input_size=input_size, max_detections=max_detections,
        keypoint_params=keypoint_params)

  return jax.jit(predict)


PREDICT_KEYS = ('image', 'true_size', 'original_size')


def run_evaluation(*, variables, predict_fn, eval_iterator, num_batches: int, mesh,
                   annotation_file: str, channel_to_category_id: Sequence[int],
                   keypoint_spec=None, keypoint_annotation_file: str | None = None
                   ) -> dict[str, float] | None:
  """Predicts on every eval batch and returns the COCO metrics (None on processes > 0).

  With a `keypoint_spec` (and the predict function decoding joints) the keypoint metrics
  against `keypoint_annotation_file` (default: `annotation_file`) are added under
  `KEYPOINT_PREFIX`.
  """
  evaluator = CocoDetectionEvaluator(annotation_file, channel_to_category_id)
  kp_evaluator = None
  if keypoint_spec is not None:
    kp_evaluator = CocoKeypointEvaluator(keypoint_annotation_file or annotation_file,
                                         keypoint_spec)
  start = time.time()
  for _, local_batch in zip(range(num_batches), eval_iterator):
    batch = sharding.to_global(local_batch, mesh, PREDICT_KEYS)
    detections = sharding.to_host(predict_fn(variables, batch))
    host = sharding.to_host(sharding.to_global(
        local_batch, mesh, ('image_id', 'example_mask')))
    if jax.process_index() == 0:
      evaluator.add(host['image_id'], detections['boxes'], detections['scores'],
                    detections['classes'], host['example_mask'])
      if kp_evaluator is not None:
        kp_evaluator.add(host['image_id'], detections['keypoints'], detections['scores'],
                         detections['classes'], host['example_mask'])
  logging.info('Predicted %d eval batches in %.1f s.', num_batches, time.time() - start)
  if jax.process_index() != 0:
    return None
  metrics = evaluator.compute()
  if kp_evaluator is not None:
    metrics.update({KEYPOINT_PREFIX + k: v for k, v in kp_evaluator.compute().items()})
  return metrics


def write_metrics(workdir, step: int, metrics: dict[str, float], prefix: str = '') -> None:
  """Writes DIR/eval_metrics.json (latest) and appends to DIR/eval_metrics_history.jsonl."""
  record = {'step': int(step), **{prefix + k: v for k, v in metrics.items()}}
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'eval_metrics.json').write_text(json.dumps(record, indent=2) + '\n')
  with (workdir / 'eval_metrics_history.jsonl').open('a') as f:
    f.write(json.dumps(record) + '\n')
