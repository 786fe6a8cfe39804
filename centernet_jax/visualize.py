"""Drawing detections on images (host side, PIL)."""

import colorsys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def class_color(channel: int) -> tuple[int, int, int]:
  """A stable, well separated colour per class channel (golden-ratio hue steps)."""
  hue = (channel * 0.618033988749895) % 1.0
  r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
  return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    classes: np.ndarray, class_names: Sequence[str],
                    min_score: float = 0.3, *, keypoints: np.ndarray | None = None,
                    keypoint_scores: np.ndarray | None = None,
                    skeleton: Sequence[Sequence[int]] = (), keypoint_channel: int = -1,
                    flip_permutation: Sequence[int] = (),
                    snapped_threshold: float = 0.1) -> Image.Image:
  """Draws boxes with 'name score' labels, and skeletons for detections with joints.

  Args:
    image: uint8 [H, W, 3] RGB, the original image.
    boxes: [K, 4] y-first boxes in this image's pixels.
    scores: [K]; detections below `min_score` are not drawn.
    classes: [K] contiguous channels indexing `class_names`.
    class_names: name of each channel.
    min_score: drawing threshold.
    keypoints: optional [K, J, 2] (y, x) joints in this image's pixels.
    keypoint_scores: optional [K, J] joint scores.
    skeleton: 0-based joint pairs drawn as limbs.
    keypoint_channel: the class whose detections carry joints.
    flip_permutation: the left/right pairing: a joint whose partner is another joint is drawn
      in one colour for its side (the lower index of each pair in orange, the higher in blue);
      unpaired joints are white.
    snapped_threshold: joints scoring above it (snapped to a heatmap peak) are filled dots;
      the others (regressed only, the decoder's unmatched score) are hollow.
  Returns:
    A new RGB PIL image.
  """
  canvas = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
  # Small images get scaled up so the labels stay readable.
  scale = max(1, 384 // max(canvas.size))
  if scale > 1:
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  order = np.argsort(-np.asarray(scores))
  for k in order[::-1]:  # highest score drawn last, on top
    if scores[k] < min_score:
      continue
    ymin, xmin, ymax, xmax = (float(v) * scale for v in boxes[k])
    color = class_color(int(classes[k]))
    draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=2)
    label = f'{class_names[int(classes[k])]} {scores[k]:.2f}'
    left, top, right, bottom = draw.textbbox((xmin, ymin), label, font=font)
    text_top = max(ymin - (bottom - top) - 2, 0)
    draw.rectangle([xmin, text_top, xmin + (right - left) + 4, text_top + (bottom - top) + 2],
                   fill=color)
    draw.text((xmin + 2, text_top), label, fill=(0, 0, 0), font=font)
    if keypoints is not None and int(classes[k]) == keypoint_channel:
      _draw_skeleton(draw, np.asarray(keypoints[k], np.float64) * scale,
                     None if keypoint_scores is None else np.asarray(keypoint_scores[k]),
                     skeleton, color, flip_permutation, snapped_threshold, scale)
  return canvas


def _draw_skeleton(draw, joints, joint_scores, skeleton, color, flip_permutation,
                   snapped_threshold, scale):
  """Limbs in the class colour, joints as dots (side-coloured; hollow when not snapped)."""
  for a, b in skeleton:
    (ya, xa), (yb, xb) = joints[a], joints[b]
    draw.line([(xa, ya), (xb, yb)], fill=color, width=max(1, scale))
  r = 2 + scale
  for j, (y, x) in enumerate(joints):
    partner = flip_permutation[j] if j < len(flip_permutation) else j
    side = (255, 255, 255) if partner == j else ((255, 140, 0) if j < partner else (0, 120, 255))
    snapped = joint_scores is None or joint_scores[j] > snapped_threshold + 1e-6
    draw.ellipse([x - r, y - r, x + r, y + r], outline=(0, 0, 0),
                 fill=side if snapped else None, width=1)
    if not snapped:
      draw.ellipse([x - r + 1, y - r + 1, x + r - 1, y + r - 1], outline=side, width=1)
