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
                    min_score: float = 0.3) -> Image.Image:
  """Draws boxes with 'name score' labels.

  Args:
    image: uint8 [H, W, 3] RGB, the original image.
    boxes: [K, 4] y-first boxes in this image's pixels.
    scores: [K]; detections below `min_score` are not drawn.
    classes: [K] contiguous channels indexing `class_names`.
    class_names: name of each channel.
    min_score: drawing threshold.
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
  return canvas
