"""Keypoints end to end: train -> eval (box + keypoint AP) -> detect (skeletons, joints JSON)."""

import json

from PIL import Image
import pytest

from centernet_jax import detect
from centernet_jax import train

from tests import tiny


@pytest.mark.slow  # training, evaluation and detection processes
def test_keypoint_train_eval_detect(tmp_path):
  config = tiny.tiny_keypoint_config(tmp_path / 'data')
  config.num_train_steps = 2
  config.checkpoint_every_steps = 2
  workdir = tmp_path / 'run'
  metrics = train.train_and_evaluate(config, str(workdir))
  assert 'keypoints/AP' in metrics and 'AP' in metrics
  written = json.loads((workdir / 'eval_metrics.json').read_text())
  assert {f'keypoints/{k}' for k in ('AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75',
                                     'ARm', 'ARl')} <= set(written)
  label_map = json.loads((workdir / 'label_map.json').read_text())
  assert label_map['keypoints']['names'][1] == 'left_shoulder'

  images = sorted((tmp_path / 'data' / 'val').glob('*.png'))[:2]
  count = detect.detect_files(str(workdir), [str(p) for p in images],
                              str(tmp_path / 'det'), min_score=0.0, batch_size=2)
  records = json.loads((tmp_path / 'det' / 'detections.json').read_text())['images']
  assert count == 2 and len(records) == 2
  dets = records[0]['detections']
  with_joints = [d for d in dets if d['category_name'] == 'person']
  assert with_joints and all(len(d['keypoints']) == 9 for d in with_joints)
  assert all('keypoints' not in d for d in dets if d['category_name'] != 'person')
  assert with_joints[0]['keypoints'][0]['name'] == 'head'
  assert Image.open(records[0]['picture']).mode == 'RGB'
