"""Keypoint targets and losses against hand-computed values (docs/odapi_reference.md, 4 and 5)."""

import math

import jax.numpy as jnp
import numpy as np

from centernet_jax import config_base
from centernet_jax import losses
from centernet_jax import targets

_BASE = config_base.base_config()
# The base config's keypoint loss weights and focal exponents (the zoo's).
_LOSS_ARGS = {'keypoint_config': _BASE.keypoints, 'focal_alpha': _BASE.loss.focal_alpha,
              'focal_beta': _BASE.loss.focal_beta}

OUT = 32  # output pixels of a 128 x 128 input


def _batch():
  """Image 0: a person box with 3 joints (one unlabelled), a corner person box, a box of
  another class, and a padding row. Normalized to the 128 canvas (x 32 = output pixels)."""
  boxes = np.zeros((1, 4, 4), np.float32)
  boxes[0, 0] = [0.25, 0.25, 0.75, 0.5]  # output pixels y 8..24, x 8..16: h 16, w 8
  boxes[0, 1] = [0.0, 0.0, 0.1, 0.1]  # corner: center (1.6, 1.6)
  boxes[0, 2] = [0.0, 0.5, 0.25, 1.0]  # class 1: y 0..8, x 16..32
  classes = np.array([[0, 0, 1, 0]], np.int32)
  box_mask = np.array([[1, 1, 1, 0]], np.float32)
  kps = np.zeros((1, 4, 3, 2), np.float32)
  kmask = np.zeros((1, 4, 3), np.float32)
  kps[0, 0, 0] = [0.3, 0.3]  # (9.6, 9.6) output pixels
  kps[0, 0, 1] = [0.5, 0.40625]  # (16, 13) exactly
  kps[0, 0, 2] = [0.6, 0.3]  # unlabelled
  kmask[0, 0] = [1, 1, 0]
  kps[0, 1, 0] = [0.05, 0.05]  # (1.6, 1.6)
  kmask[0, 1] = [1, 0, 0]
  kps[0, 2] = [[0.1, 0.7], [0.1, 0.8], [0.2, 0.9]]  # joints on a non-person box: ignored
  kmask[0, 2] = 1
  return boxes, classes, box_mask, kps, kmask


STD = (0.5, 2.0, 1.0)


def _targets():
  boxes, classes, box_mask, kps, kmask = _batch()
  return {k: np.asarray(v) for k, v in targets.build_keypoint_targets(
      boxes, classes, box_mask, kps, kmask, (OUT, OUT), keypoint_channel=0, std_devs=STD,
      min_overlap=0.7, radius_variant='odapi', peak_radius=3).items()}


def test_disc_has_29_pixels():
  disc = targets.disc_offsets(3)
  assert len(disc) == 29 and (0, 0) in disc and (3, 0) in disc and (2, 2) in disc
  assert (3, 1) not in disc and (2, 3) not in disc
  assert len(targets.disc_offsets(0)) == 1


def test_heatmap_sigma_per_joint():
  t = _targets()
  # Box 0 is 16 x 8 output pixels: the OD API radius is 2.9425 (case 3 of the buggy roots),
  # floor 2 -> box sigma 5/6; joint sigmas are std x 5/6.
  r = float(targets.gaussian_radius(16.0, 8.0))
  assert abs(r - 2.9425) < 1e-3
  box_sigma = 5.0 / 6.0
  heat = t['heatmap'][0]
  assert heat.shape == (OUT, OUT, 3)
  assert heat[9, 9, 0] == 1.0  # floor(9.6, 9.6)
  s0 = STD[0] * box_sigma
  np.testing.assert_allclose(heat[9, 10, 0], math.exp(-1 / (2 * s0 * s0)), rtol=1e-5)
  assert heat[16, 13, 1] == 1.0
  s1 = STD[1] * box_sigma
  np.testing.assert_allclose(heat[16, 15, 1], math.exp(-4 / (2 * s1 * s1)), rtol=1e-5)
  np.testing.assert_allclose(heat[18, 14, 1], math.exp(-5 / (2 * s1 * s1)), rtol=1e-5)
  # The corner box (3.2 x 3.2 px) has its own sigma; its joint 0 peaks at (1, 1).
  assert heat[1, 1, 0] == 1.0
  # Unlabelled joints and the other class's joints draw nothing.
  assert np.all(heat[..., 2] == 0.0)
  assert np.all(heat[:8, 16:, :] < 1e-6)
  assert t['num_keypoints'] == 3.0


