"""COCO box evaluation."""

import json

import numpy as np
import pytest

from centernet_jax import evaluate


def _write_gt(path):
  images = [{'id': 11, 'file_name': 'a.png', 'height': 100, 'width': 120},
            {'id': 12, 'file_name': 'b.png', 'height': 80, 'width': 60},
            {'id': 13, 'file_name': 'c.png', 'height': 50, 'width': 50}]
  anns = [
      {'id': 1, 'image_id': 11, 'category_id': 3, 'bbox': [10, 20, 30, 40], 'area': 1200, 'iscrowd': 0},
      {'id': 2, 'image_id': 11, 'category_id': 7, 'bbox': [50.5, 5, 60, 70], 'area': 4200, 'iscrowd': 0},
      {'id': 3, 'image_id': 12, 'category_id': 3, 'bbox': [1, 2, 5, 6], 'area': 30, 'iscrowd': 0},
      {'id': 4, 'image_id': 12, 'category_id': 7, 'bbox': [0, 0, 60, 80], 'area': 4800, 'iscrowd': 1},
  ]
  cats = [{'id': 3, 'name': 'three'}, {'id': 7, 'name': 'seven'}]
  path.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': cats}))
  return anns


def test_ap_is_one_when_predictions_equal_ground_truth(tmp_path):
  gt_file = tmp_path / 'gt.json'
  anns = _write_gt(gt_file)
  channel_to_id = [3, 7]
  # Decoded form: y-first pixel boxes, contiguous channels, a fixed K with zero-score padding.
  k = 4
  image_ids = np.array([11, 12, 13, -1])
  boxes = np.zeros((4, k, 4), np.float32)
  scores = np.zeros((4, k), np.float32)
  classes = np.zeros((4, k), np.int32)
  slot = {11: 0, 12: 0, 13: 0}
  for a in anns:
    if a['iscrowd']:
      continue
    row = {11: 0, 12: 1}[a['image_id']]
    x, y, w, h = a['bbox']
    boxes[row, slot[a['image_id']]] = [y, x, y + h, x + w]
    scores[row, slot[a['image_id']]] = 0.9
    classes[row, slot[a['image_id']]] = channel_to_id.index(a['category_id'])
    slot[a['image_id']] += 1
  evaluator = evaluate.CocoDetectionEvaluator(str(gt_file), channel_to_id)
  evaluator.add(image_ids, boxes, scores, classes, example_mask=np.array([1, 1, 1, 0]))
  metrics = evaluator.compute()
  assert set(metrics) == set(evaluate.STAT_NAMES)
  assert metrics['AP'] == pytest.approx(1.0)
  assert metrics['AP50'] == pytest.approx(1.0)
  assert metrics['AR100'] == pytest.approx(1.0)


def test_shifted_predictions_score_lower(tmp_path):
  gt_file = tmp_path / 'gt.json'
  _write_gt(gt_file)
  evaluator = evaluate.CocoDetectionEvaluator(str(gt_file), [3, 7])
  # The class-3 box of image 11 predicted 10 px to the right: IoU 0.5, so AP50 only.
  boxes = np.array([[[20, 20, 60, 50]]], np.float32)
  evaluator.add(np.array([11]), boxes, np.array([[0.8]]), np.array([[0]]))
  metrics = evaluator.compute()
  assert 0.0 < metrics['AP'] < 1.0


def test_coco_json_conversion_is_x_first_width_height():
  out = evaluate.boxes_to_coco_json(np.array([5]), np.array([[[10., 20., 40., 70.]]]),
                                    np.array([[0.5]]), np.array([[1]]), [4, 9])
  assert out == [{'image_id': 5, 'category_id': 9, 'bbox': [20.0, 10.0, 50.0, 30.0],
                  'score': 0.5}]


def test_unknown_image_ids_are_an_error(tmp_path):
  gt_file = tmp_path / 'gt.json'
  _write_gt(gt_file)
  evaluator = evaluate.CocoDetectionEvaluator(str(gt_file), [3, 7])
  evaluator.add(np.array([999]), np.zeros((1, 1, 4)), np.zeros((1, 1)), np.zeros((1, 1), int))
  with pytest.raises(ValueError, match='999'):
    evaluator.compute()


def test_write_metrics(tmp_path):
  evaluate.write_metrics(tmp_path, 7, {'AP': 0.5})
  evaluate.write_metrics(tmp_path, 9, {'AP': 0.6})
  assert json.loads((tmp_path / 'eval_metrics.json').read_text()) == {'step': 9, 'AP': 0.6}
  assert len((tmp_path / 'eval_metrics_history.jsonl').read_text().splitlines()) == 2
