"""Tests for centernet_jax.losses against independent numpy formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import losses as L
from centernet_jax.config_base import base_config


def _logit(p):
  p = np.asarray(p, np.float64)
  return np.log(p) - np.log1p(-p)


def _np_focal(logits, y, alpha=2.0, beta=4.0, mask=None):
  x = np.clip(np.asarray(logits, np.float64), -50, 50)  # sigmoid saturates far before this
  p = np.clip(1.0 / (1.0 + np.exp(-x)), 1e-4, 1 - 1e-4)
  y = np.asarray(y, np.float64)
  loss = np.where(y == 1.0, -((1 - p) ** alpha) * np.log(p),
                  -((1 - y) ** beta) * (p ** alpha) * np.log(1 - p))
  if mask is not None:
    loss = loss * mask
  return loss.sum()


def test_focal_toy_check():
  # Peers doc 5.4: p=[0.9,0.2,0.5], y=[1,0,0.5] -> 0.0208098 (one positive).
  logits = jnp.array(_logit([0.9, 0.2, 0.5]), jnp.float32).reshape(1, 1, 3, 1)
  y = jnp.array([1.0, 0.0, 0.5]).reshape(1, 1, 3, 1)
  got = float(L.penalty_reduced_focal_loss(logits, y))
  # By hand: 0.1^2 * -log .9 + 0.2^2 * -log .8 + 0.5^4 * 0.5^2 * -log .5
  by_hand = 0.01 * 0.1053605 + 0.04 * 0.2231436 + 0.0625 * 0.25 * 0.6931472
  assert got == pytest.approx(0.0208098, abs=1e-6)
  assert got == pytest.approx(by_hand, rel=1e-5)


def test_focal_matches_numpy_with_mask_and_exponents():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 3, (2, 5, 6, 3)).astype(np.float32)
  y = rng.uniform(0, 1, (2, 5, 6, 3)).astype(np.float32)
  y[0, 1, 2, 0] = y[1, 4, 5, 2] = y[1, 0, 0, 1] = 1.0
  mask = (rng.uniform(size=(2, 5, 6)) < 0.6).astype(np.float32)
  got = L.penalty_reduced_focal_loss(logits, y, valid_mask=mask)
  np.testing.assert_allclose(got, _np_focal(logits, y, mask=mask[..., None]), rtol=1e-5)
  got = L.penalty_reduced_focal_loss(logits, y, alpha=1.5, beta=3.0)
  np.testing.assert_allclose(got, _np_focal(logits, y, 1.5, 3.0), rtol=1e-5)
  # A full [B,H,W,C] mask is accepted too.
  full = np.broadcast_to(mask[..., None], y.shape)
  np.testing.assert_allclose(L.penalty_reduced_focal_loss(logits, y, valid_mask=full),
                             _np_focal(logits, y, mask=full), rtol=1e-5)


def test_focal_extreme_logits_finite_and_clipped():
  logits = jnp.array([-1e4, -100.0, 0.0, 100.0, 1e4] * 2, jnp.float32).reshape(1, 1, 10, 1)
  y = jnp.array([1.0] * 5 + [0.0] * 5).reshape(1, 1, 10, 1)
  loss, grad = jax.value_and_grad(L.penalty_reduced_focal_loss)(logits, y)
  assert np.isfinite(float(loss)) and np.isfinite(np.asarray(grad)).all()
  np.testing.assert_allclose(loss, _np_focal(np.asarray(logits), np.asarray(y)), rtol=1e-5)
  # Clipped at p = 1e-4: a missed positive costs (1 - 1e-4)^2 * -log(1e-4).
  single = L.penalty_reduced_focal_loss(jnp.full((1, 1, 1, 1), -100.0), jnp.ones((1, 1, 1, 1)))
  assert float(single) == pytest.approx((1 - 1e-4) ** 2 * -np.log(1e-4), rel=1e-5)
  # bfloat16 logits are computed in float32.
  bf = L.penalty_reduced_focal_loss(jnp.zeros((1, 2, 2, 1), jnp.bfloat16), jnp.zeros((1, 2, 2, 1)))
  assert bf.dtype == jnp.float32
  assert float(bf) == pytest.approx(4 * 0.25 * np.log(2), rel=1e-5)


def test_l1_at_indices_by_hand():
  pred = np.zeros((2, 3, 4, 2), np.float32)
  pred[0, 1, 2] = [5.0, 7.0]
  pred[0, 0, 0] = [1.0, 1.0]
  pred[1, 2, 3] = [-2.0, 0.5]
  indices = np.array([[[1, 2], [0, 0]], [[2, 3], [0, 1]]], np.int32)
  target = np.array([[[4.0, 9.0], [0.0, 0.0]], [[1.0, 1.0], [3.0, 3.0]]], np.float32)
  weights = np.array([[1.0, 1.0], [0.5, 0.0]], np.float32)
  # |5-4|+|7-9| = 3; |1|+|1| = 2; 0.5*(|-2-1|+|0.5-1|) = 1.75; last box weight 0.
  got = L.l1_at_indices(pred, indices, target, weights)
  assert float(got) == pytest.approx(3.0 + 2.0 + 1.75)
  np.testing.assert_array_equal(L.gather_at_indices(jnp.asarray(pred), indices)[1, 0],
                                [-2.0, 0.5])


def _fake_targets(rng, b=2, m=3, h=6, w=5, c=2):
  hm = rng.uniform(0, 0.9, (b, h, w, c)).astype(np.float32)
  hm[0, 1, 1, 0] = hm[1, 2, 3, 1] = 1.0
  return {
      'heatmap': hm,
      'indices': np.array([[[1, 1], [4, 0], [5, 4]], [[2, 3], [0, 2], [2, 3]]], np.int32),
      'size': rng.uniform(1, 20, (b, m, 2)).astype(np.float32),
      'offset': rng.uniform(0, 1, (b, m, 2)).astype(np.float32),
      'weights': np.array([[1, 1, 0], [1, 0, 0]], np.float32),
      'num_boxes': np.float32(3.0),
  }


def _np_l1(pred, t, key):
  total = 0.0
  for bi in range(pred.shape[0]):
    for mi in range(t['indices'].shape[1]):
      y, x = t['indices'][bi, mi]
      total += t['weights'][bi, mi] * np.abs(pred[bi, y, x] - t[key][bi, mi]).sum()
  return total


def test_centernet_loss_normalisation_weights_and_outputs():
  rng = np.random.default_rng(2)
  t = _fake_targets(rng)
  heads = [{k: rng.normal(size=s).astype(np.float32)
            for k, s in [('object_center', (2, 6, 5, 2)), ('box/scale', (2, 6, 5, 2)),
                         ('box/offset', (2, 6, 5, 2))]} for _ in range(2)]
  valid = (rng.uniform(size=(2, 6, 5)) < 0.8).astype(np.float32)
  cfg = base_config().loss
  total, comps = jax.jit(lambda hs, tg, vm: L.centernet_loss(hs, tg, cfg, vm))(heads, t, valid)
  n = 3.0
  exp_center = np.mean([_np_focal(h['object_center'], t['heatmap'], mask=valid[..., None])
                        for h in heads]) / n
  exp_scale = 0.1 * np.mean([_np_l1(h['box/scale'], t, 'size') for h in heads]) / n
  exp_offset = np.mean([_np_l1(h['box/offset'], t, 'offset') for h in heads]) / n
  np.testing.assert_allclose(comps['object_center'], exp_center, rtol=1e-5)
  np.testing.assert_allclose(comps['box/scale'], exp_scale, rtol=1e-5)
  np.testing.assert_allclose(comps['box/offset'], exp_offset, rtol=1e-5)
  np.testing.assert_allclose(total, exp_center + exp_scale + exp_offset, rtol=1e-5)
  assert set(comps) == {'object_center', 'box/scale', 'box/offset'}
  # Other weights; one output; no boxes -> divided by 1.
  t0 = dict(t, num_boxes=np.float32(0.0))
  other = base_config().loss
  other.center_weight, other.scale_weight, other.offset_weight = 2.0, 1.0, 0.0
  total1, comps1 = L.centernet_loss(heads[:1], t0, other)
  np.testing.assert_allclose(comps1['object_center'],
                             2.0 * _np_focal(heads[0]['object_center'], t['heatmap']), rtol=1e-5)
  np.testing.assert_allclose(comps1['box/scale'], _np_l1(heads[0]['box/scale'], t, 'size'),
                             rtol=1e-5)
  assert float(comps1['box/offset']) == 0.0


def test_centernet_loss_zero_regression_for_perfect_heads_and_grads_finite():
  rng = np.random.default_rng(3)
  t = _fake_targets(rng)
  scale = np.zeros((2, 6, 5, 2), np.float32)
  offset = np.zeros((2, 6, 5, 2), np.float32)
  for bi in range(2):
    for mi in range(3):
      if t['weights'][bi, mi]:
        y, x = t['indices'][bi, mi]
        scale[bi, y, x] = t['size'][bi, mi]
        offset[bi, y, x] = t['offset'][bi, mi]
  heads = [{'object_center': jnp.zeros((2, 6, 5, 2)), 'box/scale': jnp.asarray(scale),
            'box/offset': jnp.asarray(offset)}]
  _, comps = L.centernet_loss(heads, t, base_config().loss)
  assert float(comps['box/scale']) == pytest.approx(0.0, abs=1e-6)
  assert float(comps['box/offset']) == pytest.approx(0.0, abs=1e-6)
  grads = jax.grad(lambda hs: L.centernet_loss(hs, t, base_config().loss)[0])(heads)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