def test_blackout_mask():
  t = _targets()
  mask = t['heatmap_mask'][0]
  # Inside the other-class box (y 0..7, x 16..31): every joint type is ignored.
  assert np.all(mask[0:8, 16:32, :] == 0.0)
  # Inside person box 0 (y 8..23, x 8..15): only joint 2 (unlabelled there) is ignored.
  assert np.all(mask[8:24, 8:16, 2] == 0.0)
  assert np.all(mask[8:24, 8:16, :2] == 1.0)
  # Corner person box (y, x in [0, 3.2)): joints 1 and 2 are unlabelled there.
  assert np.all(mask[0:4, 0:4, 1:] == 0.0) and np.all(mask[0:4, 0:4, 0] == 1.0)
  # Box edges: y < ymax, x < xmax; padding rows black out nothing.
  assert mask[24, 10, 2] == 1.0 and mask[10, 16, 2] == 1.0
  expected_zeros = 8 * 16 * 3 + 16 * 8 + 4 * 4 * 2
  assert int((mask == 0).sum()) == expected_zeros


def test_offset_targets_on_the_disc():
  t = _targets()
  w = t['offset_weights'][0]  # [M, J, D]
  assert w.shape == (4, 3, 29)
  assert w[0, 0].sum() == 29 and w[0, 1].sum() == 29 and w[0, 2].sum() == 0
  # (1.6, 1.6) floors to (1, 1): 18 of its 29 disc pixels are inside the grid.
  assert w[1, 0].sum() == 18
  assert w[2].sum() == 0 and w[3].sum() == 0  # other class, padding
  disc = targets.disc_offsets(3)
  center = disc.index((0, 0))
  np.testing.assert_array_equal(t['offset_indices'][0, 0, 0, center], [9, 9])
  np.testing.assert_allclose(t['offset'][0, 0, 0, center], [0.6, 0.6], atol=1e-5)
  far = disc.index((-3, 0))
  np.testing.assert_array_equal(t['offset_indices'][0, 0, 0, far], [6, 9])
  np.testing.assert_allclose(t['offset'][0, 0, 0, far], [3.6, 0.6], atol=1e-5)
  np.testing.assert_allclose(t['offset'][0, 0, 1, center], [0.0, 0.0], atol=1e-6)


def test_regression_targets_from_the_box_center():
  t = _targets()
  w = t['regression_weights'][0]  # [M, J, D]
  assert w[0, 0].sum() == 29 and w[0, 1].sum() == 29 and w[0, 2].sum() == 0
  assert w[1, 0].sum() == 18 and w[1, 1:].sum() == 0
  disc = targets.disc_offsets(3)
  center = disc.index((0, 0))
  # Box 0 center (16, 12): joint 0 (9.6, 9.6) -> (-6.4, -2.4); joint 1 (16, 13) -> (0, 1).
  np.testing.assert_array_equal(t['regression_indices'][0, 0, center], [16, 12])
  np.testing.assert_allclose(t['regression'][0, 0, 0, center], [-6.4, -2.4], atol=1e-5)
  np.testing.assert_allclose(t['regression'][0, 0, 1, center], [0.0, 1.0], atol=1e-5)
  right = disc.index((0, 2))
  np.testing.assert_allclose(t['regression'][0, 0, 1, right], [0.0, -1.0], atol=1e-5)


