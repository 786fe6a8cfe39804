"""Tests for centernet_jax.targets: radius, sigma, heatmap and regression targets."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import targets as T

# (h, w) -> radius, TF2 OD API (bug variant, min overlap 0.7), docs/odapi_reference.md 4.1.
ODAPI_VECTORS = [
    ((20, 10), 3.678, 1.1667),
    ((10, 10), 2.733, 0.8333),
    ((64, 32), 11.769, 3.8333),
    ((3, 3), 0.820, 0.1667),
    ((100, 40), 15.860, 5.1667),
]

# Peers doc 5.3: h x w -> bug o=0.7, corrected o=0.7, corrected o=0.3.
PEERS_TABLE = [
    ((4, 4), 1.0933, 0.3267, 0.9046),
    ((10, 10), 2.7332, 0.8167, 2.2614),
    ((5, 50), 2.6370, 0.6996, 1.6954),
    ((20, 40), 7.3559, 2.1548, 5.7805),
    ((32, 32), 8.7462, 2.6134, 7.2364),
    ((100, 100), 27.3320, 8.1670, 22.6139),
    ((128, 64), 23.5387, 6.8953, 18.4975),
]


def _np_radius_bug(h, w, o=0.7):
  """Independent oracle of the OD API radius: each quadratic's root divided by 2, never by 2a."""
  roots = []
  for a, b, c in [(1.0, -(h + w), w * h * (1 - o) / (1 + o)),
                  (4.0, -2.0 * (h + w), (1 - o) * w * h),
                  (4.0 * o, 2.0 * o * (h + w), (o - 1) * w * h)]:
    roots.append((-b + math.sqrt(b * b - 4 * a * c)) / 2.0)
  return min(roots)


def _np_heatmap(boxes, classes, mask, out_h, out_w, num_classes):
  """Per-box loop oracle of the dense OD API heatmap (float64)."""
  batch, num = classes.shape
  hm = np.zeros((batch, out_h, out_w, num_classes))
  ys = np.arange(out_h)[:, None]
  xs = np.arange(out_w)[None, :]
  for b in range(batch):
    for m in range(num):
      if mask[b, m] == 0:
        continue
      y0, x0, y1, x1 = boxes[b, m] * [out_h, out_w, out_h, out_w]
      cy = min(math.floor((y0 + y1) / 2), out_h - 1)
      cx = min(math.floor((x0 + x1) / 2), out_w - 1)
      r = _np_radius_bug(y1 - y0, x1 - x0)
      sigma = (2 * max(math.floor(r), 0) + 1) / 6
      g = mask[b, m] * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma ** 2))
      hm[b, :, :, classes[b, m]] = np.maximum(hm[b, :, :, classes[b, m]], g)
  return hm


@pytest.mark.parametrize('size,radius,sigma', ODAPI_VECTORS)
def test_radius_and_sigma_odapi_vectors(size, radius, sigma):
  r = float(T.gaussian_radius(*size))
  assert r == pytest.approx(radius, abs=1e-3)
  assert r == pytest.approx(_np_radius_bug(*size), rel=1e-5)
  assert float(T.gaussian_sigma(r)) == pytest.approx(sigma, abs=1e-4)


def test_radius_peers_table_both_variants():
  h = jnp.array([s[0] for s, *_ in PEERS_TABLE], jnp.float32)
  w = jnp.array([s[1] for s, *_ in PEERS_TABLE], jnp.float32)
  bug, fixed07, fixed03 = (np.array(col) for col in zip(*[row[1:] for row in PEERS_TABLE]))
  np.testing.assert_allclose(T.gaussian_radius(h, w), bug, atol=1e-3)
  np.testing.assert_allclose(T.gaussian_radius(h, w, 0.7, 'corrected'), fixed07, atol=1e-3)
  np.testing.assert_allclose(T.gaussian_radius(h, w, 0.3, 'corrected'), fixed03, atol=1e-3)
  # Elementwise on a 2-D array too, and symmetric in (h, w).
  r2d = T.gaussian_radius(h.reshape(7, 1), h.reshape(1, 7))
  assert r2d.shape == (7, 7)
  np.testing.assert_allclose(r2d, r2d.T, rtol=1e-6)
  with pytest.raises(ValueError):
    T.gaussian_radius(h, w, variant='nope')


