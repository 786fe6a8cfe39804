"""Deterministic synthetic keypoint set in COCO person_keypoints layout (numpy + PIL, seeded).

Articulated stick figures (category 1 'person', 9 named joints with a skeleton) plus distractor
balls (category 2 'ball', no keypoints) on the textured backgrounds of `synthetic.py`, small
enough for a CPU to learn keypoints in minutes (`experiments/demo_keypoints.py`).

Layout written under `out_dir` (the same as synthetic.py's, so the same readers apply):
  train/*.png, val/*.png,
  annotations/instances_train.json, annotations/instances_val.json  (COCO keypoint format:
    the 'person' category has 'keypoints' names and a 1-based 'skeleton'; its annotations
    have 'keypoints' [x, y, v] * 9 and 'num_keypoints'),
  synthetic_params.json  (marker: the generation parameters; written last)

Figures:
- Joints: head, left/right shoulder, left/right hand, left/right hip, left/right foot. A figure
  faces the camera, so its left side is on the image's right: 'left_*' joints lie right of the
  body axis, as in COCO, and a horizontal flip turns them into 'right_*' joints (the flip
  permutation the reader derives from the names is [0, 2, 1, 4, 3, 6, 5, 8, 7]).
- Articulation: random arm angles (from hanging down to raised, outwards), random leg spread,
  random body proportions, a small random lean; figure height log-uniform from ~0.25 to ~0.75
  of the image side; limbs drawn as thick aliased lines in one colour, the head as a disc.
- Visibility: joints are pixel centres (x + 0.5, y + 0.5 in COCO pixel coordinates, the box
  convention). A joint whose pixel is hidden by a later object is labelled occluded (v = 1);
  about 6% of the joints are left unlabelled at random (v = 0, coordinates 0), as COCO leaves
  joints unannotated.
- 1-3 figures and 0-2 balls per image (an object never hides more than 20% of an earlier one);
  boxes come from the visible pixels. `area` (the object scale of COCO's OKS) is the box area
  for figures (the pixel count of a thin stick drawing would understate a figure's size; COCO
  persons cover about half their box) and the visible pixel count for balls. Image ids are
  index + 1 per split.

Determinism: image `i` of split `s` is drawn from `np.random.default_rng([seed, s, i, 77])`.

CLI:
  python -m centernet_jax.data.synthetic_keypoints --out_dir /tmp/kps
  python -m centernet_jax.data.synthetic_keypoints --config experiments/demo_keypoints.py \
      --print_val_images 6
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from absl import app
from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageDraw

from centernet_jax.data import synthetic

GENERATOR_VERSION = 1
KEYPOINT_NAMES = ('head', 'left_shoulder', 'right_shoulder', 'left_hand', 'right_hand',
                  'left_hip', 'right_hip', 'left_foot', 'right_foot')
# 1-based, as COCO writes skeletons.
SKELETON_1BASED = ((1, 2), (1, 3), (2, 3), (2, 4), (3, 5), (2, 6), (3, 7), (6, 7), (6, 8),
                   (7, 9))
FIGURE_ID = 1
BALL_ID = 2
CATEGORIES = (
    {'id': FIGURE_ID, 'name': 'person', 'supercategory': 'person',
     'keypoints': list(KEYPOINT_NAMES), 'skeleton': [list(p) for p in SKELETON_1BASED]},
    {'id': BALL_ID, 'name': 'ball', 'supercategory': 'shape'},
)
UNLABELLED_PROB = 0.06
_SPLITS = (('train', 0), ('val', 1))


def generation_params(dataset_config) -> dict[str, Any]:
  """The parameters that define the set (recorded in the marker file)."""
  d = getattr(dataset_config, 'dataset', dataset_config)
  return {
      'kind': 'keypoints',
      'version': GENERATOR_VERSION,
      'num_train': int(d.synthetic_num_train),
      'num_val': int(d.synthetic_num_val),
      'image_size': int(d.synthetic_image_size),
      'seed': int(d.synthetic_seed),
  }


def _figure(rng: np.random.Generator, height: float):
  """A figure's joints (local float (y, x), y down) and limb/head drawing parameters."""
  head_r = height * rng.uniform(0.09, 0.12)
  torso = height * rng.uniform(0.30, 0.36)
  leg = height - 2 * head_r - torso
  shoulder_w = height * rng.uniform(0.10, 0.16)
  hip_w = height * rng.uniform(0.06, 0.11)
  arm = height * rng.uniform(0.30, 0.40)
  neck = np.array([2 * head_r, 0.0])
  head = np.array([head_r, 0.0])
  pelvis = neck + np.array([torso, 0.0])
  # x grows to the image right = the figure's left.
  joints = {'head': head,
            'left_shoulder': neck + [0.0, shoulder_w], 'right_shoulder': neck - [0.0, shoulder_w],
            'left_hip': pelvis + [0.0, hip_w], 'right_hip': pelvis - [0.0, hip_w]}
  for side, sign in (('left', 1.0), ('right', -1.0)):
    a = math.radians(rng.uniform(-15, 165))  # 0: hanging down, 90: horizontal, out
    joints[f'{side}_hand'] = joints[f'{side}_shoulder'] + arm * np.array(
        [math.cos(a), sign * math.sin(a)])
    b = math.radians(rng.uniform(-5, 35))
    joints[f'{side}_foot'] = joints[f'{side}_hip'] + leg * np.array(
        [math.cos(b), sign * math.sin(b)])
  lean = math.radians(rng.uniform(-12, 12))
  rot = np.array([[math.cos(lean), -math.sin(lean)], [math.sin(lean), math.cos(lean)]])
  pts = np.stack([joints[n] for n in KEYPOINT_NAMES]) @ rot.T
  return pts, head_r, max(2.0, height * rng.uniform(0.05, 0.07))


