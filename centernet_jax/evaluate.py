"""COCO box evaluation: a jitted predict step over the sharded eval batch, pycocotools on host.

Every process runs the same number of eval batches (padded with `example_mask` 0); detections
are gathered to every process and COCOeval runs on process 0 only.

With a keypoint task, COCO keypoint AP (OKS, pycocotools `iouType='keypoints'`, its default
20 detections per image) runs next to box AP, with the task's per-joint `oks_sigmas` (COCO's
17 for COCO, 0.05 for unknown joint names; keypoint_spec.py), on the keypoint category's
detections; its 10 statistics are reported as `keypoints/AP`, ... (`KEYPOINT_STAT_NAMES`).
"""

import collections
import contextlib
import dataclasses
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

from centernet_jax import file_io
from centernet_jax import plots
from centernet_jax import sharding
# The jitted network + decoder lives in predict.py; evaluation and every other caller share it.
from centernet_jax.predict import (  # noqa: F401
    PREDICT_KEYS, keypoint_decode_params, make_predict_fn, tta_params)

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
    self.per_class: PerClassResults | None = None

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
    """Runs COCOeval (bbox, 100 detections per image) on the images added so far.

    Returns the 12 summary stats; the per-class results of the same COCOeval are left in
    `self.per_class` (None when there were no detections at all).
    """
    ground_truth = load_coco_ground_truth(self.annotation_file)
    coco_eval = cocoeval(ground_truth, self._results, self._image_ids, self.annotation_file,
                         'bbox')
    self.per_class = None if coco_eval is None else per_class_results(coco_eval)
    if coco_eval is None:
      return {name: 0.0 for name in STAT_NAMES}
    # -1 means "no ground truth of that size"; it is reported as such rather than as a score.
    return {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats)}


def cocoeval(ground_truth: COCO, results: list[dict[str, Any]], image_ids: set[int],
             annotation_file: str, iou_type: str,
             configure: Callable[[Any], None] | None = None) -> COCOeval | None:
  """COCOeval (`iou_type` 'bbox' or 'keypoints') of `results` on `image_ids`, evaluated,
  accumulated and summarized; None when there are no results (nothing to accumulate).

  Raises when no image was evaluated or a prediction names an image id that
  `annotation_file` does not have. `configure(params)` adjusts the parameters.
  """
  if not image_ids:
    raise ValueError('No images were evaluated.')
  unknown = image_ids - set(ground_truth.getImgIds())
  if unknown:
    raise ValueError(f'{annotation_file}: predictions for image ids not in the file, '
                     f'e.g. {sorted(unknown)[:5]}.')
  if not results:
    return None
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
  return coco_eval


def run_cocoeval(ground_truth: COCO, results: list[dict[str, Any]], image_ids: set[int],
                 annotation_file: str, iou_type: str, stat_names: Sequence[str],
                 configure: Callable[[Any], None] | None = None) -> dict[str, float]:
  """`cocoeval(...)`'s 12 / 10 summary stats under `stat_names` (all 0 without results)."""
  coco_eval = cocoeval(ground_truth, results, image_ids, annotation_file, iou_type, configure)
  if coco_eval is None:
    return {name: 0.0 for name in stat_names}
  return {name: float(v) for name, v in zip(stat_names, coco_eval.stats)}


PER_CLASS_PREFIX = 'per_class/'
PER_JOINT_PREFIX = KEYPOINT_PREFIX + 'per_joint/OKS/'


def is_per_class_key(key: str) -> bool:
  """True for the per-class and per-joint entries of the metrics dict."""
  return key.startswith(PER_CLASS_PREFIX) or key.startswith(PER_JOINT_PREFIX)


@dataclasses.dataclass
class PerClassResults:
  """Per-category results read from one accumulated COCOeval (area 'all', its largest
  maxDets, i.e. the setting of its AP stat).

  Attributes:
    names: [K] category names, in `category_ids` order (COCOeval's `params.catIds`).
    category_ids: [K] COCO category ids.
    num_ground_truth: [K] non-ignored (non-crowd) ground-truth instances on the evaluated
      images.
    ap: [K] AP at IoU .50:.95 (NaN for a category without ground truth: COCOeval's -1
      entries, which its own mean leaves out too).
    ap50: [K] AP at IoU .50 (NaN likewise).
    precision: [T, R, K] COCOeval's interpolated precision (-1: no ground truth).
    recall_thresholds: [R] (101 points 0..1); iou_thresholds: [T].
    overall_ap: COCOeval's stats[0], which is the mean of `ap` over the non-NaN entries.
  """
  names: list[str]
  category_ids: list[int]
  num_ground_truth: np.ndarray
  ap: np.ndarray
  ap50: np.ndarray
  precision: np.ndarray
  recall_thresholds: np.ndarray
  iou_thresholds: np.ndarray
  overall_ap: float


