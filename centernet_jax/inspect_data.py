r"""Look at the training data the way the train step sees it, before a long run.

  python -m centernet_jax.inspect_data --config experiments/demo.py --output inspect/ [--num 16]
  python -m centernet_jax.inspect_data --config experiments/demo.py --output inspect/ \
      --config.dataset.source=coco_json --config.dataset.train_annotations=/data/x.json ...

Writes into --output:
- `summary.json` (and the same as a printed table): images, boxes per class, images without
  boxes, boxes excluded or dropped and why (crowd, degenerate after clipping, over max_boxes,
  removed by the augmentation), boxes extending past their image (clipped), box sizes in output
  pixels (those under one output pixel cannot be learned), per-joint keypoint label counts, the
  val set's size, warnings for the classic mistakes (a category without boxes, 0-based ids,
  `[x1, y1, x2, y2]` boxes where COCO's `[x, y, w, h]` is expected, a crop configuration that
  removes most boxes, a keypoint category without skeleton, an empty val set) and the errors
  that stopped a part of the inspection.
- `sheet_NNN.png`: the first --num examples of the training stream (the experiment's own
  pipeline: same seed, same order, same augmentations as step 1 onwards) with their boxes and
  class names, the center heatmap target (max over classes) built by the train step's own
  `train_step.step_targets` (`targets.build_targets`), and for keypoint tasks the joints,
  skeleton and joint heatmap target (`targets.build_keypoint_targets`).

Everything that can be written is written, whatever fails; the exit status is 1 when an error
stopped a part of the inspection (listed under 'errors'), else 0.
"""

from __future__ import annotations

import collections
import json
import math
import os
from typing import Any, Mapping, Sequence

from absl import app, flags, logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from centernet_jax import file_io
from centernet_jax import train_step
from centernet_jax import visualize
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from centernet_jax.data import stream

# Bins of the box size sqrt(h * w) in output pixels; the first one cannot be learned.
SIZE_BINS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, math.inf)
EXAMPLES_PER_SHEET = 8
EXAMPLES_PER_ROW = 2
# A box "extends past its image" beyond this tolerance in pixels (rounding in converters).
PAST_TOLERANCE = 1.0

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment file (get_config()).')
_OUTPUT = flags.DEFINE_string('output', None, 'Folder for summary.json and the sheets.')
_NUM = flags.DEFINE_integer('num', 16, 'Training examples drawn on the sheets.')
_STATS = flags.DEFINE_integer(
    'num_stats', 256, 'Training examples pushed through the augmentation for its statistics '
    '(boxes kept by the crops, box sizes as the train step sees them).')


# ---------------------------------------------------------------------------------------------
# The annotation file as written (before the reader clips, drops or rejects anything).


