"""COCO keypoint AP (OKS) through pycocotools with the task's sigmas."""

import json

import numpy as np
import pytest

from centernet_jax import config_base
from centernet_jax import evaluate
from centernet_jax import keypoint_spec as kps
from centernet_jax.data import synthetic_keypoints


def _set(tmp_path):
  d = config_base.base_config().dataset
  d.synthetic_dir = str(tmp_path / 'kps')
  d.synthetic_num_train = 1
  d.synthetic_num_val = 6
  d.synthetic_image_size = 96
  path = synthetic_keypoints.ensure_keypoint_dataset(d)['val_annotations']
  data = json.load(open(path))
  spec = kps.spec_from_category(data['categories'][0], 0)
  return path, data, spec


def _ground_truth_detections(data, shift=0.0):
  """Per image: keypoints [K, J, 2] (y, x), scores, classes with the figures first."""
  out = {}
  for image in data['images']:
    figs = [a for a in data['annotations']
            if a['image_id'] == image['id'] and a['category_id'] == 1]
    k = np.zeros((5, 9, 2), np.float32)
    for i, a in enumerate(figs):
      joints = np.asarray(a['keypoints'], np.float32).reshape(9, 3)
      k[i] = joints[:, [1, 0]] + shift
    classes = np.ones(5, np.int32)  # channel 1: not the keypoint class
    classes[:len(figs)] = 0
    scores = np.linspace(0.9, 0.5, 5).astype(np.float32)
    out[image['id']] = (k, scores, classes)
  return out


def _evaluate(path, spec, dets):
  ev = evaluate.CocoKeypointEvaluator(path, spec)
  ids = np.array(sorted(dets))
  ev.add(ids, np.stack([dets[i][0] for i in ids]), np.stack([dets[i][1] for i in ids]),
         np.stack([dets[i][2] for i in ids]), example_mask=np.ones(len(ids)))
  return ev.compute()


def test_oks_is_one_on_ground_truth(tmp_path):
  path, data, spec = _set(tmp_path)
  # COCO joint names take COCO's sigmas, the others the default 0.05.
  assert spec.oks_sigmas == (0.05, 0.079, 0.079, 0.05, 0.05, 0.107, 0.107, 0.05, 0.05)
  metrics = _evaluate(path, spec, _ground_truth_detections(data))
  assert set(metrics) == set(evaluate.KEYPOINT_STAT_NAMES)
  assert metrics['AP'] == 1.0 and metrics['AP50'] == 1.0 and metrics['AP75'] == 1.0
  assert metrics['AR'] == 1.0


def test_oks_uses_the_sigmas(tmp_path):
  path, data, spec = _set(tmp_path)
  shifted = _ground_truth_detections(data, shift=1.5)
  tight = _evaluate(path, spec, shifted)['AP']
  loose = _evaluate(path, kps.spec_from_category(data['categories'][0], 0,
                                                 {'oks_sigmas': (0.2,)}), shifted)['AP']
  assert tight < 1.0 and loose > tight


def test_keypoint_results_json():
  res = evaluate.keypoints_to_coco_json(
      np.array([7]), np.array([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]]),
      np.array([[0.9, 0.8]]), np.array([[2, 0]]), channel=2, category_id=11)
  assert res == [{'image_id': 7, 'category_id': 11, 'keypoints': [2.0, 1.0, 1, 4.0, 3.0, 1],
                  'score': 0.9}]


def test_ground_truth_without_keypoints_is_ignored(tmp_path):
  person = {'id': 3, 'name': 'person', 'keypoints': ['a', 'b']}
  gt = {'images': [{'id': 1, 'file_name': 'x.png', 'height': 50, 'width': 50}],
        'annotations': [
            {'id': 1, 'image_id': 1, 'category_id': 3, 'bbox': [0, 0, 20, 20], 'iscrowd': 0,
             'keypoints': [5, 6, 2, 10, 12, 1]},  # no num_keypoints, no area
            {'id': 2, 'image_id': 1, 'category_id': 3, 'bbox': [25, 25, 20, 20],
             'iscrowd': 0, 'area': 400}]}  # a person without keypoints
  gt['categories'] = [person]
  path = tmp_path / 'gt.json'
  path.write_text(json.dumps(gt))
  spec = kps.spec_from_category(person, 0)
  ev = evaluate.CocoKeypointEvaluator(str(path), spec)
  ev.add(np.array([1]), np.array([[[[6.0, 5.0], [12.0, 10.0]]]]), np.array([[0.9]]),
         np.array([[0]]))
  metrics = ev.compute()
  assert metrics['AP'] == pytest.approx(1.0) and metrics['AR'] == pytest.approx(1.0)