def _figure_mask(pts, head_r, width):
  """Draws a figure; returns (bool mask [h, w], joints (y, x) in mask pixels, float)."""
  pad = head_r + width
  lo = pts.min(axis=0) - pad
  local = pts - lo
  h = int(math.ceil(local[:, 0].max() + pad)) + 1
  w = int(math.ceil(local[:, 1].max() + pad)) + 1
  im = Image.new('L', (w, h), 0)
  d = ImageDraw.Draw(im)
  xy = [(float(p[1]), float(p[0])) for p in local]
  neck = ((xy[1][0] + xy[2][0]) / 2, (xy[1][1] + xy[2][1]) / 2)
  pelvis = ((xy[5][0] + xy[6][0]) / 2, (xy[5][1] + xy[6][1]) / 2)
  lw = int(round(width))
  for a, b in ((1, 2), (5, 6), (1, 3), (2, 4), (5, 7), (6, 8)):
    d.line([xy[a], xy[b]], fill=1, width=lw)
  d.line([neck, pelvis], fill=1, width=lw)
  d.line([xy[0], neck], fill=1, width=lw)
  for p in xy[1:]:  # round joints
    r = lw / 2
    d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=1)
  hx, hy = xy[0]
  d.ellipse([hx - head_r, hy - head_r, hx + head_r, hy + head_r], fill=1)
  mask = np.asarray(im, np.uint8) > 0
  ys, xs = np.nonzero(mask)
  y0, x0 = ys.min(), xs.min()
  mask = mask[y0:ys.max() + 1, x0:xs.max() + 1]
  return mask, local - [y0, x0]