def _mean_valid(values: np.ndarray) -> float:
  valid = values[values > -1]
  return float(np.mean(valid)) if valid.size else float('nan')


def per_class_results(coco_eval: COCOeval) -> PerClassResults:
  """Per-category AP / AP50 from `coco_eval.eval['precision']` (accumulate() must have run).

  Uses COCOeval's own array and its own averaging (mean over the entries > -1), so the mean
  over categories with ground truth equals its AP stat.
  """
  params = coco_eval.params
  area = params.areaRngLbl.index('all')
  precision = np.asarray(coco_eval.eval['precision'])[:, :, :, area, -1]  # [T, R, K]
  iou50 = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
  ap = np.array([_mean_valid(precision[:, :, k]) for k in range(precision.shape[2])])
  ap50 = np.array([_mean_valid(precision[iou50, :, k]) for k in range(precision.shape[2])])
  cat_ids = [int(c) for c in params.catIds]
  counts = np.zeros(len(cat_ids), np.int64)
  image_ids = set(params.imgIds)
  for k, cid in enumerate(cat_ids):
    for ann in coco_eval.cocoGt.loadAnns(coco_eval.cocoGt.getAnnIds(catIds=[cid])):
      if ann['image_id'] in image_ids and not ann.get('iscrowd', 0):
        counts[k] += 1
  cats = coco_eval.cocoGt.cats
  names = [str(cats[c].get('name', c)) if c in cats else str(c) for c in cat_ids]
  return PerClassResults(names=names, category_ids=cat_ids, num_ground_truth=counts, ap=ap,
                         ap50=ap50, precision=precision,
                         recall_thresholds=np.asarray(params.recThrs),
                         iou_thresholds=np.asarray(params.iouThrs),
                         overall_ap=float(coco_eval.stats[0]))


def _unique_names(result: PerClassResults) -> list[str]:
  """Category names, with the id appended where two categories share a name."""
  seen = collections.Counter(result.names)
  return [n if seen[n] == 1 else f'{n}#{cid}' for n, cid in zip(result.names,
                                                                 result.category_ids)]


def per_class_metrics(result: PerClassResults) -> dict[str, float]:
  """{'per_class/AP/<name>': AP, 'per_class/AP50/<name>': AP50} for the categories with
  ground truth (those without have no AP: COCOeval leaves them out of its mean)."""
  out = {}
  for name, ap, ap50 in zip(_unique_names(result), result.ap, result.ap50):
    if np.isfinite(ap):
      out[f'{PER_CLASS_PREFIX}AP/{name}'] = float(ap)
      out[f'{PER_CLASS_PREFIX}AP50/{name}'] = float(ap50)
  return out


def per_class_markdown(result: PerClassResults, step: int,
                       per_joint: dict[str, tuple[float, int]] | None = None) -> str:
  """The per-class table (AP descending, categories without ground truth last) as Markdown,
  with the per-joint OKS table of a keypoint task after it."""
  names = _unique_names(result)
  order = sorted(range(len(names)), key=lambda k: (not np.isfinite(result.ap[k]),
                                                   -np.nan_to_num(result.ap[k]), k))
  lines = [f'# Per-class box AP at step {step}', '',
           '| class | category id | ground truth | AP | AP50 |', '|---|---|---|---|---|']
  for k in order:
    if np.isfinite(result.ap[k]):
      cells = f'{result.ap[k]:.4f} | {result.ap50[k]:.4f}'
    else:
      cells = 'no ground truth | -'
    lines.append(f'| {names[k].replace("|", "/")} | {result.category_ids[k]} | '
                 f'{result.num_ground_truth[k]} | {cells} |')
  valid = result.ap[np.isfinite(result.ap)]
  mean = float(np.mean(valid)) if valid.size else float('nan')
  lines += ['', f'Mean over the {valid.size} classes with ground truth: {mean:.4f} '
            f"(COCOeval's AP: {result.overall_ap:.4f}). AP is over IoU .50:.95, area all, "
            '100 detections per image.']
  if per_joint:
    lines += ['', '# Per-joint OKS', '',
              'Mean object keypoint similarity of each labelled joint over the detections '
              'matched to a ground-truth instance at OKS >= 0.5 (COCOeval has no per-joint AP).',
              '', '| joint | matched labelled joints | mean OKS |', '|---|---|---|']
    for name, (value, count) in per_joint.items():
      lines.append(f'| {name} | {count} | '
                   f'{"-" if not np.isfinite(value) else f"{value:.4f}"} |')
  return '\n'.join(lines) + '\n'