def check_annotations(data: Mapping[str, Any], label_map_mode: str = 'contiguous',
                      split: str = 'train') -> tuple[dict[str, Any], list[str]]:
  """Counts and warnings from a COCO instances JSON dict of `split`, read leniently.

  Returns ({'images', 'annotations', 'crowd', 'categories', 'annotations_per_category_id',
  'unknown_category_ids', 'boxes_past_image', 'boxes_non_positive', 'boxes_fitting_as_xyxy',
  'annotations_without_image'}, warnings). Boxes are COCO `[x, y, w, h]` in pixels.
  """
  warnings = []
  images = {im.get('id'): im for im in data.get('images') or [] if isinstance(im, Mapping)}
  anns = [a for a in data.get('annotations') or [] if isinstance(a, Mapping)]
  cats = [c for c in data.get('categories') or [] if isinstance(c, Mapping)]
  cat_ids = [c.get('id') for c in cats if isinstance(c.get('id'), int)]
  names = {c.get('id'): str(c.get('name', c.get('id'))) for c in cats}
  per_cat = collections.Counter()
  unknown = collections.Counter()
  crowd = past = non_positive = fits_xyxy = no_image = measured = 0
  for a in anns:
    cid = a.get('category_id')
    if a.get('iscrowd'):
      crowd += 1
      continue
    if cid in names:
      per_cat[cid] += 1
    else:
      unknown[cid] += 1
    im = images.get(a.get('image_id'))
    bbox = a.get('bbox')
    if im is None:
      no_image += 1
      continue
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) for v in bbox)):
      continue
    x, y, w, h = (float(v) for v in bbox)
    width, height = float(im.get('width') or 0), float(im.get('height') or 0)
    measured += 1
    if w <= 0 or h <= 0:
      non_positive += 1
    if x + w > width + PAST_TOLERANCE or y + h > height + PAST_TOLERANCE:
      past += 1
    if x < w <= width + PAST_TOLERANCE and y < h <= height + PAST_TOLERANCE:
      fits_xyxy += 1
  stats = {
      'images': len(images), 'annotations': len(anns), 'crowd': crowd,
      'categories': {str(cid): names[cid] for cid in cat_ids},
      'annotations_per_category_id': {str(cid): per_cat[cid] for cid in cat_ids},
      'unknown_category_ids': {str(k): v for k, v in sorted(unknown.items(), key=str)},
      'boxes_past_image': past, 'boxes_non_positive': non_positive,
      'boxes_fitting_as_xyxy': fits_xyxy, 'annotations_without_image': no_image,
  }

  # 0-based vs 1-based category ids.
  ann_ids = set(per_cat) | set(unknown)
  shifted = {k + 1 for k in unknown if isinstance(k, int)}
  annotations_shifted = bool(shifted) and shifted <= set(cat_ids)
  if unknown:
    if annotations_shifted:
      warnings.append(
          f'{sum(unknown.values())} annotations use category ids {sorted(unknown, key=str)} '
          f"that 'categories' does not have; with 1 added they all would: the annotations look "
          f"0-based (0..N-1) while the categories are 1-based. Add 1 to every 'category_id'.")
    else:
      warnings.append(f'{sum(unknown.values())} annotations use category ids '
                      f"{sorted(unknown, key=str)[:10]} that 'categories' does not have (the "
                      'reader stops on them).')
  if 0 in cat_ids or (0 in ann_ids and not annotations_shifted):
    hint = (' label_map_mode=id_minus_one cannot map id 0 (channel -1).'
            if label_map_mode == 'id_minus_one' else
            ' label_map_mode=contiguous maps them anyway; check that the names still belong to '
            'the ids if the set was converted from 0-based class indices.')
    warnings.append(f'category ids start at 0; COCO ids start at 1.{hint}')

  # A category that exists but has no box.
  for cid in cat_ids:
    if per_cat[cid] == 0:
      consequence = ('the model cannot learn it (and never predicts it)' if split == 'train'
                     else 'its AP is not measured (COCOeval leaves it out of the mean)')
      warnings.append(f"category '{names[cid]}' (id {cid}) has no box in the {split} set: "
                      f'{consequence}.')

  # [x1, y1, x2, y2] given where [x, y, w, h] is expected.
  if measured and past > 0.5 * measured:
    fits = (f'; read as [x1, y1, x2, y2], {fits_xyxy} of them would fit their image'
            if fits_xyxy > 0.9 * measured else '')
    warnings.append(f'{past} of {measured} boxes ({100 * past / measured:.0f}%) extend past '
                    'their image: the boxes look like [x1, y1, x2, y2] where COCO\'s [x, y, '
                    f'width, height] is expected{fits}. They are clipped to the image and train '
                    'wrong targets.')
  elif measured and past > 0.05 * measured:
    warnings.append(f'{past} of {measured} boxes ({100 * past / measured:.0f}%) extend past '
                    'their image and are clipped to it.')
  if measured and non_positive:
    warnings.append(f'{non_positive} boxes have a width or height <= 0 and are dropped.')

  for c in cats:
    if c.get('keypoints') and not c.get('skeleton'):
      warnings.append(f"keypoint category '{c.get('name')}' (id {c.get('id')}) has no "
                      "'skeleton': joints are drawn without limbs (training is not affected).")
  return stats, warnings


# ---------------------------------------------------------------------------------------------
# The records the reader produced.


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
  """Counts of box sizes (output pixels) in `SIZE_BINS`, keyed '[lo, hi)'."""
  counts, _ = np.histogram(np.asarray(sizes, np.float64), bins=np.asarray(SIZE_BINS))
  return {f'[{lo:g}, {hi:g})': int(n) for lo, hi, n in zip(SIZE_BINS[:-1], SIZE_BINS[1:], counts)}


