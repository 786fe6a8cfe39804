"""Per-class AP, PR curves and per-joint OKS read from COCOeval's own arrays."""

import json

import numpy as np
import pytest

from centernet_jax import evaluate
from centernet_jax import keypoint_spec as kps


def _random_set(path, rng, num_images=12):
  """GT with categories 1, 2, 5 and 9 (9 never annotated); returns the GT annotations."""
  images, anns = [], []
  for i in range(num_images):
    images.append({'id': 100 + i, 'file_name': f'{i}.png', 'height': 96, 'width': 128})
    for _ in range(rng.integers(1, 5)):
      w, h = rng.uniform(6, 50, 2)
      x, y = rng.uniform(0, 128 - w), rng.uniform(0, 96 - h)
      anns.append({'id': len(anns) + 1, 'image_id': 100 + i, 'category_id': int(
          rng.choice([1, 2, 5])), 'bbox': [x, y, w, h], 'area': w * h, 'iscrowd': 0})
  anns.append({'id': len(anns) + 1, 'image_id': 100, 'category_id': 2, 'bbox': [0, 0, 20, 20],
               'area': 400, 'iscrowd': 1})
  cats = [{'id': c, 'name': n} for c, n in ((1, 'one'), (2, 'two'), (5, 'five'), (9, 'nine'))]
  path.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': cats}))
  return images, anns


def _noisy_detections(images, anns, rng, channel_to_id, *, k=8, perfect_category=None):
  """Decoded-form detections: jittered GT boxes, some class swaps, some false positives."""
  index = {im['id']: n for n, im in enumerate(images)}
  boxes = np.zeros((len(images), k, 4), np.float32)
  scores = np.zeros((len(images), k), np.float32)
  classes = np.zeros((len(images), k), np.int32)
  slot = np.zeros(len(images), int)
  for a in anns:
    if a['iscrowd']:
      continue
    n = index[a['image_id']]
    x, y, w, h = a['bbox']
    perfect = a['category_id'] == perfect_category
    jitter = 0.0 if perfect else rng.normal(0, 3, 4)
    boxes[n, slot[n]] = np.array([y, x, y + h, x + w]) + jitter
    scores[n, slot[n]] = 0.9 if perfect else rng.uniform(0.2, 0.9)
    cid = a['category_id'] if perfect or rng.uniform() > 0.2 else int(rng.choice([1, 2, 5]))
    classes[n, slot[n]] = channel_to_id.index(cid)
    slot[n] += 1
  for n in range(len(images)):
    for j in range(slot[n], k):  # false positives, low scores
      y, x = rng.uniform(0, 60, 2)
      boxes[n, j] = [y, x, y + 20, x + 20]
      scores[n, j] = rng.uniform(0.01, 0.3)
      classes[n, j] = rng.integers(0, 3)
  return np.array([im['id'] for im in images]), boxes, scores, classes


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_mean_of_per_class_ap_is_cocoeval_ap(tmp_path, seed):
  rng = np.random.default_rng(seed)
  gt = tmp_path / 'gt.json'
  images, anns = _random_set(gt, rng)
  channel_to_id = [1, 2, 5, 9]
  evaluator = evaluate.CocoDetectionEvaluator(str(gt), channel_to_id)
  evaluator.add(*_noisy_detections(images, anns, rng, channel_to_id))
  stats = evaluator.compute()
  result = evaluator.per_class
  assert result.names == ['one', 'two', 'five', 'nine']
  # 'nine' has no ground truth: no AP (COCOeval's -1), left out of the mean as COCOeval does.
  assert np.isnan(result.ap[3]) and np.isnan(result.ap50[3])
  assert result.num_ground_truth[3] == 0
  assert result.num_ground_truth.sum() == sum(1 for a in anns if not a['iscrowd'])
  valid = result.ap[np.isfinite(result.ap)]
  assert len(valid) == 3
  assert 0.05 < stats['AP'] < 0.95  # a non-trivial case
  assert abs(float(np.mean(valid)) - stats['AP']) < 1e-9
  assert abs(float(np.mean(result.ap50[:3])) - stats['AP50']) < 1e-9
  metrics = evaluate.per_class_metrics(result)
  assert set(metrics) == {f'per_class/{m}/{n}' for m in ('AP', 'AP50')
                          for n in ('one', 'two', 'five')}


