"""Keypoint decoding on hand-made head outputs: where the min_distance snap must and must not
happen (docs/odapi_reference.md, 7.2)."""

import functools
import math

import jax
import numpy as np

from centernet_jax import decoder

H = W = 32  # output pixels of a 128 input
J = 4


def _sig(x):
  return 1.0 / (1.0 + math.exp(-x))


def _heads():
  center = np.full((1, H, W, 2), -10.0, np.float32)
  scale = np.zeros((1, H, W, 2), np.float32)
  offset = np.zeros((1, H, W, 2), np.float32)
  heat = np.full((1, H, W, J), -10.0, np.float32)
  kp_off = np.zeros((1, H, W, 2 * J), np.float32)
  reg = np.zeros((1, H, W, 2 * J), np.float32)
  # Person (class 0) at (16, 16), box 20 x 10 -> y 6..26, x 11..21; x1.2 about the center:
  # y 4..28, x 10..22; search radius 0.3 * 24 = 7.2.
  center[0, 16, 16, 0] = 5.0
  scale[0, 16, 16] = [20.0, 10.0]
  reg[0, 16, 16] = [-4, 0, 4, 0, 0, 2, 0, 5]  # regressed (12,16) (20,16) (16,18) (16,21)
  # Joint 0: a candidate at (13, 17) + offset (0.5, 0.5) = (13.5, 17.5), 2.1 away: snapped.
  heat[0, 13, 17, 0] = 2.0
  kp_off[0, 13, 17, 0:2] = [0.5, 0.5]
  # Joint 1: a strong candidate inside the box but 8.06 away (> 7.2): not snapped.
  heat[0, 27, 20, 1] = 3.0
  # Joint 2: a candidate 1 away but scoring sigmoid(-3) = 0.047 < 0.1: not snapped.
  heat[0, 17, 18, 2] = -3.0
  # Joint 3: the nearest candidate (16, 23) is outside the scaled box (x > 22): not snapped,
  # although a farther candidate (16, 17) is inside (min_distance picks the nearest first).
  heat[0, 16, 23, 3] = 1.0
  heat[0, 16, 17, 3] = 1.5
  # Candidates of other joint types near joint 1's regressed position are never used.
  heat[0, 20, 16, 0] = 4.0
  # A class-1 detection at (5, 28): no joints.
  center[0, 5, 28, 1] = 4.0
  scale[0, 5, 28] = [4.0, 4.0]
  reg[0, 5, 28] = 1.0
  return {'object_center': center, 'box/scale': scale, 'box/offset': offset,
          'human_pose/keypoint/heatmap': heat, 'human_pose/keypoint/offset': kp_off,
          'human_pose/keypoint/regression': reg}


def _decode(heads, original=(128, 128), k=5):
  params = decoder.KeypointDecodeParams(task_name='human_pose', class_channel=0)
  fn = jax.jit(functools.partial(decoder.decode_detections, input_size=128, max_detections=k,
                                 keypoint_params=params))
  out = fn(heads, true_size=np.array([[128, 128]]), original_size=np.array([original]))
  return jax.tree.map(np.asarray, out)


def test_snap_rules():
  out = _decode(_heads())
  assert out['keypoints'].shape == (1, 5, J, 2) and out['keypoint_scores'].shape == (1, 5, J)
  assert out['classes'][0, 0] == 0 and out['classes'][0, 1] == 1
  kps = out['keypoints'][0, 0] / 4.0  # input pixels -> output pixels (stride 4)
  scores = out['keypoint_scores'][0, 0]
  np.testing.assert_allclose(kps[0], [13.5, 17.5], atol=1e-5)  # snapped
  np.testing.assert_allclose(scores[0], _sig(2.0), rtol=1e-5)
  np.testing.assert_allclose(kps[1], [20.0, 16.0], atol=1e-5)  # too far: regressed
  np.testing.assert_allclose(kps[2], [16.0, 18.0], atol=1e-5)  # weak candidate: regressed
  np.testing.assert_allclose(kps[3], [16.0, 21.0], atol=1e-5)  # nearest outside: regressed
  np.testing.assert_allclose(scores[1:], 0.1, rtol=1e-6)
  # Detections of other classes get zeros (background peaks of class 0, scoring
  # sigmoid(-10) > 0, are detections too and get joints, as in the OD API).
  other = out['classes'][0] != 0
  assert other.sum() >= 1
  assert np.all(out['keypoints'][0][other] == 0.0)
  assert np.all(out['keypoint_scores'][0][other] == 0.0)
  assert np.all(out['keypoint_scores'][0][~other] > 0.0)


def test_radius_edge_and_original_pixels():
  heads = _heads()
  # Move joint 1's candidate to 7.0 away (< 7.2): now it snaps.
  heads['human_pose/keypoint/heatmap'][0, 27, 20, 1] = -10.0
  heads['human_pose/keypoint/heatmap'][0, 27, 16, 1] = 3.0
  out = _decode(heads, original=(256, 256))
  kps = out['keypoints'][0, 0] / 8.0  # x4 stride, x2 original / true size
  np.testing.assert_allclose(kps[1], [27.0, 16.0], atol=1e-5)
  np.testing.assert_allclose(out['keypoint_scores'][0, 0, 1], _sig(3.0), rtol=1e-5)
  np.testing.assert_allclose(kps[0], [13.5, 17.5], atol=1e-5)
  # Boxes are unchanged by the keypoint path.
  np.testing.assert_allclose(out['boxes'][0, 0], np.array([6, 11, 26, 21]) * 8.0, atol=1e-4)


def test_box_only_outputs_unchanged():
  heads = _heads()
  with_kps = _decode(heads)
  box_only = jax.tree.map(np.asarray, decoder.decode_detections(
      {k: heads[k] for k in ('object_center', 'box/scale', 'box/offset')},
      true_size=np.array([[128, 128]]), original_size=np.array([[128, 128]]), input_size=128,
      max_detections=5))
  assert set(box_only) == {'boxes', 'scores', 'classes'}
  for key in box_only:
    np.testing.assert_array_equal(box_only[key], with_kps[key])


def test_candidates_are_peaks_with_their_own_offsets():
  heads = _heads()
  pos, scores = decoder.keypoint_candidates(heads['human_pose/keypoint/heatmap'],
                                            heads['human_pose/keypoint/offset'], 3)
  pos, scores = np.asarray(pos), np.asarray(scores)
  assert pos.shape == (1, J, 3, 2)
  np.testing.assert_allclose(pos[0, 0, 0], [20, 16])  # the strongest joint-0 peak first
  np.testing.assert_allclose(pos[0, 0, 1], [13.5, 17.5])
  np.testing.assert_allclose(scores[0, 3, :2], [_sig(1.5), _sig(1.0)], rtol=1e-6)