def record_statistics(records: Sequence[Any], class_names: Sequence[str], input_size: int,
                      keypoint_spec=None) -> dict[str, Any]:
  """Per-class counts, box sizes in output pixels and per-joint labels of reader records.

  Sizes are sqrt(h * w) of each box after the keep-aspect resize to `input_size`, divided by
  the output stride 4, i.e. output pixels before any augmentation.
  """
  boxes_per_class = collections.Counter()
  images_per_class = collections.Counter()
  sizes, min_sides = [], []
  for r in records:
    factor = input_size / max(r.height, r.width) / 4.0
    hw = (r.boxes[:, 2:4] - r.boxes[:, 0:2]) * factor if len(r.boxes) else np.zeros([0, 2])
    sizes.extend(np.sqrt(hw[:, 0] * hw[:, 1]).tolist())
    min_sides.extend(hw.min(axis=1).tolist() if len(hw) else [])
    boxes_per_class.update(int(c) for c in r.classes)
    images_per_class.update(set(int(c) for c in r.classes))

  def name(channel):
    return class_names[channel] if 0 <= channel < len(class_names) else f'?{channel}'

  out = {
      'boxes_per_class': {name(c): boxes_per_class[c] for c in range(len(class_names))
                          if not class_names[c].startswith('unused_')},
      'images_per_class': {name(c): images_per_class[c] for c in range(len(class_names))
                           if not class_names[c].startswith('unused_')},
      'box_size_output_pixels': size_histogram(np.asarray(sizes)),
      'boxes_under_one_output_pixel': int(np.sum(np.asarray(min_sides) < 1.0)),
  }
  if keypoint_spec is not None:
    labelled = np.zeros(keypoint_spec.num_keypoints, np.int64)
    instances = without = 0
    for r in records:
      if r.keypoints is None:
        continue
      for kp, cls in zip(r.keypoints, r.classes):
        if int(cls) != keypoint_spec.channel:
          continue
        instances += 1
        labelled += (kp[:, 2] > 0).astype(np.int64)
        without += int(not (kp[:, 2] > 0).any())
    out['keypoints'] = {
        'instances': instances, 'instances_without_labelled_joints': without,
        'labelled_per_joint': {n: int(v) for n, v in zip(keypoint_spec.names, labelled)},
        'skeleton': [list(p) for p in keypoint_spec.skeleton]}
  return out


# ---------------------------------------------------------------------------------------------
# The training stream.