def test_sigma_values():
  r = jnp.array([-1.0, 0.0, 0.99, 1.0, 2.0, 2.999, 15.86])
  expected = np.array([1, 1, 1, 3, 5, 5, 31]) / 6.0
  np.testing.assert_allclose(T.gaussian_sigma(r), expected, rtol=1e-6)


def _single(box, cls=0, out=32, num_classes=3, mask=1.0):
  boxes = jnp.array([[box]], jnp.float32) / out  # given in output pixels
  return T.build_targets(boxes, jnp.array([[cls]], jnp.int32), jnp.array([[mask]], jnp.float32),
                         (out, out), num_classes=num_classes)


def test_heatmap_hand_values_untruncated():
  # 10x10 output px box centred at (15.5, 12.25): r = 2.733 -> floor 2 -> sigma 0.8333.
  t = _single([10.5, 7.25, 20.5, 17.25], cls=1)
  hm = np.asarray(t['heatmap'])[0]
  cy, cx = 15, 12
  assert hm[cy, cx, 1] == 1.0  # exact, the focal loss's positive
  np.testing.assert_allclose(hm[cy + 1, cx, 1], 0.486752, atol=1e-6)
  np.testing.assert_allclose(hm[cy, cx - 1, 1], 0.486752, atol=1e-6)
  np.testing.assert_allclose(hm[cy + 1, cx + 1, 1], 0.236928, atol=1e-6)
  np.testing.assert_allclose(hm[cy - 2, cx, 1], 0.056135, atol=1e-6)
  np.testing.assert_allclose(hm[cy + 2, cx - 1, 1], 0.027324, atol=1e-6)
  np.testing.assert_allclose(hm[cy - 2, cx + 2, 1], 0.003151, atol=1e-6)
  # Untruncated: beyond the radius the Gaussian is still there (exp(-18) at distance 5).
  np.testing.assert_allclose(hm[cy + 5, cx, 1], math.exp(-18.0), rtol=1e-4)
  assert hm[cy + 3, cx + 3, 1] > 0
  assert np.count_nonzero(hm[..., 1] == 1.0) == 1
  assert not hm[..., 0].any() and not hm[..., 2].any()
  np.testing.assert_array_equal(t['indices'], [[[15, 12]]])
  np.testing.assert_allclose(t['size'], [[[10.0, 10.0]]], atol=1e-5)
  np.testing.assert_allclose(t['offset'], [[[0.5, 0.25]]], atol=1e-5)
  assert t['indices'].dtype == jnp.int32
  assert float(t['num_boxes']) == 1.0


def test_heatmap_max_merge_same_class_and_separate_classes():
  out, c = 32, 2
  a = [4.0, 4.0, 14.0, 14.0]  # center (9, 9)
  b = [6.0, 8.0, 16.0, 18.0]  # center (11, 13), overlapping Gaussians
  boxes = jnp.array([[a, b]], jnp.float32) / out
  merged = T.build_targets(boxes, jnp.array([[1, 1]]), jnp.ones((1, 2)), (out, out),
                           num_classes=c)['heatmap']
  only_a = _single(a, 1, out, c)['heatmap']
  only_b = _single(b, 1, out, c)['heatmap']
  # max, never a sum (float32 exp may differ by an ulp between compiled shapes)
  np.testing.assert_allclose(merged, np.maximum(only_a, only_b), rtol=0, atol=1e-7)
  assert merged[0, 9, 9, 1] == 1.0 and merged[0, 11, 13, 1] == 1.0
  assert float(merged.max()) == 1.0
  split = T.build_targets(boxes, jnp.array([[0, 1]]), jnp.ones((1, 2)), (out, out),
                          num_classes=c)['heatmap']
  np.testing.assert_allclose(split[..., 0], only_a[..., 1], rtol=0, atol=1e-7)
  np.testing.assert_allclose(split[..., 1], only_b[..., 1], rtol=0, atol=1e-7)