def per_joint_oks(coco_eval: COCOeval, joint_names: Sequence[str],
                  oks_threshold: float = 0.5) -> dict[str, tuple[float, int]]:
  """{joint name: (mean OKS of that joint, count)} over COCOeval's own matches.

  A keypoint COCOeval (evaluate() run) matches detections to ground truth by OKS; at the
  threshold `oks_threshold`, area 'all', every matched, non-ignored pair contributes, for each
  joint labelled in the ground truth, COCO's per-joint similarity
  exp(-d^2 / (2 * area * (2 * sigma_j)^2)), d in pixels, area the ground truth's. NaN, 0 for a
  joint never matched.
  """
  params = coco_eval.params
  t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - oks_threshold)))
  variances = (np.asarray(params.kpt_oks_sigmas, np.float64) * 2) ** 2
  sums = np.zeros(len(joint_names))
  counts = np.zeros(len(joint_names), np.int64)
  for e in coco_eval.evalImgs:
    if e is None or list(e['aRng']) != list(params.areaRng[0]):
      continue
    for d, gt_id in enumerate(e['dtMatches'][t]):
      if gt_id <= 0 or e['dtIgnore'][t][d]:
        continue
      gt = coco_eval.cocoGt.anns[int(gt_id)]
      dt = coco_eval.cocoDt.anns[int(e['dtIds'][d])]
      g = np.asarray(gt['keypoints'], np.float64).reshape(-1, 3)
      p = np.asarray(dt['keypoints'], np.float64).reshape(-1, 3)
      sq = (p[:, 0] - g[:, 0]) ** 2 + (p[:, 1] - g[:, 1]) ** 2
      similarity = np.exp(-sq / variances / (gt['area'] + np.spacing(1)) / 2)
      labelled = g[:, 2] > 0
      sums[labelled] += similarity[labelled]
      counts[labelled] += 1
  return {name: (float(sums[j] / counts[j]) if counts[j] else float('nan'), int(counts[j]))
          for j, name in enumerate(joint_names)}


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
    # {joint name: (mean OKS of the joint, number of matched labelled joints)} after compute().
    self.per_joint: dict[str, tuple[float, int]] | None = None

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

    coco_eval = cocoeval(ground_truth, self._results, self._image_ids, self.annotation_file,
                         'keypoints', oks_settings)
    if coco_eval is None:
      self.per_joint = None
      return {name: 0.0 for name in KEYPOINT_STAT_NAMES}
    self.per_joint = per_joint_oks(coco_eval, self.spec.names)
    return {name: float(v) for name, v in zip(KEYPOINT_STAT_NAMES, coco_eval.stats)}




def run_evaluation(*, variables, predict_fn, eval_iterator, num_batches: int, mesh,
                   annotation_file: str, channel_to_category_id: Sequence[int],
                   keypoint_spec=None, keypoint_annotation_file: str | None = None,
                   output_dir=None, step: int = 0) -> dict[str, float] | None:
  """Predicts on every eval batch and returns the COCO metrics (None on processes > 0).

  With a `keypoint_spec` (and the predict function decoding joints) the keypoint metrics
  against `keypoint_annotation_file` (default: `annotation_file`) are added under
  `KEYPOINT_PREFIX`. Per-class AP / AP50 are added under `PER_CLASS_PREFIX` and per-joint OKS
  under `PER_JOINT_PREFIX`; with an `output_dir` the per-class table (`eval_per_class.md`)
  and the precision-recall curves (`pr_curves.png`) of `step` are written there.
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
  per_joint = kp_evaluator.per_joint if kp_evaluator is not None else None
  if evaluator.per_class is not None:
    metrics.update(per_class_metrics(evaluator.per_class))
  if per_joint:
    metrics.update({PER_JOINT_PREFIX + name: value for name, (value, count) in per_joint.items()
                    if count})
  if output_dir is not None and evaluator.per_class is not None:
    write_per_class(output_dir, step, evaluator.per_class, per_joint)
  return metrics


def write_per_class(output_dir, step: int, result: PerClassResults,
                    per_joint: dict[str, tuple[float, int]] | None = None) -> None:
  """DIR/eval_per_class.md and DIR/pr_curves.png (a plotting failure is logged, not raised:
  the metrics matter more than the picture)."""
  output_dir = epath.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  (output_dir / 'eval_per_class.md').write_text(per_class_markdown(result, step, per_joint))
  try:
    (output_dir / 'pr_curves.png').write_bytes(plots.pr_curves_png(result, step))
  except Exception:  # pylint: disable=broad-except
    logging.exception('Could not draw the precision-recall curves; evaluation goes on.')


def write_metrics(workdir, step: int, metrics: dict[str, float], prefix: str = '') -> None:
  """Writes DIR/eval_metrics.json (latest) and appends to DIR/eval_metrics_history.jsonl."""
  record = {'step': int(step), **{prefix + k: v for k, v in metrics.items()}}
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'eval_metrics.json').write_text(json.dumps(record, indent=2) + '\n')
  with (workdir / 'eval_metrics_history.jsonl').open('a') as f:
    f.write(json.dumps(record) + '\n')