def test_keypoint_loss_normalization():
  t = _targets()
  j = 3
  rng = np.random.default_rng(0)
  out = {'human_pose/keypoint/heatmap': rng.normal(size=(1, OUT, OUT, j)).astype(np.float32),
         'human_pose/keypoint/offset': rng.normal(size=(1, OUT, OUT, 2 * j)).astype(np.float32),
         'human_pose/keypoint/regression': rng.normal(size=(1, OUT, OUT, 2 * j)).astype(
             np.float32)}
  valid = np.ones((1, OUT, OUT), np.float32)
  valid[:, 20:, :] = 0.0
  total, comps = losses.keypoint_loss([out, out], t, task_name='human_pose', valid_mask=valid, **_LOSS_ARGS)
  # Heatmap: the focal sum under valid x blackout, / 3 labelled joints (2 outputs averaged).
  focal = float(losses.penalty_reduced_focal_loss(
      out['human_pose/keypoint/heatmap'], t['heatmap'],
      valid_mask=t['heatmap_mask'] * valid[..., None]))
  np.testing.assert_allclose(comps['human_pose/keypoint/heatmap'], focal / 3, rtol=1e-5)

  def l1(pred, idx, target, weights, per_joint_idx):
    total = 0.0
    for m in range(4):
      for jj in range(j):
        for d in range(29):
          if weights[0, m, jj, d] == 0:
            continue
          y, x = idx[0, m, jj, d] if per_joint_idx else idx[0, m, d]
          total += np.abs(pred[0, y, x, 2 * jj:2 * jj + 2] - target[0, m, jj, d]).sum()
    return total / max(weights.sum(), 1.0)

  off = l1(out['human_pose/keypoint/offset'], t['offset_indices'], t['offset'],
           t['offset_weights'], True)
  reg = l1(out['human_pose/keypoint/regression'], t['regression_indices'], t['regression'],
           t['regression_weights'], False)
  np.testing.assert_allclose(comps['human_pose/keypoint/offset'], off, rtol=1e-5)
  np.testing.assert_allclose(comps['human_pose/keypoint/regression'], 0.1 * reg, rtol=1e-5)
  np.testing.assert_allclose(total, sum(float(v) for v in comps.values()), rtol=1e-6)
  # A shared (2-channel) offset head reads the same pair for every joint.
  shared = dict(out, **{'human_pose/keypoint/offset': out['human_pose/keypoint/offset'][..., :2]})
  _, comps2 = losses.keypoint_loss([shared], t, task_name='human_pose', **_LOSS_ARGS)
  off2 = 0.0
  for m in range(4):
    for jj in range(j):
      for d in range(29):
        if t['offset_weights'][0, m, jj, d]:
          y, x = t['offset_indices'][0, m, jj, d]
          off2 += np.abs(shared['human_pose/keypoint/offset'][0, y, x] -
                         t['offset'][0, m, jj, d]).sum()
  np.testing.assert_allclose(comps2['human_pose/keypoint/offset'],
                             off2 / t['offset_weights'].sum(), rtol=1e-5)


def test_no_keypoints_gives_zero_losses():
  boxes, classes, box_mask, kps, _ = _batch()
  t = targets.build_keypoint_targets(boxes, classes, box_mask, kps, np.zeros((1, 4, 3)),
                                     (OUT, OUT), keypoint_channel=0, std_devs=STD)
  assert float(t['num_keypoints']) == 0.0 and float(jnp.max(t['heatmap'])) == 0.0
  out = {'human_pose/keypoint/heatmap': jnp.zeros((1, OUT, OUT, 3)),
         'human_pose/keypoint/offset': jnp.ones((1, OUT, OUT, 6)),
         'human_pose/keypoint/regression': jnp.ones((1, OUT, OUT, 6))}
  total, comps = losses.keypoint_loss([out], t, task_name='human_pose', **_LOSS_ARGS)
  assert np.isfinite(float(total))
  assert float(comps['human_pose/keypoint/offset']) == 0.0
  assert float(comps['human_pose/keypoint/regression']) == 0.0