def test_masked_box_contributes_nothing():
  out = 32
  real = [4.0, 4.0, 14.0, 14.0]
  pad = [10.0, 10.0, 30.0, 30.0]
  boxes = jnp.array([[real, pad]], jnp.float32) / out
  t = T.build_targets(boxes, jnp.array([[0, 0]]), jnp.array([[1.0, 0.0]]), (out, out),
                      num_classes=2)
  np.testing.assert_allclose(t['heatmap'], _single(real, 0, out, 2)['heatmap'], rtol=0, atol=1e-7)
  assert float(t['num_boxes']) == 1.0
  np.testing.assert_array_equal(t['weights'], [[1.0, 0.0]])
  # Even a NaN padding row draws nothing.
  nan_boxes = boxes.at[0, 1].set(jnp.nan)
  t_nan = T.build_targets(nan_boxes, jnp.array([[0, 0]]), jnp.array([[1.0, 0.0]]), (out, out),
                          num_classes=2)
  np.testing.assert_array_equal(t_nan['heatmap'], t['heatmap'])
  # An all-padding batch gives an all-zero heatmap (no -inf, no NaN).
  empty = T.build_targets(jnp.zeros((2, 5, 4)), jnp.zeros((2, 5), jnp.int32),
                          jnp.zeros((2, 5)), (8, 8), num_classes=3)
  assert not np.asarray(empty['heatmap']).any()
  assert float(empty['num_boxes']) == 0.0


def test_build_targets_matches_numpy_oracle_random_batch():
  rng = np.random.default_rng(0)
  b, m, out_h, out_w, c = 3, 12, 24, 40, 5
  y0 = rng.uniform(0, 0.9, (b, m))
  x0 = rng.uniform(0, 0.9, (b, m))
  boxes = np.stack([y0, x0, np.minimum(y0 + rng.uniform(0, 0.5, (b, m)), 1.0),
                    np.minimum(x0 + rng.uniform(0, 0.5, (b, m)), 1.0)], -1).astype(np.float32)
  boxes[0, 0] = [0.5, 0.5, 1.0, 1.0]
  boxes[0, 1] = [1.0, 1.0, 1.0, 1.0]  # degenerate box on the border: index clipped
  classes = rng.integers(0, c, (b, m)).astype(np.int32)
  mask = (rng.uniform(size=(b, m)) < 0.75).astype(np.float32)
  mask[0, :2] = 1.0
  t = jax.jit(T.build_targets, static_argnames=('output_size', 'num_classes', 'min_overlap',
                                                 'radius_variant'))(
                                                     boxes, classes, mask,
                                                     output_size=(out_h, out_w), num_classes=c)
  np.testing.assert_allclose(t['heatmap'], _np_heatmap(boxes.astype(np.float64), classes, mask,
                                                       out_h, out_w, c), atol=2e-6)
  abs_boxes = boxes * [out_h, out_w, out_h, out_w]
  center = np.stack([abs_boxes[..., 0] + abs_boxes[..., 2],
                     abs_boxes[..., 1] + abs_boxes[..., 3]], -1) / 2
  idx = np.minimum(np.floor(center), [out_h - 1, out_w - 1])
  np.testing.assert_array_equal(t['indices'], idx)
  np.testing.assert_allclose(t['offset'], center - idx, atol=1e-5)
  np.testing.assert_allclose(t['size'], abs_boxes[..., 2:] - abs_boxes[..., :2], atol=1e-5)
  assert t['heatmap'].shape == (b, out_h, out_w, c) and t['heatmap'].dtype == jnp.float32
  # Every real box has its exact 1.0 at its index in its class channel.
  hm = np.asarray(t['heatmap'])
  bi, mi = np.nonzero(mask)
  np.testing.assert_array_equal(hm[bi, idx[bi, mi, 0].astype(int), idx[bi, mi, 1].astype(int),
                                   classes[bi, mi]], 1.0)
  assert float(t['num_boxes']) == mask.sum()