def test_per_class_ap_tells_classes_apart(tmp_path):
  rng = np.random.default_rng(3)
  gt = tmp_path / 'gt.json'
  images, anns = _random_set(gt, rng)
  channel_to_id = [1, 2, 5, 9]
  image_ids, boxes, scores, classes = _noisy_detections(images, anns, rng, channel_to_id,
                                                        perfect_category=5)
  # Class 'two' is never predicted.
  scores = np.where(classes == 1, 0.0, scores)
  classes = np.where(classes == 1, 0, classes)
  evaluator = evaluate.CocoDetectionEvaluator(str(gt), channel_to_id)
  evaluator.add(image_ids, boxes, scores, classes)
  stats = evaluator.compute()
  ap = dict(zip(evaluator.per_class.names, evaluator.per_class.ap))
  assert ap['five'] == pytest.approx(1.0)
  assert ap['two'] == 0.0
  assert 0.0 < ap['one'] < 1.0
  assert abs(np.mean([ap['one'], ap['two'], ap['five']]) - stats['AP']) < 1e-9


def test_run_evaluation_outputs_table_and_curves(tmp_path):
  rng = np.random.default_rng(4)
  gt = tmp_path / 'gt.json'
  images, anns = _random_set(gt, rng)
  channel_to_id = [1, 2, 5, 9]
  evaluator = evaluate.CocoDetectionEvaluator(str(gt), channel_to_id)
  evaluator.add(*_noisy_detections(images, anns, rng, channel_to_id))
  stats = evaluator.compute()
  evaluate.write_per_class(tmp_path / 'out', 7, evaluator.per_class)
  table = (tmp_path / 'out' / 'eval_per_class.md').read_text()
  assert 'step 7' in table and '| nine | 9 | 0 | no ground truth' in table
  assert f"(COCOeval's AP: {stats['AP']:.4f})" in table
  assert f'Mean over the 3 classes with ground truth: {stats["AP"]:.4f}' in table
  png = (tmp_path / 'out' / 'pr_curves.png').read_bytes()
  assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10_000


def _keypoint_gt(path):
  names = ['head', 'left_hand', 'right_hand']
  cats = [{'id': 1, 'name': 'person', 'keypoints': names, 'skeleton': [[1, 2], [1, 3]]}]
  images = [{'id': i, 'file_name': f'{i}.png', 'height': 100, 'width': 100} for i in (1, 2)]
  anns = [
      {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 40, 60], 'area': 2400,
       'iscrowd': 0, 'keypoints': [30, 15, 2, 15, 40, 2, 45, 40, 1], 'num_keypoints': 3},
      {'id': 2, 'image_id': 2, 'category_id': 1, 'bbox': [50, 20, 40, 60], 'area': 2400,
       'iscrowd': 0, 'keypoints': [70, 25, 2, 55, 50, 2, 0, 0, 0], 'num_keypoints': 2},
  ]
  path.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': cats}))
  return kps.spec_from_category(cats[0], 0, {}), anns


def test_per_joint_oks_from_cocoeval_matches(tmp_path):
  gt = tmp_path / 'kp.json'
  spec, anns = _keypoint_gt(gt)
  evaluator = evaluate.CocoKeypointEvaluator(str(gt), spec)
  keypoints = np.zeros((2, 1, 3, 2), np.float32)
  for n, a in enumerate(anns):
    k = np.asarray(a['keypoints'], np.float32).reshape(3, 3)
    keypoints[n, 0] = k[:, [1, 0]]  # (y, x)
  keypoints[0, 0, 1, 1] += 4.0  # the left hand of image 1 off by 4 pixels
  evaluator.add(np.array([1, 2]), keypoints, np.array([[0.9], [0.8]]), np.zeros((2, 1), int))
  stats = evaluator.compute()
  assert stats['AP50'] == pytest.approx(1.0)
  per_joint = evaluator.per_joint
  assert per_joint['head'] == (pytest.approx(1.0), 2)
  assert per_joint['right_hand'][1] == 1  # unlabelled in image 2
  sigma = spec.oks_sigmas[1]
  expected = (1.0 + np.exp(-16 / (2 * 2400 * (2 * sigma) ** 2))) / 2
  assert per_joint['left_hand'][0] == pytest.approx(expected)
  assert per_joint['left_hand'][0] < 0.999
  table = evaluate.per_class_markdown(_dummy_result(), 3, per_joint)
  assert '| left_hand | 2 |' in table


def _dummy_result():
  return evaluate.PerClassResults(
      names=['a'], category_ids=[1], num_ground_truth=np.array([1]), ap=np.array([0.5]),
      ap50=np.array([0.5]), precision=np.full((10, 101, 1), 0.5), recall_thresholds=
      np.linspace(0, 1, 101), iou_thresholds=np.linspace(0.5, 0.95, 10), overall_ap=0.5)
