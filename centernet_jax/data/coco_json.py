"""COCO-format instances JSON + image folder -> host records, and the category label map.

Conventions (docs/conventions.md):
- Records hold boxes **y-first in pixels** of the original image: `[ymin, xmin, ymax, xmax]`,
  converted from COCO's `[x, y, w, h]` here, at the edge.
- Classes are contiguous channels `0..C-1`; `LabelMap` maps COCO category ids <-> channels.

Rules applied while reading:
- `iscrowd` annotations are excluded from the targets (counted in `stats['crowd']`).
- Images without objects are kept.
- Boxes are clipped to the image; boxes with zero or negative area after clipping are dropped
  (counted in `stats['degenerate']`).
- An unknown category id, a missing field, a wrongly typed field or a missing image file raises
  `ValueError` naming the file, the record and the field.
- Image files are checked by an `image_checker` (data/image_check.py: decoded as training
  decodes them, or header only), else their header is opened (PIL `verify`, which for JPEG
  checks only the header); corrupt files and JSON width/height that disagree with the file
  raise unless `skip_bad_images=True`, which skips those images and counts them.
- Duplicate image ids, an image file listed twice, duplicate annotation ids and joint names
  that are not unique strings (or differ from the keypoint spec's) raise; labelled joints
  outside the image are unlabelled and boxes reaching outside it clipped (both counted).
- Paths may be local or on any file system `tf.io.gfile` reads (`gs://...`), see file_io.py.

Keypoints (only when a `KeypointSpec` is given, see keypoint_spec.py): the annotations of the
spec's category carry COCO's `keypoints` list of J (x, y, v) triples in pixels (read from the
annotation itself, or from a second file such as `person_keypoints_*.json` matched by
annotation id). `v = 0` means unlabelled (its x, y are ignored); `v = 1` (labelled, occluded)
and `v = 2` (visible) are both labelled, as in the OD API. Records then hold `keypoints`
float32 [N, J, 3] = (y, x, labelled) in pixels, y-first like the boxes; annotations of other
categories, or without a `keypoints` field, get all J joints unlabelled.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import numpy as np
from PIL import Image

from centernet_jax import file_io

LABEL_MAP_MODES = ('contiguous', 'id_minus_one')


class LabelMap:
  """COCO category id <-> contiguous channel <-> name.

  Modes:
  - 'contiguous': the sorted category ids map to channels 0..N-1 (num_channels = N).
  - 'id_minus_one': channel = id - 1 and num_channels = max id (the TF2 zoo's 90-channel COCO
    layout); channels whose id has no category are unused (`channel_to_id_array` is -1 there).
    `num_channels` may ask for more: the channels past the max id are unused too (a zoo
    model's 90 channels on a set naming only some COCO categories).
  """

  def __init__(self, categories: Iterable[Any], mode: str = 'contiguous',
               num_channels: int | None = None):
    """`categories`: (id, name) pairs or COCO category dicts with 'id' and 'name';
    `num_channels`: None for the mode's own count, else at least it ('id_minus_one') or
    exactly it ('contiguous')."""
    if mode not in LABEL_MAP_MODES:
      raise ValueError(f'label_map_mode must be one of {LABEL_MAP_MODES}, got {mode!r}')
    names = {}
    for cat in categories:
      if isinstance(cat, Mapping):
        cid, name = cat['id'], cat['name']
      else:
        cid, name = cat
      cid = int(cid)
      if cid in names:
        raise ValueError(f'duplicate category id {cid}')
      names[cid] = str(name)
    if not names:
      raise ValueError('a label map needs at least one category')
    self.mode = mode
    self.ids = tuple(sorted(names))
    self._names = names
    if mode == 'contiguous':
      self._id_to_channel = {cid: ch for ch, cid in enumerate(self.ids)}
      self.num_channels = len(self.ids)
    else:
      if self.ids[0] < 1:
        raise ValueError(f"label_map_mode 'id_minus_one' needs ids >= 1, got id {self.ids[0]}")
      self._id_to_channel = {cid: cid - 1 for cid in self.ids}
      self.num_channels = self.ids[-1]
    if num_channels is not None:
      if num_channels < self.num_channels or (mode == 'contiguous' and
                                              num_channels != self.num_channels):
        raise ValueError(f'num_channels {num_channels} does not fit the categories '
                         f'({self.num_channels} channels in mode {mode!r}, ids {list(self.ids)})')
      self.num_channels = int(num_channels)
    arr = np.full([self.num_channels], -1, np.int64)
    for cid, ch in self._id_to_channel.items():
      arr[ch] = cid
    self.channel_to_id_array = arr  # channel -> category id, -1 for unused channels
    self._channel_to_id = {ch: cid for cid, ch in self._id_to_channel.items()}

  @classmethod
  def from_coco_json(cls, annotation_file: str, mode: str = 'contiguous') -> 'LabelMap':
    data = file_io.read_json(annotation_file)
    return cls(_parse_categories(data, annotation_file), mode)

  @property
  def num_categories(self) -> int:
    return len(self.ids)

  def has_id(self, category_id: int) -> bool:
    return int(category_id) in self._id_to_channel

  def id_to_channel(self, category_id: int) -> int:
    try:
      return self._id_to_channel[int(category_id)]
    except KeyError:
      raise ValueError(f'unknown category id {category_id}; known ids: {list(self.ids)}') from None

  def channel_to_id(self, channel: int) -> int:
    try:
      return self._channel_to_id[int(channel)]
    except KeyError:
      raise ValueError(f'channel {channel} has no category (num_channels {self.num_channels}, '
                       f'mode {self.mode!r})') from None

  def id_to_name(self, category_id: int) -> str:
    self.id_to_channel(category_id)  # raises for unknown ids
    return self._names[int(category_id)]

  def channel_to_name(self, channel: int) -> str:
    return self._names[self.channel_to_id(channel)]

  def id_to_channel_array(self) -> np.ndarray:
    """int64 [max_id + 1]: channel of each id, -1 for ids without a category."""
    arr = np.full([self.ids[-1] + 1], -1, np.int64)
    for cid, ch in self._id_to_channel.items():
      arr[cid] = ch
    return arr

  def categories(self) -> list[dict[str, Any]]:
    """COCO-style category dicts, sorted by id."""
    return [{'id': cid, 'name': self._names[cid]} for cid in self.ids]

  def to_json_dict(self) -> dict[str, Any]:
    """JSON-serialisable form (checkpoint meta / label_map.json).

    Per channel: 'names' (f'unused_{channel + 1}' for channels without a category) and
    'category_ids' (-1 for unused); plus 'mode', 'num_channels' and 'categories'.
    """
    ids = [int(i) for i in self.channel_to_id_array]
    names = [self._names[cid] if cid >= 0 else f'unused_{ch + 1}' for ch, cid in enumerate(ids)]
    return {'mode': self.mode, 'num_channels': int(self.num_channels), 'names': names,
            'category_ids': ids, 'categories': self.categories()}

  @classmethod
  def from_json_dict(cls, d: Mapping[str, Any]) -> 'LabelMap':
    """Inverse of `to_json_dict`."""
    try:
      return cls(d['categories'], d['mode'], int(d['num_channels']))
    except ValueError as e:
      raise ValueError(f'label map: {e}') from None

  def __eq__(self, other):
    """Same mode and categories: the data agrees (unused channels past the max id may differ)."""
    return (isinstance(other, LabelMap) and self.mode == other.mode
            and self._names == other._names)

  def __repr__(self):
    return (f'LabelMap(mode={self.mode!r}, num_categories={len(self.ids)}, '
            f'num_channels={self.num_channels})')


@dataclasses.dataclass
class ImageRecord:
  """One image: `boxes` float32 [N, 4] y-first pixels, `classes` int32 [N] channels.

  `keypoints` (only when read with a KeypointSpec): float32 [N, J, 3], (y, x, labelled) in
  pixels per joint; unlabelled joints are (0, 0, 0).
  """
  path: str
  image_id: int
  height: int
  width: int
  boxes: np.ndarray
  classes: np.ndarray
  num_crowd: int = 0  # crowd annotations excluded from this image's targets
  num_degenerate: int = 0  # boxes dropped as empty after clipping
  keypoints: np.ndarray | None = None


@dataclasses.dataclass
class CocoDataset:
  """Records of one annotation file, its label map and the counts of what was skipped."""
  records: list[ImageRecord]
  label_map: LabelMap
  annotation_file: str
  image_dir: str
  # images, images_without_objects, boxes, crowd, degenerate, corrupt_images,
  # size_mismatch_images, annotations_of_skipped_images, clipped (+ keypoint counts)
  stats: dict[str, int]
  # One line per image skipped under skip_bad_images: file, record, field and why.
  skipped_images: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Validation helpers.


def _is_int(v) -> bool:
  if isinstance(v, bool):
    return False
  if isinstance(v, (int, np.integer)):
    return True
  return isinstance(v, float) and math.isfinite(v) and v == int(v)


def _is_number(v) -> bool:
  return (not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
          and math.isfinite(float(v)))


def _short(v, limit=80) -> str:
  s = repr(v)
  return s if len(s) <= limit else s[:limit] + '...'


class _Ctx:
  """Builds error messages 'file: record: field ...'."""

  def __init__(self, fname: str):
    self.fname = fname

  def error(self, record: str, message: str) -> ValueError:
    return ValueError(f'{self.fname}: {record}: {message}')

  def get(self, obj, field, record, kind):
    if not isinstance(obj, Mapping):
      raise self.error(record, f'must be a JSON object, got {_short(obj)}')
    if field not in obj:
      raise self.error(record, f"missing field '{field}'")
    v = obj[field]
    if kind == 'int' and not _is_int(v):
      raise self.error(record, f"field '{field}' must be an integer, got {_short(v)}")
    if kind == 'pos_int' and (not _is_int(v) or v <= 0):
      raise self.error(record, f"field '{field}' must be a positive integer, got {_short(v)}")
    if kind == 'str' and not isinstance(v, str):
      raise self.error(record, f"field '{field}' must be a string, got {_short(v)}")
    return int(v) if kind in ('int', 'pos_int') else v


def _parse_categories(data, fname) -> list[tuple[int, str]]:
  ctx = _Ctx(fname)
  if not isinstance(data, Mapping):
    raise ValueError(f'{fname}: top level must be a JSON object, got {type(data).__name__}')
  if 'categories' not in data:
    raise ValueError(f"{fname}: missing top-level field 'categories'")
  cats = data['categories']
  if not isinstance(cats, list) or not cats:
    raise ValueError(f"{fname}: field 'categories' must be a non-empty list")
  out, seen = [], set()
  for i, c in enumerate(cats):
    rec = f'category (index {i})'
    cid = ctx.get(c, 'id', rec, 'int')
    rec = f'category id {cid} (index {i})'
    name = ctx.get(c, 'name', rec, 'str')
    if cid in seen:
      raise ctx.error(rec, f"duplicate category field 'id' {cid}")
    seen.add(cid)
    if c.get('keypoints'):
      _check_joint_definition(ctx, rec, c)
    out.append((cid, name))
  return out


def _check_joint_definition(ctx, rec, category):
  """'keypoints': unique non-empty strings; 'skeleton': pairs of 1-based joint numbers."""
  names = category['keypoints']
  if not isinstance(names, list):
    raise ctx.error(rec, f"field 'keypoints' must be a list of joint names, got {_short(names)}")
  for j, n in enumerate(names):
    if not isinstance(n, str) or not n:
      raise ctx.error(rec, f"field 'keypoints': joint {j} must be a non-empty string, got "
                      f'{_short(n)}')
  dup = [n for n, k in collections.Counter(names).items() if k > 1]
  if dup:
    raise ctx.error(rec, f"field 'keypoints' names joint {dup[0]!r} {names.count(dup[0])} "
                    'times; joint names must be unique')
  skeleton = category.get('skeleton') or []
  if not isinstance(skeleton, list):
    raise ctx.error(rec, f"field 'skeleton' must be a list of pairs, got {_short(skeleton)}")
  for pair in skeleton:
    if (not isinstance(pair, (list, tuple)) or len(pair) != 2
        or not all(_is_int(v) and 1 <= v <= len(names) for v in pair)):
      raise ctx.error(rec, f"field 'skeleton': pair {_short(pair)} must be two joint numbers "
                      f'in 1..{len(names)}')


def check_same_joints(fname: str, categories: Sequence[Mapping[str, Any]], keypoint_spec,
                      source: str = 'the keypoint definition') -> None:
  """Raises unless the spec's category in `categories` (of `fname`) names the spec's joints
  in the spec's order; a file without that category, or with no 'keypoints' list on it, is
  accepted (its annotations then carry no joints)."""
  for i, c in enumerate(categories):
    if not isinstance(c, Mapping) or c.get('id') != keypoint_spec.category_id:
      continue
    names = c.get('keypoints')
    if not names:
      return
    if list(names) != list(keypoint_spec.names):
      diff = next((j for j, (a, b) in enumerate(zip(names, keypoint_spec.names)) if a != b),
                  min(len(names), len(keypoint_spec.names)))
      raise ValueError(
          f"{fname}: category id {c['id']} (index {i}): field 'keypoints' lists "
          f'{len(names)} joints {_short(list(names), 200)} but {source} has '
          f'{len(keypoint_spec.names)} {_short(list(keypoint_spec.names), 200)} (first '
          f'difference at joint {diff}); both splits must name the same joints in the same '
          'order')
    return


def read_categories(annotation_file: str) -> list[dict[str, Any]]:
  """The raw category dicts of a COCO JSON (with 'keypoints' / 'skeleton' when present)."""
  data = file_io.read_json(annotation_file)
  _parse_categories(data, annotation_file)  # validates ids and names
  return [dict(c) for c in data['categories']]


def _parse_keypoints(ctx, rec, value, num_keypoints):
  """COCO [x1, y1, v1, ...] -> float32 [J, 3] (y, x, labelled); raises on a malformed list."""
  if (not isinstance(value, (list, tuple)) or len(value) != 3 * num_keypoints
      or not all(_is_number(v) for v in value)):
    raise ctx.error(rec, f"field 'keypoints' must be {3 * num_keypoints} numbers "
                    f'({num_keypoints} x, y, v triples), got {_short(value)}')
  arr = np.asarray(value, np.float64).reshape(num_keypoints, 3)
  vis = arr[:, 2]
  if not np.all(np.isin(vis, (0, 1, 2))):
    raise ctx.error(rec, f"field 'keypoints': visibility flags must be 0, 1 or 2, got "
                    f'{_short(vis.tolist())}')
  labelled = vis > 0
  out = np.zeros((num_keypoints, 3), np.float32)
  out[:, 0] = np.where(labelled, arr[:, 1], 0.0)
  out[:, 1] = np.where(labelled, arr[:, 0], 0.0)
  out[:, 2] = labelled
  return out


def _keypoints_by_annotation_id(keypoint_file: str, category_id: int, keypoint_spec=None,
                                require_evaluation_fields: bool = False) -> dict[int, Any]:
  """annotation id -> raw 'keypoints' list of a keypoint JSON (e.g. person_keypoints_*.json).

  Validates what evaluation reads from the file too: its categories (the joints must be the
  spec's), unique annotation ids, image ids of its own images and, with
  `require_evaluation_fields`, each annotation's 'area' and 'iscrowd'.
  """
  ctx = _Ctx(keypoint_file)
  try:
    data = file_io.read_json(keypoint_file)
  except ValueError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # OSError and tf.errors alike
    raise ValueError(f'{keypoint_file}: cannot read keypoint annotations: {e}') from e
  _parse_categories(data, keypoint_file)
  if keypoint_spec is not None:
    check_same_joints(keypoint_file, data['categories'], keypoint_spec)
  annotations = data.get('annotations', [])
  if not isinstance(annotations, list):
    raise ValueError(f"{keypoint_file}: field 'annotations' must be a list")
  image_ids = None
  if isinstance(data.get('images'), list):
    image_ids = {im.get('id') for im in data['images'] if isinstance(im, Mapping)}
  out, first_index = {}, {}
  for i, ann in enumerate(annotations):
    rec = f'annotation (index {i})'
    aid = ctx.get(ann, 'id', rec, 'int')
    rec = f'annotation id {aid} (index {i})'
    if aid in first_index:
      raise ctx.error(rec, f"duplicate annotation field 'id' {aid} (also at index "
                      f'{first_index[aid]})')
    first_index[aid] = i
    iid = ctx.get(ann, 'image_id', rec, 'int')
    if image_ids is not None and iid not in image_ids:
      raise ctx.error(rec, f"field 'image_id' {iid} is not an image in 'images'")
    if require_evaluation_fields:
      _check_evaluation_fields(ctx, rec, ann)
    if ann.get('category_id') == category_id and 'keypoints' in ann:
      out[aid] = ann['keypoints']
  return out


def _check_evaluation_fields(ctx, rec, ann):
  """The fields pycocotools' COCOeval reads from a ground-truth annotation."""
  ctx.get(ann, 'id', rec, 'int')
  area = ctx.get(ann, 'area', rec, None)
  if not _is_number(area) or area < 0:
    raise ctx.error(rec, f"field 'area' must be a number >= 0, got {_short(area)}")
  crowd = ctx.get(ann, 'iscrowd', rec, None)
  if crowd not in (0, 1) or not isinstance(crowd, (bool, int)):
    raise ctx.error(rec, f"field 'iscrowd' must be 0 or 1, got {_short(crowd)}")


# ---------------------------------------------------------------------------------------------
# Image checks.


def check_image_file(path: str) -> tuple[int, int]:
  """Opens the header (and PIL-verifies) an image; returns (height, width). Raises on failure."""
  with file_io.open_file(path, 'rb') as f, Image.open(f) as im:
    width, height = im.size
    im.verify()
  return int(height), int(width)


def _check_images(items, num_threads=16):
  """items: list of (path); returns list of (hw or None, error or None)."""

  def one(path):
    try:
      return check_image_file(path), None
    except Exception as e:  # pylint: disable=broad-except
      return None, f'{type(e).__name__}: {e}'

  if len(items) <= 8:
    return [one(p) for p in items]
  with concurrent.futures.ThreadPoolExecutor(num_threads) as ex:
    return list(ex.map(one, items))


# ---------------------------------------------------------------------------------------------
# Reader.


def load_coco_json(annotation_file: str,
                   image_dir: str,
                   *,
                   label_map_mode: str = 'contiguous',
                   label_map: LabelMap | None = None,
                   check_images: bool | str = True,
                   skip_bad_images: bool = False,
                   keypoint_spec: Any = None,
                   keypoint_annotations: str | None = None,
                   image_checker: Callable[[list[str]], list[tuple[Any, Any]]] | None = None,
                   require_evaluation_fields: bool = False) -> CocoDataset:
  """Reads a COCO instances JSON and its image folder into `CocoDataset` host records.

  Args:
    annotation_file: path of the instances JSON.
    image_dir: folder holding the images (`file_name` is relative to it); None: there are no
      image files to check (the val JSON of a 'tfds' source: only its records are read).
    label_map_mode: 'contiguous' or 'id_minus_one', used when `label_map` is None.
    label_map: a fixed map (e.g. the train set's) to use instead of this file's categories;
      an annotation whose category id is not in it is an error.
    check_images: check every image file (False or 'none': only that it exists): with
      `image_checker` when given (image_check.py: decoding it as training does), else by
      opening its header (PIL); either checks the JSON's width/height too.
    skip_bad_images: skip (and count) corrupt / mismatched images instead of raising.
    keypoint_spec: a `keypoint_spec.KeypointSpec`: read the joints of its category into
      `ImageRecord.keypoints` (None: no keypoints, records as before).
    keypoint_annotations: optional second JSON whose annotations (matched by 'id') hold the
      'keypoints' of this file's annotations (COCO's person_keypoints_*.json).
    image_checker: paths -> [((height, width) or None, error message or None)], in order.
    require_evaluation_fields: the file is COCOeval's ground truth (the val split): every
      annotation needs 'id', 'area' and 'iscrowd' (pycocotools reads them).

  Beyond the per-field checks, these are errors: two images with the same 'id' or the same
  'file_name', two annotations with the same 'id', and keypoint joints that differ from the
  spec's. Labelled joints outside the image are unlabelled and counted
  (`stats['keypoints_outside_image']`); boxes reaching outside the image are clipped and
  counted (`stats['clipped']`).

  Returns:
    CocoDataset with records in the JSON's image order.
  """
  fname = str(annotation_file)
  ctx = _Ctx(fname)
  if not file_io.exists(fname):
    raise ValueError(f'{fname}: annotation file does not exist')
  data = file_io.read_json(fname)  # raises naming the file

  categories = _parse_categories(data, fname)
  if keypoint_spec is not None:
    check_same_joints(fname, data['categories'], keypoint_spec)
  if label_map is None:
    label_map = LabelMap(categories, label_map_mode)

  if 'images' not in data:
    raise ValueError(f"{fname}: missing top-level field 'images'")
  images = data['images']
  if not isinstance(images, list):
    raise ValueError(f"{fname}: field 'images' must be a list")
  annotations = data.get('annotations', [])
  if not isinstance(annotations, list):
    raise ValueError(f"{fname}: field 'annotations' must be a list")

  # Images.
  img_info = {}
  order = []
  by_file_name = {}
  for i, im in enumerate(images):
    rec = f'image (index {i})'
    iid = ctx.get(im, 'id', rec, 'int')
    rec = f'image id {iid} (index {i})'
    if iid in img_info:
      raise ctx.error(rec, f"duplicate image field 'id' {iid} (also {img_info[iid][3]})")
    file_name = ctx.get(im, 'file_name', rec, 'str')
    if file_name in by_file_name:
      # A second record of the same file would become a second, unannotated copy of it.
      raise ctx.error(rec, f"field 'file_name' {file_name!r} is already "
                      f'{by_file_name[file_name]}; an image may be listed only once')
    by_file_name[file_name] = rec
    width = ctx.get(im, 'width', rec, 'pos_int')
    height = ctx.get(im, 'height', rec, 'pos_int')
    path = file_io.join(image_dir, file_name) if image_dir is not None else file_name
    img_info[iid] = (path, height, width, rec)
    order.append(iid)

  # Annotations.
  boxes = collections.defaultdict(list)
  classes = collections.defaultdict(list)
  keypoints = collections.defaultdict(list)
  num_joints = keypoint_spec.num_keypoints if keypoint_spec is not None else 0
  external_kps = None
  if keypoint_spec is not None and keypoint_annotations:
    external_kps = _keypoints_by_annotation_id(
        keypoint_annotations, keypoint_spec.category_id, keypoint_spec,
        require_evaluation_fields=require_evaluation_fields)
  n_kp_labelled = n_kp_instances = n_kp_outside = n_clipped = 0
  n_crowd = collections.Counter()
  n_degen = collections.Counter()
  ann_index = {}
  for i, ann in enumerate(annotations):
    rec = f'annotation (index {i})'
    if isinstance(ann, Mapping) and 'id' in ann:
      rec = f'annotation id {ann["id"]} (index {i})'
      aid = ctx.get(ann, 'id', rec, 'int')
      if aid in ann_index:
        # COCOeval indexes annotations by id: a repeated id silently corrupts the metrics.
        raise ctx.error(rec, f"duplicate annotation field 'id' {aid} (also at index "
                        f'{ann_index[aid]})')
      ann_index[aid] = i
    if require_evaluation_fields:
      _check_evaluation_fields(ctx, rec, ann)
    iid = ctx.get(ann, 'image_id', rec, 'int')
    if iid not in img_info:
      raise ctx.error(rec, f"field 'image_id' {iid} is not an image in 'images'")
    cid = ctx.get(ann, 'category_id', rec, 'int')
    if not label_map.has_id(cid):
      raise ctx.error(rec, f"field 'category_id' {cid} is not a known category id "
                      f'(known: {list(label_map.ids)})')
    bbox = ctx.get(ann, 'bbox', rec, None)
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
        or not all(_is_number(v) for v in bbox)):
      raise ctx.error(rec, f"field 'bbox' must be 4 numbers, got {_short(bbox)}")
    crowd = ann.get('iscrowd', 0)
    if crowd not in (0, 1) or (not isinstance(crowd, (bool, int))):
      raise ctx.error(rec, f"field 'iscrowd' must be 0 or 1, got {_short(crowd)}")
    if crowd:
      n_crowd[iid] += 1
      continue
    _, height, width, _ = img_info[iid]
    x, y, w, h = (float(v) for v in bbox)
    ymin, xmin = max(0.0, y), max(0.0, x)
    ymax, xmax = min(float(height), y + h), min(float(width), x + w)
    if ymax <= ymin or xmax <= xmin:
      n_degen[iid] += 1
      continue
    if (ymin - y > 1.0 or xmin - x > 1.0 or (y + h) - ymax > 1.0 or (x + w) - xmax > 1.0):
      n_clipped += 1
      if n_clipped == 1:
        logging.warning('%s: %s: field \'bbox\' %s reaches more than a pixel outside the '
                        '%dx%d image; clipped (further ones are counted)', fname, rec,
                        _short(bbox), height, width)
    boxes[iid].append((ymin, xmin, ymax, xmax))
    classes[iid].append(label_map.id_to_channel(cid))
    if keypoint_spec is not None:
      raw = None
      if cid == keypoint_spec.category_id:
        if external_kps is not None:
          raw = external_kps.get(ann.get('id'))
        elif 'keypoints' in ann:
          raw = ann['keypoints']
      if raw is None:
        kp = np.zeros((num_joints, 3), np.float32)
      else:
        kp = _parse_keypoints(ctx, rec, raw, num_joints)
        # Joints more than a pixel outside the image are annotation errors: unlabelled.
        outside = (kp[:, 2] > 0) & ((kp[:, 0] < -1.0) | (kp[:, 0] > height + 1.0)
                                    | (kp[:, 1] < -1.0) | (kp[:, 1] > width + 1.0))
        if outside.any():
          if n_kp_outside == 0:
            j = int(np.argmax(outside))
            logging.warning("%s: %s: field 'keypoints': joint %d (%s) at x=%g y=%g is outside "
                            'the %dx%d image; unlabelled (further ones are counted)', fname,
                            rec, j, keypoint_spec.names[j], kp[j, 1], kp[j, 0], height, width)
          n_kp_outside += int(outside.sum())
          kp[outside] = 0.0
        n_kp_instances += 1
        n_kp_labelled += int(kp[:, 2].sum())
      keypoints[iid].append(kp)

  # Image files.
  paths = [img_info[iid][0] for iid in order]
  missing_paths = set(file_io.missing_files(paths)) if image_dir is not None else set()
  missing = [(iid, p) for iid, p in zip(order, paths) if p in missing_paths]
  if missing:
    iid, p = missing[0]
    raise ValueError(f'{fname}: {img_info[iid][3]}: image file {p!r} (field \'file_name\') does '
                     f'not exist ({len(missing)} missing in total)')
  bad = {}
  n_corrupt = n_mismatch = 0
  if check_images not in (False, 'none') and image_dir is not None:
    results = image_checker(paths) if image_checker is not None else _check_images(paths)
    for iid, p, (hw, err) in zip(order, paths, results):
      _, height, width, rec = img_info[iid]
      if err is not None:
        msg = f'{fname}: {rec}: image file {p!r} cannot be read ({err})'
        n_corrupt += 1
      elif hw != (height, width):
        field = 'height' if hw[0] != height else 'width'
        msg = (f"{fname}: {rec}: field '{field}' disagrees with image file {p!r}: JSON says "
               f'height={height} width={width}, the file is height={hw[0]} width={hw[1]}')
        n_mismatch += 1
      else:
        continue
      if not skip_bad_images:
        raise ValueError(msg)
      logging.warning('skipping bad image: %s', msg)
      bad[iid] = msg

  records = []
  n_boxes = n_empty = skipped_anns = 0
  for iid in order:
    path, height, width, _ = img_info[iid]
    if iid in bad:
      skipped_anns += len(boxes[iid])
      continue
    b = np.asarray(boxes[iid], np.float32).reshape(-1, 4)
    c = np.asarray(classes[iid], np.int32).reshape(-1)
    kp = None
    if keypoint_spec is not None:
      kp = np.asarray(keypoints[iid], np.float32).reshape(-1, num_joints, 3)
    n_boxes += len(b)
    n_empty += int(len(b) == 0)
    records.append(ImageRecord(path=path, image_id=iid, height=height, width=width, boxes=b,
                               classes=c, num_crowd=n_crowd[iid], num_degenerate=n_degen[iid],
                               keypoints=kp))
  stats = {
      'images': len(records),
      'images_without_objects': n_empty,
      'boxes': n_boxes,
      'crowd': sum(n_crowd.values()),
      'degenerate': sum(n_degen.values()),
      'corrupt_images': n_corrupt,
      'size_mismatch_images': n_mismatch,
      'annotations_of_skipped_images': skipped_anns,
      'clipped': n_clipped,
  }
  if keypoint_spec is not None:
    stats['keypoint_instances'] = n_kp_instances
    stats['keypoints_labelled'] = n_kp_labelled
    stats['keypoints_outside_image'] = n_kp_outside
  logging.info(
      '%s: %d images (%d without objects), %d boxes, %d crowd annotations excluded, '
      '%d degenerate boxes dropped, %d boxes clipped by more than a pixel, %d corrupt and %d '
      'size-mismatched images skipped; %d categories -> %d channels (%s)', fname,
      stats['images'], stats['images_without_objects'], stats['boxes'], stats['crowd'],
      stats['degenerate'], n_clipped, n_corrupt, n_mismatch, label_map.num_categories, label_map.num_channels, label_map.mode)
  return CocoDataset(records=records, label_map=label_map, annotation_file=fname,
                     image_dir=str(image_dir), stats=stats, skipped_images=list(bad.values()))


def records_summary(records: Sequence[ImageRecord]) -> str:
  n = sum(len(r.boxes) for r in records)
  return f'{len(records)} images, {n} boxes'
