"""centernet_jax.nms: class-aware hard NMS and Gaussian soft-NMS, batched, jitted, static K."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import nms


def _iou(a, b):
  """Numpy IoU of one y-first box with [N, 4] boxes."""
  ih = np.maximum(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0)
  iw = np.maximum(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0)
  inter = ih * iw
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def reference_nms(boxes, scores, classes, k, *, iou_threshold=None, sigma=None,
                  score_threshold=nms.SOFT_NMS_SCORE_THRESHOLD):
  """One image, plain numpy loops: hard NMS (`iou_threshold`) or Gaussian soft-NMS (`sigma`).
  Returns (indices, scores) of the selections in order (at most k)."""
  remaining = {i: float(s) for i, s in enumerate(scores) if s > 0}
  picked, picked_scores = [], []
  while remaining and len(picked) < k:
    best = max(remaining, key=lambda i: (remaining[i], -i))
    picked.append(best)
    picked_scores.append(remaining.pop(best))
    for i in list(remaining):
      iou = _iou(boxes[best], boxes[i:i + 1])[0] if classes[i] == classes[best] else 0.0
      if sigma is None:
        if iou > iou_threshold:
          del remaining[i]
      else:
        remaining[i] *= np.exp(-iou * iou / sigma)
        if remaining[i] < score_threshold:
          del remaining[i]
  return picked, picked_scores


def _random_boxes(rng, b, n, num_classes=3):
  """Clustered boxes so that many overlap: [B, N, 4] y-first pixels, scores, classes."""
  centers = rng.uniform(10, 90, (b, 4, 2))
  which = rng.integers(0, 4, (b, n))
  c = np.take_along_axis(centers, which[..., None], axis=1) + rng.normal(0, 3, (b, n, 2))
  size = rng.uniform(8, 20, (b, n, 2))
  boxes = np.concatenate([c - size / 2, c + size / 2], axis=-1).astype(np.float32)
  scores = rng.uniform(0.01, 1.0, (b, n)).astype(np.float32)
  classes = rng.integers(0, num_classes, (b, n)).astype(np.int32)
  return boxes, scores, classes


def _boxes(rows):
  return jnp.asarray([rows], jnp.float32)


def test_overlapping_same_class_suppressed_other_class_kept():
  boxes = _boxes([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
  scores = jnp.asarray([[0.9, 0.8, 0.7, 0.6]])
  classes = jnp.asarray([[0, 0, 1, 0]])
  idx, out, valid = nms.nms(boxes, scores, classes, max_outputs=4, iou_threshold=0.5)
  # Box 1 (IoU 0.81 with box 0, same class) goes; box 2 has the same place but another class.
  np.testing.assert_array_equal(idx[0, :3], [0, 2, 3])
  np.testing.assert_allclose(out[0], [0.9, 0.7, 0.6, 0.0])
  np.testing.assert_array_equal(valid[0], [True, True, True, False])

  idx, out, valid = nms.soft_nms(boxes, scores, classes, max_outputs=4, sigma=0.5)
  assert bool(valid[0].all())
  # Soft-NMS keeps box 1 but decays it by exp(-0.81^2 / 0.5): it drops below box 3.
  np.testing.assert_array_equal(idx[0], [0, 2, 3, 1])
  np.testing.assert_allclose(out[0], [0.9, 0.7, 0.6, 0.8 * np.exp(-0.81 ** 2 / 0.5)],
                             rtol=1e-5)


@pytest.mark.parametrize('method', ['hard', 'soft'])
def test_matches_the_numpy_reference_batched_and_jitted(method):
  rng = np.random.default_rng(0)
  b, n, k = 3, 60, 25
  boxes, scores, classes = _random_boxes(rng, b, n)
  scores[1, 40:] = 0.0  # padding entries are never selected
  if method == 'hard':
    fn = jax.jit(functools.partial(nms.nms, max_outputs=k, iou_threshold=0.3))
    ref = functools.partial(reference_nms, iou_threshold=0.3)
  else:
    fn = jax.jit(functools.partial(nms.soft_nms, max_outputs=k, sigma=0.5))
    ref = functools.partial(reference_nms, sigma=0.5)
  idx, out, valid = fn(jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes))
  assert idx.shape == out.shape == valid.shape == (b, k)
  assert idx.dtype == jnp.int32 and valid.dtype == jnp.bool_
  suppressed_some = False
  for i in range(b):
    want_idx, want_scores = ref(boxes[i], scores[i], classes[i], k)
    m = len(want_idx)
    np.testing.assert_array_equal(np.asarray(idx[i, :m]), want_idx)
    np.testing.assert_allclose(np.asarray(out[i, :m]), want_scores, rtol=1e-5, atol=1e-7)
    assert bool(valid[i, :m].all()) and not bool(valid[i, m:].any())
    if i == 1:
      assert np.asarray(idx[1, :m]).max() < 40
    full_idx, _ = ref(boxes[i], scores[i], classes[i], n)
    suppressed_some |= len(full_idx) < int((scores[i] > 0).sum())
    assert np.all(np.diff(np.asarray(out[i, :m])) <= 0)
  if method == 'hard':
    assert suppressed_some  # the clustered boxes do overlap: the test exercises suppression


def test_more_outputs_than_boxes_leaves_the_tail_invalid():
  boxes = _boxes([[0, 0, 10, 10], [20, 20, 30, 30]])
  idx, out, valid = nms.nms(boxes, jnp.asarray([[0.5, 0.7]]), jnp.asarray([[0, 0]]),
                            max_outputs=5)
  assert idx.shape == (1, 5)
  np.testing.assert_array_equal(idx[0], [1, 0, 0, 0, 0])
  np.testing.assert_array_equal(valid[0], [True, True, False, False, False])
  np.testing.assert_allclose(out[0], [0.7, 0.5, 0, 0, 0])


def test_soft_nms_drops_boxes_decayed_below_the_threshold():
  boxes = _boxes([[0, 0, 10, 10], [0, 0, 10, 10]])
  idx, out, valid = nms.soft_nms(boxes, jnp.asarray([[0.9, 0.002]]), jnp.asarray([[0, 0]]),
                                 max_outputs=2, sigma=0.5)
  # 0.002 * exp(-1 / 0.5) = 0.00027 < 0.001: gone.
  np.testing.assert_array_equal(valid[0], [True, False])


def test_degenerate_boxes_have_zero_iou():
  ious = nms.box_iou(jnp.asarray([5.0, 5.0, 5.0, 5.0]),
                     jnp.asarray([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0]]))
  np.testing.assert_array_equal(ious, [0.0, 0.0])
