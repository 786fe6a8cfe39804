"""Deterministic synthetic detection set in COCO layout (numpy + PIL, seeded).

Layout written under `out_dir`:
  train/*.png, val/*.png,
  annotations/instances_train.json, annotations/instances_val.json,
  synthetic_params.json  (marker: the generation parameters; written last)

Content:
- 5 shape classes with NON-contiguous category ids, so the id <-> channel map is always
  exercised: 1 rectangle, 3 ellipse, 7 triangle, 8 cross, 12 ring. Colour is random per object
  and never the class cue; edges are aliased (crisp) so boxes are pixel-tight.
- Object sizes from `min_object_size` px to about half the image (log-uniform), limited
  overlaps (an object never hides more than 20% of an earlier one; boxes and areas are computed
  from the visible pixels, so every `bbox` tightly bounds what is drawn).
- Textured, noisy coloured backgrounds; object colours chosen to contrast with what is under them.
- Images 0-4 of each split are plain square ones. Some images have no objects (index 5 + ~4%
  of those after 8), some `iscrowd: 1` annotations (a region covering a cluster of tiny
  same-class shapes that are not annotated one by one; index 6 + ~6%), some are non-square
  (index 7: 0.75S x S, index 8: S x 0.875S, + ~15%; h x w).
- Image ids are index + 1 within each split; annotation ids count from 1 per split.

Determinism: image `i` of split `s` is drawn from `np.random.default_rng([seed, s, i])`, so the
same parameters always give byte-identical JSON and PNGs.

CLI:
  python -m centernet_jax.data.synthetic --config experiments/demo.py --print_val_images 4
  python -m centernet_jax.data.synthetic --out_dir /tmp/synth
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from typing import Any

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np
from PIL import Image
from PIL import ImageDraw

from centernet_jax import config_base

CATEGORIES = ((1, 'rectangle'), (3, 'ellipse'), (7, 'triangle'), (8, 'cross'), (12, 'ring'))
GENERATOR_VERSION = 2
MARKER_FILE = 'synthetic_params.json'
_SPLITS = (('train', 0), ('val', 1))
_NON_SQUARE = ((0.75, 1.0), (1.0, 0.875), (0.875, 1.0), (1.0, 0.75))


def dataset_paths(root: str) -> dict[str, str]:
  """The paths of a synthetic set rooted at `root`."""
  return {
      'root': root,
      'train_images': os.path.join(root, 'train'),
      'val_images': os.path.join(root, 'val'),
      'train_annotations': os.path.join(root, 'annotations', 'instances_train.json'),
      'val_annotations': os.path.join(root, 'annotations', 'instances_val.json'),
      'marker': os.path.join(root, MARKER_FILE),
  }


def generation_params(dataset_config) -> dict[str, Any]:
  """The parameters that define the set (recorded in the marker file)."""
  d = getattr(dataset_config, 'dataset', dataset_config)
  return {
      'version': GENERATOR_VERSION,
      'num_train': int(d.synthetic_num_train),
      'num_val': int(d.synthetic_num_val),
      'image_size': int(d.synthetic_image_size),
      'min_object_size': int(d.synthetic_min_object_size),
      'seed': int(d.synthetic_seed),
  }


# ---------------------------------------------------------------------------------------------
# Drawing.


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
  """Bilinear upsampling of a small [gh, gw, C] grid to [h, w, C]."""
  gh, gw = grid.shape[:2]
  ys = np.linspace(0, gh - 1, h)
  xs = np.linspace(0, gw - 1, w)
  y0 = np.clip(np.floor(ys).astype(int), 0, gh - 2)
  x0 = np.clip(np.floor(xs).astype(int), 0, gw - 2)
  fy = (ys - y0)[:, None, None]
  fx = (xs - x0)[None, :, None]
  g00 = grid[y0][:, x0]
  g01 = grid[y0][:, x0 + 1]
  g10 = grid[y0 + 1][:, x0]
  g11 = grid[y0 + 1][:, x0 + 1]
  return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """Float [h, w, 3]: a colour gradient + low-frequency blotches + optional stripes."""
  c0 = rng.uniform(0, 255, 3)
  c1 = rng.uniform(0, 255, 3)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  a = rng.uniform(0, 2 * math.pi)
  t = math.cos(a) * xx + math.sin(a) * yy
  t = (t - t.min()) / (np.ptp(t) + 1e-6)
  bg = c0 * (1 - t)[..., None] + c1 * t[..., None]
  bg += _upsample(rng.normal(0, 25, (4, 4, 3)), h, w)
  if rng.random() < 0.4:
    a2 = rng.uniform(0, math.pi)
    period = rng.uniform(4, 16)
    amp = rng.uniform(3, 10)
    phase = 2 * math.pi * (math.cos(a2) * xx + math.sin(a2) * yy) / period
    bg += amp * np.sin(phase)[..., None] * rng.uniform(0.5, 1.0, 3)
  return bg


def _shape_mask(rng: np.random.Generator, name: str, oh: int, ow: int) -> np.ndarray:
  """Boolean [oh, ow] mask of a shape that touches all four sides of its box."""
  if name == 'rectangle':
    return np.ones((oh, ow), bool)
  im = Image.new('L', (ow, oh), 0)
  d = ImageDraw.Draw(im)
  if name == 'ellipse':
    d.ellipse([0, 0, ow - 1, oh - 1], fill=1)
  elif name == 'triangle':
    cx, cy = (ow - 1) / 2, (oh - 1) / 2
    orient = int(rng.integers(4))
    pts = {
        0: [(0, oh - 1), (ow - 1, oh - 1), (cx, 0)],  # apex up
        1: [(0, 0), (ow - 1, 0), (cx, oh - 1)],  # apex down
        2: [(ow - 1, 0), (ow - 1, oh - 1), (0, cy)],  # apex left
        3: [(0, 0), (0, oh - 1), (ow - 1, cy)],  # apex right
    }[orient]
    d.polygon(pts, fill=1)
  elif name == 'cross':
    m = np.zeros((oh, ow), bool)
    t = max(2, int(round(min(oh, ow) * rng.uniform(0.25, 0.4))))
    r0 = (oh - t) // 2
    c0 = (ow - t) // 2
    m[r0:r0 + t, :] = True
    m[:, c0:c0 + t] = True
    return m
  elif name == 'ring':
    d.ellipse([0, 0, ow - 1, oh - 1], fill=1)
    t = max(2, int(round(min(oh, ow) * rng.uniform(0.15, 0.25))))
    if ow - 2 * t >= 2 and oh - 2 * t >= 2:
      d.ellipse([t, t, ow - 1 - t, oh - 1 - t], fill=0)
  else:
    raise ValueError(f'unknown shape {name!r}')
  return np.asarray(im, dtype=np.uint8) > 0


def _rle(mask: np.ndarray) -> dict[str, Any]:
  """Uncompressed COCO RLE (column-major runs, starting with zeros) of a boolean mask."""
  flat = np.asarray(mask, bool).T.ravel()
  change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
  bounds = np.concatenate([[0], change, [flat.size]])
  counts = np.diff(bounds).tolist()
  if flat.size and flat[0]:
    counts = [0] + counts
  return {'counts': [int(c) for c in counts], 'size': [int(mask.shape[0]), int(mask.shape[1])]}


class _Canvas:
  """Tracks which object owns each pixel, to bound occlusion and compute visible boxes."""

  def __init__(self, h, w):
    self.h, self.w = h, w
    self.owner = np.full((h, w), -1, np.int32)
    self.visible = []  # visible pixel count per object
    self.colors = []
    self.boxes = []  # placement boxes (y0, x0, y1, x1), exclusive ends

  def try_place(self, mask, y0, x0, forbidden=None, max_hidden=0.2, max_iou=0.4,
                min_center_dist=4.0):
    oh, ow = mask.shape
    box = (y0, x0, y0 + oh, x0 + ow)
    if forbidden is not None and _intersects(box, forbidden):
      return False
    cy, cx = y0 + oh / 2, x0 + ow / 2
    for b in self.boxes:
      if _iou(box, b) > max_iou:
        return False
      if math.hypot(cy - (b[0] + b[2]) / 2, cx - (b[1] + b[3]) / 2) < min_center_dist:
        return False
    covered = self.owner[y0:y0 + oh, x0:x0 + ow][mask]
    covered = covered[covered >= 0]
    if covered.size:
      counts = np.bincount(covered, minlength=len(self.visible))
      for j in np.flatnonzero(counts):
        if self.visible[j] - counts[j] < (1 - max_hidden) * self.visible[j] or (
            self.visible[j] - counts[j] < 4):
          return False
      for j in np.flatnonzero(counts):
        self.visible[j] -= int(counts[j])
    sub = self.owner[y0:y0 + oh, x0:x0 + ow]
    sub[mask] = len(self.visible)
    self.visible.append(int(mask.sum()))
    self.boxes.append(box)
    return True

  def under_colors(self, bg, y0, x0, oh, ow, mask):
    """Mean background colour under the shape and the colours of the objects it covers."""
    region = bg[y0:y0 + oh, x0:x0 + ow][mask]
    cols = [region.mean(axis=0)]
    covered = self.owner[y0:y0 + oh, x0:x0 + ow][mask]
    for j in np.unique(covered[covered >= 0]):
      cols.append(self.colors[j])
    return cols


def _intersects(a, b):
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _iou(a, b):
  ih = max(0, min(a[2], b[2]) - max(a[0], b[0]))
  iw = max(0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ih * iw
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / max(union, 1)


def _pick_color(rng, avoid, tries=24):
  best, best_d = None, -1.0
  for _ in range(tries):
    c = rng.uniform(0, 255, 3)
    d = min(float(np.linalg.norm(c - a)) for a in avoid)
    if d > best_d:
      best, best_d = c, d
    if d >= 160:
      break
  return best


def _object_size(rng, min_size, h, w, lo=None, hi=None):
  limit = max(min_size, int(0.6 * min(h, w)))
  lo = min_size if lo is None else lo
  hi = max(lo, 0.5 * min(h, w)) if hi is None else hi
  s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
  a = math.exp(rng.uniform(math.log(0.6), math.log(1.0 / 0.6)))
  oh = int(np.clip(round(s / math.sqrt(a)), min_size, limit))
  ow = int(np.clip(round(s * math.sqrt(a)), min_size, limit))
  return oh, ow


def render_example(rng: np.random.Generator, height: int, width: int, min_size: int, *,
                   empty: bool = False, crowd: bool = False):
  """Draws one image. Returns (uint8 [h, w, 3], list of annotation dicts without ids)."""
  bg = _background(rng, height, width)
  canvas = _Canvas(height, width)
  img = bg.copy()
  anns = []
  placements = []  # (object index, mask, y0, x0, category id, is_crowd_member)
  crowd_region = None
  crowd_cat = None
  if crowd and not empty:
    rh = int(rng.integers(int(0.25 * height), int(0.4 * height) + 1))
    rw = int(rng.integers(int(0.25 * width), int(0.4 * width) + 1))
    ry = int(rng.integers(0, height - rh + 1))
    rx = int(rng.integers(0, width - rw + 1))
    crowd_region = (ry, rx, ry + rh, rx + rw)
    crowd_cat, crowd_name = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    for _ in range(int(rng.integers(4, 9))):
      for _ in range(20):
        oh, ow = _object_size(rng, min_size, height, width, lo=min_size, hi=1.5 * min_size)
        oh, ow = min(oh, rh), min(ow, rw)
        y0 = int(rng.integers(ry, ry + rh - oh + 1))
        x0 = int(rng.integers(rx, rx + rw - ow + 1))
        mask = _shape_mask(rng, crowd_name, oh, ow)
        avoid = canvas.under_colors(bg, y0, x0, oh, ow, mask)
        if canvas.try_place(mask, y0, x0, max_iou=0.3, min_center_dist=2.0):
          canvas.colors.append(_pick_color(rng, avoid))
          placements.append((len(canvas.visible) - 1, True, None))
          break
  if not empty:
    for _ in range(int(rng.integers(1, 6))):
      cat_id, name = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
      for _ in range(30):
        oh, ow = _object_size(rng, min_size, height, width)
        y0 = int(rng.integers(0, height - oh + 1))
        x0 = int(rng.integers(0, width - ow + 1))
        mask = _shape_mask(rng, name, oh, ow)
        avoid = canvas.under_colors(bg, y0, x0, oh, ow, mask)
        if canvas.try_place(mask, y0, x0, forbidden=crowd_region):
          canvas.colors.append(_pick_color(rng, avoid))
          placements.append((len(canvas.visible) - 1, False, cat_id))
          break
  owner = canvas.owner
  for k, color in enumerate(canvas.colors):
    img[owner == k] = color
  img += rng.normal(0, rng.uniform(2, 6), img.shape)
  img = np.clip(np.round(img), 0, 255).astype(np.uint8)

  crowd_mask = np.zeros((height, width), bool)
  for k, is_crowd_member, cat_id in placements:
    vis = owner == k
    if is_crowd_member:
      crowd_mask |= vis
      continue
    ys, xs = np.nonzero(vis)
    if ys.size == 0:
      continue
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    anns.append({
        'category_id': int(cat_id),
        'bbox': [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        'area': float(ys.size),
        'iscrowd': 0,
        'segmentation': [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1),
                          float(x0), float(y1)]],
    })
  if crowd_mask.any():
    ys, xs = np.nonzero(crowd_mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    anns.append({
        'category_id': int(crowd_cat),
        'bbox': [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        'area': float(ys.size),
        'iscrowd': 1,
        'segmentation': _rle(crowd_mask),
    })
  return img, anns


def _image_plan(rng, index, image_size):
  """(height, width, empty, crowd) of image `index`."""
  u_empty, u_crowd, u_shape = rng.random(3)
  # Indices 0-4 are plain (the first val images make good demo pictures); 5-8 guarantee the
  # special cases; later ones get them at random.
  empty = index == 5 or (index > 8 and u_empty < 0.04)
  crowd = index == 6 or (index > 8 and not empty and u_crowd < 0.06)
  if index == 7:
    fh, fw = _NON_SQUARE[0]
  elif index == 8:
    fh, fw = _NON_SQUARE[1]
  elif index > 8 and u_shape < 0.15:
    fh, fw = _NON_SQUARE[int(rng.integers(len(_NON_SQUARE)))]
  else:
    fh, fw = 1.0, 1.0
  return int(round(image_size * fh)), int(round(image_size * fw)), empty, crowd


def _write_image(i, img_dir, split_code, params):
  """Draws image `i` of a split, writes it as PNG; returns (height, width, annotations)."""
  rng = np.random.default_rng([params['seed'], split_code, i])
  h, w, empty, crowd = _image_plan(rng, i, params['image_size'])
  img, anns = render_example(rng, h, w, params['min_object_size'], empty=empty, crowd=crowd)
  Image.fromarray(img).save(os.path.join(img_dir, f'{i:06d}.png'), format='PNG',
                            compress_level=1)
  return h, w, anns


# Fewer images than this per extra process and starting the pool's interpreters (about a
# second each) costs more than it saves (drawing one 128x128 image takes ~15 ms).
_IMAGES_PER_PROCESS = 128


def write_images(write_one, num: int, *args, workers: int | None = None) -> list[Any]:
  """`[write_one(i, *args) for i in range(num)]`, over `workers` processes (None: one per
  usable core, fewer for small sets; below 2: in this process).

  Every image draws from its own per-index generator and writes its own file, so which
  process draws it changes no byte of the set; the results come back in index order. The pool
  starts fresh interpreters ('spawn'): the caller may already run JAX or TensorFlow threads,
  which a forked child must not inherit. `write_one` must be a module-level function.
  """
  if workers is None:
    workers = min(len(os.sched_getaffinity(0)), num // _IMAGES_PER_PROCESS)
  if workers < 2:
    return [write_one(i, *args) for i in range(num)]
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context('spawn')) as pool:
    return list(pool.map(write_one, range(num), *[[a] * num for a in args],
                         chunksize=max(1, min(64, num // (4 * workers)))))


def _generate_split(root, split, split_code, num, params):
  img_dir = os.path.join(root, split)
  os.makedirs(img_dir, exist_ok=True)
  images, annotations = [], []
  drawn = write_images(_write_image, num, img_dir, split_code, params)
  for i, (h, w, anns) in enumerate(drawn):
    image_id = i + 1
    images.append({'id': image_id, 'file_name': f'{i:06d}.png', 'height': h, 'width': w})
    for a in anns:
      a = dict(a, id=len(annotations) + 1, image_id=image_id)
      annotations.append(a)
  data = {
      'info': {'description': f'centernet_jax synthetic shapes ({split})',
               'version': str(GENERATOR_VERSION)},
      'licenses': [],
      'images': images,
      'annotations': annotations,
      'categories': [{'id': cid, 'name': name, 'supercategory': 'shape'}
                     for cid, name in CATEGORIES],
  }
  ann_dir = os.path.join(root, 'annotations')
  os.makedirs(ann_dir, exist_ok=True)
  with open(os.path.join(ann_dir, f'instances_{split}.json'), 'w') as f:
    json.dump(data, f)
  return len(images), len(annotations)


def generate_synthetic_dataset(out_dir: str, params: dict[str, Any]) -> dict[str, str]:
  """Writes the set into `out_dir` (which should be empty or absent) without caching logic."""
  if params['image_size'] < 2 * params['min_object_size']:
    raise ValueError(f'synthetic_image_size {params["image_size"]} must be at least twice '
                     f'synthetic_min_object_size {params["min_object_size"]}')
  if params['min_object_size'] < 2:
    raise ValueError('synthetic_min_object_size must be >= 2')
  os.makedirs(out_dir, exist_ok=True)
  for split, code in _SPLITS:
    num = params['num_train'] if split == 'train' else params['num_val']
    n_img, n_ann = _generate_split(out_dir, split, code, num, params)
    logging.info('synthetic %s: %d images, %d annotations', split, n_img, n_ann)
  paths = dataset_paths(out_dir)
  with open(paths['marker'], 'w') as f:
    json.dump(params, f, sort_keys=True)
  return paths


@contextlib.contextmanager
def _file_lock(path):
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _is_current(paths, params) -> bool:
  try:
    with open(paths['marker']) as f:
      recorded = json.load(f)
  except (OSError, ValueError):
    return False
  return recorded == params and all(
      os.path.exists(paths[k])
      for k in ('train_images', 'val_images', 'train_annotations', 'val_annotations'))


def ensure_synthetic_dataset(dataset_config) -> dict[str, str]:
  """Generates the synthetic set under `dataset.synthetic_dir` unless it is already there.

  `dataset_config` is the `config.dataset` section (or the whole config). The marker file
  records the generation parameters; when they differ the set is regenerated. Generation goes
  to a temporary sibling directory that is renamed into place, under a file lock, so concurrent
  callers and interrupted runs never see a half-written set.

  Returns a dict with 'root', 'train_images', 'val_images', 'train_annotations',
  'val_annotations', 'marker'.
  """
  d = getattr(dataset_config, 'dataset', dataset_config)
  root = os.path.abspath(os.path.expanduser(str(d.synthetic_dir)))
  return ensure_generated(root, generation_params(d), generate_synthetic_dataset)


def ensure_generated(root: str, params: dict[str, Any], generate) -> dict[str, str]:
  """Runs `generate(tmp_dir, params)` into `root` unless a set with `params` is there.

  The caching, locking and atomic-rename logic of `ensure_synthetic_dataset`, shared with the
  other embedded generators (synthetic_keypoints.py). `generate` must write the `dataset_paths`
  layout, marker file last.
  """
  paths = dataset_paths(root)
  if _is_current(paths, params):
    return paths
  parent = os.path.dirname(root)
  os.makedirs(parent, exist_ok=True)
  with _file_lock(os.path.join(parent, f'.{os.path.basename(root)}.lock')):
    if _is_current(paths, params):  # another process finished it meanwhile
      return paths
    logging.info('generating synthetic dataset in %s with %s', root, params)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(root)}.tmp-', dir=parent)
    try:
      generate(tmp, params)
      old = None
      if os.path.exists(root):
        old = tempfile.mkdtemp(prefix=f'.{os.path.basename(root)}.old-', dir=parent)
        os.rename(root, os.path.join(old, 'x'))
      os.rename(tmp, root)
      if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  return paths


# ---------------------------------------------------------------------------------------------
# CLI.


def cli_main(ensure_fn, what: str):
  """The body of `python -m <generator module>`: generate (or find) the set of
  `--config` / `--out_dir` with `ensure_fn(dataset_config) -> paths`, and print the first
  `--print_val_images` val image paths on one line (what `make demo` draws)."""
  f = flags.FLAGS
  if f.config is not None:
    dataset = f.config.dataset
  elif f.out_dir:
    dataset = config_base.base_config().dataset
  else:
    raise SystemExit('give --config or --out_dir')
  if f.out_dir:
    dataset = dataset.copy_and_resolve_references()
    dataset.synthetic_dir = f.out_dir
  paths = ensure_fn(dataset)
  logging.info('%s ready at %s', what, paths['root'])
  if f.print_val_images > 0:
    with open(paths['val_annotations']) as fh:
      images = json.load(fh)['images']
    sel = [os.path.join(paths['val_images'], im['file_name'])
           for im in images[:f.print_val_images]]
    sys.stdout.write(','.join(sel) + '\n')
    sys.stdout.flush()


def _main(argv):
  del argv
  cli_main(ensure_synthetic_dataset, 'synthetic dataset')


def define_cli_flags():
  config_flags.DEFINE_config_file('config', None, 'experiment config file', lock_config=False)
  flags.DEFINE_string('out_dir', '', 'generate here (overrides config.dataset.synthetic_dir)')
  flags.DEFINE_integer('print_val_images', 0,
                       'print the first N val image paths, comma-separated, on one line')


if __name__ == '__main__':
  define_cli_flags()
  app.run(_main)
