"""Jitted, batched, static-shape non-maximum suppression: hard NMS and Gaussian soft-NMS.

Both take `[B, N, 4]` y-first boxes (any unit, the same for every box), `[B, N]` scores and
`[B, N]` int classes, and return a fixed number `K` of selections per image:
`(indices [B, K] int32 into N, scores [B, K] float32, valid [B, K] bool)`, in descending
score order. Slots past the last selection have `valid` False, score 0 and index 0.
Suppression is class-aware: boxes of different classes never suppress each other.

- `nms`: greedy; the highest remaining box is selected and every remaining box of its class
  with IoU > `iou_threshold` is dropped.
- `soft_nms`: Gaussian soft-NMS (Bodla et al. 2017), as the original CenterNet merges its
  multi-scale detections: the highest remaining box is selected and every remaining box of its
  class has its score multiplied by `exp(-IoU^2 / sigma)`; boxes whose score falls below
  `score_threshold` are dropped. A selected box's score is its decayed score at selection.
  As later decays only lower scores, the first K selections are exactly the K best of a
  complete soft-NMS run, so the loop stops after K steps (K x N work instead of N x N).

Boxes with score <= 0 are never selected (padding can be passed with score 0).
"""

import jax
import jax.numpy as jnp

METHODS = ('soft', 'hard')
# The original CenterNet's soft-NMS threshold: decayed boxes below it are discarded.
SOFT_NMS_SCORE_THRESHOLD = 0.001


def box_iou(box, boxes):
  """IoU of one `[4]` y-first box with `[N, 4]` boxes -> `[N]` (0 where the union is empty)."""
  ymin = jnp.maximum(box[0], boxes[:, 0])
  xmin = jnp.maximum(box[1], boxes[:, 1])
  ymax = jnp.minimum(box[2], boxes[:, 2])
  xmax = jnp.minimum(box[3], boxes[:, 3])
  inter = jnp.maximum(ymax - ymin, 0.0) * jnp.maximum(xmax - xmin, 0.0)
  area = jnp.maximum(box[2] - box[0], 0.0) * jnp.maximum(box[3] - box[1], 0.0)
  areas = (jnp.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
           * jnp.maximum(boxes[:, 3] - boxes[:, 1], 0.0))
  union = area + areas - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _select(boxes, scores, classes, max_outputs, update):
  """The greedy loop of one image: K times, select the best remaining box, then
  `update(iou_same_class [N], remaining_scores [N]) -> new remaining scores` (<= 0: gone)."""
  boxes = jnp.asarray(boxes, jnp.float32)
  scores = jnp.asarray(scores, jnp.float32)
  classes = jnp.asarray(classes, jnp.int32)
  n = boxes.shape[0]

  def step(k, carry):
    remaining, out_idx, out_score = carry
    best = jnp.argmax(remaining).astype(jnp.int32)
    best_score = remaining[best]
    ok = best_score > 0
    iou = box_iou(boxes[best], boxes) * (classes == classes[best])
    new = update(iou, remaining).at[best].set(0.0)
    remaining = jnp.where(ok, new, remaining)
    out_idx = out_idx.at[k].set(jnp.where(ok, best, 0))
    out_score = out_score.at[k].set(jnp.where(ok, best_score, 0.0))
    return remaining, out_idx, out_score

  remaining = jnp.where(scores > 0, scores, 0.0)
  init = (remaining, jnp.zeros([max_outputs], jnp.int32), jnp.zeros([max_outputs], jnp.float32))
  _, idx, out_scores = jax.lax.fori_loop(0, min(max_outputs, n), step, init)
  return idx, out_scores, out_scores > 0


def nms(boxes, scores, classes, *, max_outputs: int, iou_threshold: float = 0.5):
  """Class-aware greedy NMS of a batch (see the module docstring).

  Args:
    boxes: `[B, N, 4]` y-first. scores: `[B, N]`. classes: int `[B, N]`.
    max_outputs: static K (selections per image; K > N leaves the tail invalid).
    iou_threshold: a remaining box of the selected box's class with IoU above it is dropped.

  Returns:
    (indices `[B, K]` int32, scores `[B, K]` float32, valid `[B, K]` bool).
  """
  def update(iou, remaining):
    return jnp.where(iou > iou_threshold, 0.0, remaining)

  return jax.vmap(lambda b, s, c: _select(b, s, c, int(max_outputs), update))(
      boxes, scores, classes)


def soft_nms(boxes, scores, classes, *, max_outputs: int, sigma: float = 0.5,
             score_threshold: float = SOFT_NMS_SCORE_THRESHOLD):
  """Class-aware Gaussian soft-NMS of a batch (see the module docstring).

  Args:
    boxes: `[B, N, 4]` y-first. scores: `[B, N]`. classes: int `[B, N]`.
    max_outputs: static K.
    sigma: the Gaussian decay `exp(-IoU^2 / sigma)`.
    score_threshold: boxes decayed below it are dropped.

  Returns:
    (indices `[B, K]` int32, decayed scores `[B, K]` float32, valid `[B, K]` bool).
  """
  def update(iou, remaining):
    decayed = remaining * jnp.exp(-(iou * iou) / sigma)
    return jnp.where(decayed < score_threshold, 0.0, decayed)

  return jax.vmap(lambda b, s, c: _select(b, s, c, int(max_outputs), update))(
      boxes, scores, classes)