def render_example(rng: np.random.Generator, size: int):
  """Draws one image. Returns (uint8 [size, size, 3], list of annotation dicts without ids)."""
  bg = synthetic._background(rng, size, size)  # pylint: disable=protected-access
  canvas = synthetic._Canvas(size, size)  # pylint: disable=protected-access
  placed = []  # (object index, category id, joints (y, x) in image pixels or None)
  wanted = [FIGURE_ID] * int(rng.integers(1, 4)) + [BALL_ID] * int(rng.integers(0, 3))
  rng.shuffle(wanted)
  for cat in wanted:
    for _ in range(30):
      if cat == FIGURE_ID:
        height = math.exp(rng.uniform(math.log(0.25 * size), math.log(0.75 * size)))
        pts, head_r, width = _figure(rng, height)
        mask, joints = _figure_mask(pts, head_r, width)
      else:
        s = int(rng.integers(max(6, size // 16), max(7, size // 4)))
        mask = synthetic._shape_mask(rng, 'ellipse', s, s)  # pylint: disable=protected-access
        joints = None
      oh, ow = mask.shape
      if oh > size or ow > size:
        continue
      y0 = int(rng.integers(0, size - oh + 1))
      x0 = int(rng.integers(0, size - ow + 1))
      avoid = canvas.under_colors(bg, y0, x0, oh, ow, mask)
      if canvas.try_place(mask, y0, x0, max_iou=0.5, min_center_dist=6.0):
        canvas.colors.append(synthetic._pick_color(rng, avoid))  # pylint: disable=protected-access
        placed.append((len(canvas.visible) - 1, cat,
                       None if joints is None else joints + [y0, x0]))
        break
  img = bg.copy()
  owner = canvas.owner
  for k, color in enumerate(canvas.colors):
    img[owner == k] = color
  img += rng.normal(0, rng.uniform(2, 5), img.shape)
  img = np.clip(np.round(img), 0, 255).astype(np.uint8)

  anns = []
  for k, cat, joints in placed:
    vis = owner == k
    ys, xs = np.nonzero(vis)
    if ys.size == 0:
      continue
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    ann = {'category_id': cat,
           'bbox': [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
           'area': float((x1 - x0) * (y1 - y0)) if joints is not None else float(ys.size),
           'iscrowd': 0,
           'segmentation': [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1),
                             float(x0), float(y1)]]}
    if joints is not None:
      flat = []
      for jy, jx in joints:
        py = int(np.clip(math.floor(jy + 0.5), 0, size - 1))
        px = int(np.clip(math.floor(jx + 0.5), 0, size - 1))
        if rng.random() < UNLABELLED_PROB:
          flat += [0.0, 0.0, 0]
          continue
        v = 2 if owner[py, px] == k else 1
        flat += [round(float(jx) + 0.5, 2), round(float(jy) + 0.5, 2), v]
      ann['keypoints'] = flat
      ann['num_keypoints'] = int(sum(1 for v in flat[2::3] if v > 0))
    anns.append(ann)
  return img, anns


def _write_image(i, img_dir, split_code, params):
  """Draws image `i` of a split, writes it as PNG; returns (height, width, annotations)."""
  rng = np.random.default_rng([params['seed'], split_code, i, 77])
  img, anns = render_example(rng, params['image_size'])
  Image.fromarray(img).save(os.path.join(img_dir, f'{i:06d}.png'), format='PNG',
                            compress_level=1)
  return img.shape[0], img.shape[1], anns


def _generate_split(root, split, split_code, num, params):
  img_dir = os.path.join(root, split)
  os.makedirs(img_dir, exist_ok=True)
  images, annotations = [], []
  drawn = synthetic.write_images(_write_image, num, img_dir, split_code, params)
  for i, (h, w, anns) in enumerate(drawn):
    image_id = i + 1
    images.append({'id': image_id, 'file_name': f'{i:06d}.png', 'height': h, 'width': w})
    for a in anns:
      annotations.append(dict(a, id=len(annotations) + 1, image_id=image_id))
  data = {
      'info': {'description': f'centernet_jax synthetic keypoints ({split})',
               'version': str(GENERATOR_VERSION)},
      'licenses': [], 'images': images, 'annotations': annotations,
      'categories': [dict(c) for c in CATEGORIES],
  }
  os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
  with open(os.path.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
    json.dump(data, f)
  return len(images), len(annotations)


def generate_keypoint_dataset(out_dir: str, params: dict[str, Any]) -> dict[str, str]:
  """Writes the set into `out_dir` (empty or absent), marker last."""
  if params['image_size'] < 48:
    raise ValueError(f'synthetic_image_size {params["image_size"]} must be at least 48 for '
                     'the keypoint set')
  os.makedirs(out_dir, exist_ok=True)
  for split, code in _SPLITS:
    num = params['num_train'] if split == 'train' else params['num_val']
    n_img, n_ann = _generate_split(out_dir, split, code, num, params)
    logging.info('synthetic keypoints %s: %d images, %d annotations', split, n_img, n_ann)
  paths = synthetic.dataset_paths(out_dir)
  with open(paths['marker'], 'w') as f:
    json.dump(params, f, sort_keys=True)
  return paths


def ensure_keypoint_dataset(dataset_config) -> dict[str, str]:
  """Generates the set under `dataset.synthetic_dir` unless it is already there (cached,
  locked and atomic like `synthetic.ensure_synthetic_dataset`). Returns its paths."""
  d = getattr(dataset_config, 'dataset', dataset_config)
  root = os.path.abspath(os.path.expanduser(str(d.synthetic_dir)))
  return synthetic.ensure_generated(root, generation_params(d), generate_keypoint_dataset)


def _main(argv):
  del argv
  synthetic.cli_main(ensure_keypoint_dataset, 'synthetic keypoint dataset')


if __name__ == '__main__':
  synthetic.define_cli_flags()
  app.run(_main)
