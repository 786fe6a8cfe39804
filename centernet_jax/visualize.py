"""Drawing on images (host side, PIL): detections, ground truth, heatmaps, panel sheets.

Images are uint8 `[H, W, 3]` RGB; boxes y-first `[ymin, xmin, ymax, xmax]` and joints (y, x) in
that image's pixels; heatmaps float `[h, w]` in 0..1 at any stride of the image.
"""

import colorsys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def class_color(channel: int) -> tuple[int, int, int]:
  """A stable, well separated colour per class channel (golden-ratio hue steps)."""
  hue = (channel * 0.618033988749895) % 1.0
  r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
  return int(r * 255), int(g * 255), int(b * 255)


def display_scale(height: int, width: int) -> int:
  """The integer upscaling that keeps labels readable on small images (384 pixels or more)."""
  return max(1, 384 // max(height, width, 1))


def _upscaled(image: np.ndarray) -> tuple[Image.Image, int]:
  canvas = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
  scale = display_scale(canvas.height, canvas.width)
  if scale > 1:
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
  return canvas, scale


def _label(draw, font, xmin, ymin, text, color):
  left, top, right, bottom = draw.textbbox((xmin, ymin), text, font=font)
  text_top = max(ymin - (bottom - top) - 2, 0)
  draw.rectangle([xmin, text_top, xmin + (right - left) + 4, text_top + (bottom - top) + 2],
                 fill=color)
  draw.text((xmin + 2, text_top), text, fill=(0, 0, 0), font=font)


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
  canvas, scale = _upscaled(image)
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  order = np.argsort(-np.asarray(scores))
  for k in order[::-1]:  # highest score drawn last, on top
    if scores[k] < min_score:
      continue
    ymin, xmin, ymax, xmax = (float(v) * scale for v in boxes[k])
    color = class_color(int(classes[k]))
    draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=2)
    _label(draw, font, xmin, ymin, f'{class_names[int(classes[k])]} {scores[k]:.2f}', color)
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


def draw_ground_truth(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                      class_names: Sequence[str], *, keypoints: np.ndarray | None = None,
                      keypoint_mask: np.ndarray | None = None,
                      skeleton: Sequence[Sequence[int]] = (), keypoint_channel: int = -1,
                      flip_permutation: Sequence[int] = ()) -> Image.Image:
  """Draws ground-truth boxes with their class names (and labelled joints with their limbs).

  Args:
    image: uint8 [H, W, 3] RGB.
    boxes: [N, 4] y-first boxes in this image's pixels (real boxes only, no padding rows).
    classes: [N] contiguous channels; a channel outside `class_names` is drawn as '?<channel>'.
    class_names: name of each channel.
    keypoints: optional [N, J, 2] (y, x) joints in this image's pixels.
    keypoint_mask: optional [N, J], 1 for a labelled joint (only those are drawn).
    skeleton: 0-based joint pairs drawn as limbs (when both ends are labelled).
    keypoint_channel: the class whose boxes carry joints.
    flip_permutation: left/right pairing, for the joint colours (as in `draw_detections`).
  Returns:
    A new RGB PIL image, upscaled like `draw_detections`.
  """
  canvas, scale = _upscaled(image)
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  for k in range(len(boxes)):
    ymin, xmin, ymax, xmax = (float(v) * scale for v in boxes[k])
    channel = int(classes[k])
    color = class_color(channel)
    draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=2)
    name = class_names[channel] if 0 <= channel < len(class_names) else f'?{channel}'
    _label(draw, font, xmin, ymin, name, color)
    if keypoints is not None and channel == keypoint_channel:
      labelled = (np.ones(len(keypoints[k]), bool) if keypoint_mask is None
                  else np.asarray(keypoint_mask[k]) > 0)
      joints = np.asarray(keypoints[k], np.float64) * scale
      for a, b in skeleton:
        if labelled[a] and labelled[b]:
          draw.line([(joints[a][1], joints[a][0]), (joints[b][1], joints[b][0])], fill=color,
                    width=max(1, scale))
      r = 2 + scale
      for j, (y, x) in enumerate(joints):
        if not labelled[j]:
          continue
        partner = flip_permutation[j] if j < len(flip_permutation) else j
        side = (255, 255, 255) if partner == j else (
            (255, 140, 0) if j < partner else (0, 120, 255))
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(0, 0, 0), fill=side, width=1)
  return canvas


def heatmap_rgb(heatmap: np.ndarray) -> np.ndarray:
  """A 0..1 heatmap `[h, w]` as uint8 `[h, w, 3]` on a black-red-yellow-white ramp."""
  v = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0)
  rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)],
                 axis=-1)
  return (rgb * 255).round().astype(np.uint8)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.75) -> Image.Image:
  """The heatmap over a darkened copy of the image, each heatmap pixel a block of the image.

  Args:
    image: uint8 [H, W, 3].
    heatmap: [h, w] values 0..1 with H/h = W/w the stride (4 for CenterNet's output maps).
    alpha: the heatmap colour's weight where the heatmap is 1 (it fades to 0 with the value).
  Returns:
    An RGB PIL image of the image's size, upscaled like `draw_detections`.
  """
  image = np.asarray(image, np.float32)
  h, w = image.shape[:2]
  heat = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0)
  up = np.asarray(Image.fromarray(heat).resize((w, h), Image.NEAREST), np.float32)[..., None]
  color = heatmap_rgb(up[..., 0]).astype(np.float32)
  # Darkened so that faint heat still shows on bright images.
  weight = alpha * np.sqrt(up)
  blended = image * 0.45 * (1 - weight) + color * weight
  canvas, _ = _upscaled(np.clip(blended, 0, 255).astype(np.uint8))
  return canvas


def titled(panel: Image.Image, title: str, height: int = 14) -> Image.Image:
  """The panel with a one-line title strip above it."""
  out = Image.new('RGB', (panel.width, panel.height + height), (24, 24, 24))
  out.paste(panel, (0, height))
  ImageDraw.Draw(out).text((3, 1), title, fill=(235, 235, 235), font=ImageFont.load_default())
  return out


def compose(rows: Sequence[Sequence[Image.Image]], pad: int = 4,
            background: tuple[int, int, int] = (48, 48, 48)) -> Image.Image:
  """Rows of panels laid out on one sheet (each row as tall as its tallest panel)."""
  heights = [max((p.height for p in row), default=0) for row in rows]
  widths = [sum(p.width for p in row) + pad * (len(row) - 1) for row in rows]
  sheet = Image.new('RGB', (max(widths, default=1) + 2 * pad,
                            sum(heights) + pad * (len(rows) + 1)), background)
  y = pad
  for row, height in zip(rows, heights):
    x = pad
    for panel in row:
      sheet.paste(panel, (x, y))
      x += panel.width + pad
    y += height + pad
  return sheet