def stream_config(config: ml_collections.ConfigDict, chunk: int) -> ml_collections.ConfigDict:
  """The config whose 1-process stream yields the training examples in `chunk`-sized batches.

  Example g of the stream is a function of (seed, g) only (pipeline.py), so a smaller batch
  gives the same examples in the same order; the decoded-image cache is off, as only a few
  images are read.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  c.batch_size = int(chunk)
  c.dataset.cache_decoded = False
  return c


def make_target_fn(config: ml_collections.ConfigDict, num_classes: int, keypoint_spec=None):
  """Jitted batch -> {'boxes': the train step's box targets, 'keypoints': its keypoint targets
  (with a spec)}, from `train_step.step_targets`, the function the train step itself calls."""

  def fn(batch):
    targets, kp_targets = train_step.step_targets(batch, config, num_classes, keypoint_spec)
    out = {'boxes': targets}
    if kp_targets is not None:
      out['keypoints'] = kp_targets
    return out

  return jax.jit(fn)


def example_panels(batch, targets, b: int, class_names, keypoint_spec, title: str):
  """Panels of example b: boxes (+ joints), center heatmap target (+ joint heatmap target)."""
  size = batch['image'].shape[1]
  image = np.clip(batch['image'][b], 0, 255).astype(np.uint8)
  mask = batch['box_mask'][b] > 0
  kp_args = {}
  if keypoint_spec is not None:
    kp_args = dict(keypoints=batch['keypoints'][b][mask] * size,
                   keypoint_mask=batch['keypoint_mask'][b][mask],
                   skeleton=keypoint_spec.skeleton, keypoint_channel=keypoint_spec.channel,
                   flip_permutation=keypoint_spec.flip_permutation)
  boxes = visualize.draw_ground_truth(image, batch['boxes'][b][mask] * size,
                                      batch['classes'][b][mask], class_names, **kp_args)
  center = np.max(np.asarray(targets['boxes']['heatmap'][b]), axis=-1)
  panels = [visualize.titled(boxes, title),
            visualize.titled(visualize.overlay_heatmap(image, center),
                             'center target (max over classes)')]
  if keypoint_spec is not None:
    joints = np.max(np.asarray(targets['keypoints']['heatmap'][b]), axis=-1)
    panels.append(visualize.titled(visualize.overlay_heatmap(image, joints),
                                   'joint target (max over joints)'))
  return panels


def inspect_stream(config, facts, records, class_names, keypoint_spec, num_draw: int,
                   num_stats: int, output: str) -> tuple[dict[str, Any], list[str], list[str]]:
  """Runs the training stream: (statistics, sheet paths, warnings).

  `records`: the reader's training records, in the pipeline's order, to count the boxes the
  augmentation removes; None (a streamed 'tfds' source): not counted.
  """
  chunk = 16
  total = max(num_draw, num_stats)
  total = int(math.ceil(total / chunk) * chunk)
  c = stream_config(config, chunk)
  target_fn = make_target_fn(c, len(class_names), keypoint_spec)
  batches = pipeline.make_train_iterator(c, facts)
  max_boxes = int(config.dataset.max_boxes)
  source = kept = emptied = 0
  sizes, min_sides, rows, sheets, warnings = [], [], [], [], []
  out_px = int(config.input.size) // 4
  image_fn = jax.jit(lambda b: train_step.step_images(b, c))
  for start in range(0, total, chunk):
    batch = next(batches)
    # The sheets show the images as the model sees them: colour ops applied (on device).
    batch = {**batch, 'image': np.asarray(image_fn(batch))}
    targets = jax.device_get(target_fn(batch))
    for i in range(chunk):
      g = start + i
      n_kept = int(batch['box_mask'][i].sum())
      n_source = n_kept
      if records is not None:
        record = records[int(stream.shuffled_index(c, g, len(records)))]
        n_source = min(len(record.boxes), max_boxes)
      source += n_source
      kept += n_kept
      emptied += int(n_source > 0 and n_kept == 0)
      m = batch['box_mask'][i] > 0
      hw = targets['boxes']['size'][i][m]
      sizes.extend(np.sqrt(np.maximum(hw[:, 0] * hw[:, 1], 0)).tolist())
      min_sides.extend(hw.min(axis=1).tolist() if len(hw) else [])
      if g < num_draw:
        title = f'#{g} image {int(batch["image_id"][i])}: {n_kept} of {n_source} boxes'
        rows.append(example_panels(batch, targets, i, class_names, keypoint_spec, title))
  for s in range(0, len(rows), EXAMPLES_PER_SHEET):
    group = rows[s:s + EXAMPLES_PER_SHEET]
    lines = [sum(group[r:r + EXAMPLES_PER_ROW], []) for r in range(0, len(group),
                                                                   EXAMPLES_PER_ROW)]
    path = os.path.join(output, f'sheet_{s // EXAMPLES_PER_SHEET:03d}.png')
    visualize.compose(lines).save(path, optimize=True)
    sheets.append(path)
  stats = {
      'examples': total, 'boxes_in_source_records': source, 'boxes_after_augmentation': kept,
      'kept_fraction': (kept / source) if source and records is not None else None,
      'examples_losing_every_box': emptied,
      'box_size_output_pixels': size_histogram(np.asarray(sizes)),
      'boxes_under_one_output_pixel': int(np.sum(np.asarray(min_sides) < 1.0)),
      'output_map': [out_px, out_px],
  }
  if records is not None and source and kept < 0.5 * source:
    warnings.append(
        f'the augmentation removes most boxes: {kept} of {source} boxes ({100 * kept / source:.0f}%'
        f') survive in the first {total} training examples, {emptied} examples lose every box. '
        f'Check the crops of input.augmentations ({config.input.augmentations!r}): '
        'random_crop_image area_range / overlap_thresh / random_coef, '
        'random_square_crop_by_scale.')
  return stats, sheets, warnings


# ---------------------------------------------------------------------------------------------
# The whole inspection.


def _plain(value):
  return int(value) if isinstance(value, (int, np.integer)) else value


def _error(errors: list[str], what: str, e: Exception) -> None:
  logging.exception('inspect_data: %s failed', what)
  errors.append(f'{what}: {type(e).__name__}: {e}')


def inspect(config: ml_collections.ConfigDict, output: str, num: int = 16,
            num_stats: int = 256) -> dict[str, Any]:
  """Inspects the training (and val) set of `config`; writes `output`/summary.json and sheets.

  Returns the summary dict (also written). Never raises for bad data: what failed is listed
  under 'errors' and everything else is still computed and written.
  """
  os.makedirs(output, exist_ok=True)
  d = config.dataset
  size = int(config.input.size)
  summary: dict[str, Any] = {
      'dataset': {'source': d.source, 'input_size': size, 'output_map': [size // 4, size // 4],
                  'max_boxes': int(d.max_boxes), 'label_map_mode': d.label_map_mode},
      'warnings': [], 'errors': [], 'sheets': []}
  warnings, errors = summary['warnings'], summary['errors']

  # 0. The dataset's facts: label map, keypoint spec, files (read once, passed down).
  facts, source, class_names, spec = None, sources.for_config(config), None, None
  try:
    facts = source.facts()
    class_names = list(facts.label_map.to_json_dict()['names'])
    spec = facts.keypoint_spec
  except Exception as e:  # pylint: disable=broad-except
    _error(errors, 'reading the categories (label map)', e)
  streamed = facts is not None and not any(facts.annotation_files.values())

  # 1. The annotation files as written.
  for split in ('train', 'val') if facts is not None else ():
    try:
      ann, img_dir = facts.annotation_paths(split)
    except ValueError as e:
      if split == 'train' or streamed:
        summary[f'{split}_annotations'] = {'note': str(e)}
      else:
        warnings.append(f'no val set configured ({e}); training cannot evaluate.')
      continue
    summary['dataset'][f'{split}_annotations'] = ann
    summary['dataset'][f'{split}_images'] = img_dir
    try:
      stats, found = check_annotations(file_io.read_json(ann), d.label_map_mode, split)
      summary[f'{split}_annotations'] = stats
      warnings.extend(f'{split}: {w}' for w in found)
      if split == 'val' and stats['images'] == 0:
        warnings.append(f'val: the val set ({ann}) is empty: evaluation has nothing to score.')
    except Exception as e:  # pylint: disable=broad-except
      _error(errors, f'reading {split} annotations {ann}', e)

  # 2. The records the experiment's reader makes of them.
  records = None
  if class_names is not None and not streamed:
    try:
      train = source.load_split(facts, 'train')
      records = train.records
      summary['train'] = {**{k: _plain(v) for k, v in train.stats.items()},
                          **record_statistics(records, class_names, size, spec)}
    except Exception as e:  # pylint: disable=broad-except
      _error(errors, 'loading the training set with the experiment\'s reader', e)
  if records is not None:
    t = summary['train']
    if not records:
      warnings.append('train: the training set has no images.')
    elif t['boxes'] == 0:
      raw = summary.get('train_annotations', {})
      warnings.append(
          f"train: every box is dropped: {raw.get('annotations', '?')} annotations give 0 "
          f"training boxes ({t.get('crowd', 0)} crowd, {t.get('degenerate', 0)} empty after "
          'clipping to the image); the model has nothing to learn.')
    for name, n in t['boxes_per_class'].items():
      if n == 0 and not any(f"'{name}'" in w and 'no box' in w for w in warnings):
        warnings.append(f"train: class '{name}' has no box after reading: the model cannot "
                        'learn it.')
    if t['boxes'] and t['boxes_under_one_output_pixel'] > 0.1 * t['boxes']:
      warnings.append(f"train: {t['boxes_under_one_output_pixel']} of {t['boxes']} boxes are "
                      'under one output pixel wide or high at input.size='
                      f'{size}: they cannot be learned; raise input.size.')
    if spec is not None and not spec.skeleton and not any('skeleton' in w for w in warnings):
      warnings.append(f"keypoint category '{spec.category_name}' has no skeleton: joints are "
                      'drawn without limbs.')
    if spec is not None and t.get('keypoints', {}).get('instances') == 0:
      warnings.append(f"train: no '{spec.category_name}' instance carries keypoints.")

  # 3. The val set as evaluation reads it.
  if not streamed and 'val_annotations' in summary['dataset']:
    try:
      val = source.load_split(facts, 'val')
      summary['val'] = {k: _plain(v) for k, v in val.stats.items()}
      if not val.records and not any('val set' in w and 'empty' in w for w in warnings):
        warnings.append('val: the val set is empty: evaluation has nothing to score.')
    except Exception as e:  # pylint: disable=broad-except
      _error(errors, 'loading the val set', e)

  # 4. The augmented stream, its targets and the sheets (a streamed source: no records to
  # count against).
  if records or (streamed and class_names is not None):
    try:
      stats, sheets, found = inspect_stream(config, facts, records, class_names, spec, num,
                                            num_stats, output)
      summary['augmented'] = stats
      summary['sheets'] = sheets
      warnings.extend(f'train: {w}' for w in found)
    except Exception as e:  # pylint: disable=broad-except
      _error(errors, 'drawing the training stream', e)

  with open(os.path.join(output, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2, default=str)
  return summary


def format_summary(summary: Mapping[str, Any]) -> str:
  """The summary as a plain-text report (the printed table)."""
  lines = []
  ds = summary['dataset']
  lines.append(f"Dataset: source={ds['source']}, input {ds['input_size']} -> output maps "
               f"{ds['output_map'][0]}x{ds['output_map'][1]}, max_boxes {ds['max_boxes']}")
  for split in ('train', 'val'):
    if f'{split}_annotations' in ds:
      lines.append(f"  {split}: {ds[f'{split}_annotations']} ({ds[f'{split}_images']})")
  raw = summary.get('train_annotations') or {}
  t = summary.get('train')
  if t:
    lines += ['', 'Training set (as the reader keeps it)']
    rows = [('images', t.get('images')), ('images without boxes', t.get('images_without_objects')),
            ('boxes (training targets)', t.get('boxes')),
            ('crowd boxes (excluded, COCOeval ignore regions)', t.get('crowd')),
            ('boxes extending past the image (clipped)', raw.get('boxes_past_image')),
            ('boxes dropped: empty after clipping', t.get('degenerate')),
            ('images with more than max_boxes boxes (extra ones dropped)',
             t.get('images_over_max_boxes')),
            ('boxes under one output pixel (cannot be learned)',
             t.get('boxes_under_one_output_pixel'))]
    rows += [(k.replace('_', ' '), v) for k, v in t.items()
             if k in ('corrupt_images', 'size_mismatch_images', 'annotations_of_skipped_images')
             and v]
    lines += [f'  {k:<60} {v if v is not None else "-":>8}' for k, v in rows]
    lines += ['', f"  {'class':<30} {'boxes':>8} {'images':>8}"]
    for name, n in t['boxes_per_class'].items():
      flag = '   <- no box' if n == 0 else ''
      lines.append(f"  {name:<30} {n:>8} {t['images_per_class'][name]:>8}{flag}")
    lines += ['', '  box size sqrt(h*w) in output pixels (after the resize, before augmentation)']
    lines += [f'    {k:<12} {v:>8}' + ('   <- cannot be learned' if k.startswith('[0,') and v
                                       else '') for k, v in t['box_size_output_pixels'].items()]
    if 'keypoints' in t:
      k = t['keypoints']
      lines += ['', f"  keypoints: {k['instances']} instances, "
                f"{k['instances_without_labelled_joints']} without a labelled joint; "
                f"skeleton: {len(k['skeleton'])} limbs", f"    {'joint':<26} {'labelled':>8}"]
      lines += [f'    {n:<26} {v:>8}' for n, v in k['labelled_per_joint'].items()]
  a = summary.get('augmented')
  if a:
    frac = a['kept_fraction']
    lines += ['', f"Training stream (first {a['examples']} examples, augmented as in training)",
              f"  boxes kept by the augmentation   {a['boxes_after_augmentation']} of "
              f"{a['boxes_in_source_records']}" + (f' ({100 * frac:.0f}%)' if frac is not None
                                                   else ''),
              f"  examples that lose every box     {a['examples_losing_every_box']}",
              f"  boxes under one output pixel     {a['boxes_under_one_output_pixel']}"]
  v = summary.get('val')
  if v:
    lines += ['', f"Val set: {v.get('images')} images, {v.get('boxes')} boxes, "
              f"{v.get('crowd')} crowd"]
  if summary['sheets']:
    lines += ['', 'Sheets: ' + ', '.join(summary['sheets'])]
  if summary['warnings']:
    lines += ['', 'WARNINGS'] + [f'  ! {w}' for w in summary['warnings']]
  if summary['errors']:
    lines += ['', 'ERRORS (the inspection of these parts stopped)']
    lines += [f'  x {e}' for e in summary['errors']]
  if not summary['warnings'] and not summary['errors']:
    lines += ['', 'No warnings.']
  return '\n'.join(lines)


def main(argv):
  del argv
  pipeline.hide_gpus_from_tf()
  summary = inspect(_CONFIG.value, _OUTPUT.value, _NUM.value, _STATS.value)
  print(format_summary(summary))
  print(f'\n(written to {os.path.join(_OUTPUT.value, "summary.json")})')
  return 1 if summary['errors'] else 0


def run():
  flags.mark_flags_as_required(['config', 'output'])
  app.run(main)


if __name__ == '__main__':
  run()