def test_corrected_variant_changes_sigma():
  box = jnp.array([[[0.0, 0.0, 20.0, 40.0]]]) / 64
  args = (jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1)), (64, 64))
  odapi = T.build_targets(box, *args, num_classes=1)['heatmap'][0, :, :, 0]
  fixed = T.build_targets(box, *args, num_classes=1, radius_variant='corrected')[
      'heatmap'][0, :, :, 0]
  # radius 7.36 -> sigma 2.5 vs radius 2.15 -> sigma 5/6; neighbour at +1 row.
  np.testing.assert_allclose(odapi[11, 20], math.exp(-1 / (2 * 2.5 ** 2)), rtol=1e-6)
  np.testing.assert_allclose(fixed[11, 20], math.exp(-1 / (2 * (5 / 6) ** 2)), rtol=1e-6)


def test_valid_output_mask():
  true_size = jnp.array([[300, 510], [512, 512], [1, 4]])
  mask = np.asarray(T.valid_output_mask(true_size, 512, (128, 128)))
  assert mask.shape == (3, 128, 128) and mask.dtype == np.float32
  # ceil(300/4) = 75 rows, ceil(510/4) = 128 columns.
  assert mask[0, :75].all() and not mask[0, 75:].any()
  assert mask[0, :, 127].sum() == 75
  assert mask[1].all()
  assert mask[2].sum() == 1 and mask[2, 0, 0] == 1
  mask2 = np.asarray(T.valid_output_mask(jnp.array([[301, 5]]), 512, 128))
  assert mask2[0].sum() == 76 * 2


@pytest.mark.parametrize('draw,limit', [('_draw_heatmap', 20e6),
                                        ('_draw_heatmap_scatter', 250e6)])
def test_heatmap_drawing_memory_at_coco_scale(draw, limit):
  """B=16, M=100, 128x128, C=90: the scan (accelerators) stays far below the ~105 MB of all
  [B,M,H,W] Gaussians; the CPU's all-at-once scatter stays within its documented cost."""
  b, m, out, c = 16, 100, 128, 90
  fn = jax.jit(lambda *a: getattr(T, draw)(*a, out_h=out, out_w=out, num_classes=c))
  spec = jax.ShapeDtypeStruct((b, m), jnp.float32)
  compiled = fn.lower(spec, spec, spec, jax.ShapeDtypeStruct((b, m), jnp.int32),
                      spec).compile()
  stats = compiled.memory_analysis()
  if stats is None:
    pytest.skip('memory analysis unavailable on this backend')
  assert stats.temp_size_in_bytes < limit, stats.temp_size_in_bytes


@pytest.mark.parametrize('batch,m,side,c', [(2, 7, 9, 3), (3, 12, 16, 5)])
def test_scatter_heatmap_equals_the_per_box_scan(batch, m, side, c):
  """Both drawings, including masked rows holding NaN and classes outside [0, C)."""
  rng = np.random.default_rng(batch)
  iy = jnp.asarray(np.floor(rng.uniform(0, side, (batch, m))), jnp.float32)
  ix = jnp.asarray(np.floor(rng.uniform(0, side, (batch, m))), jnp.float32)
  sigma = jnp.asarray(rng.uniform(0.2, 3.0, (batch, m)), jnp.float32)
  classes = jnp.asarray(rng.integers(-1, c + 1, (batch, m)), jnp.int32)
  weights = jnp.asarray(rng.uniform(0, 1, (batch, m)) > 0.3, jnp.float32)
  iy = jnp.where(weights > 0, iy, jnp.nan)
  kw = dict(out_h=side, out_w=side, num_classes=c)
  scan = T._draw_heatmap(iy, ix, sigma, classes, weights, **kw)  # pylint: disable=protected-access
  scatter = T._draw_heatmap_scatter(iy, ix, sigma, classes, weights, **kw)  # pylint: disable=protected-access
  np.testing.assert_array_equal(scan, scatter)
