"""What the file-backed sources share: a COCO instances JSON plus an image folder per split.

Subclasses only say where the files are (`split_paths`). Records are read and checked once
(`load_split`, at start-up) and random-accessed by index through a `RecordTable`; the training
order is `stream.shuffled_index` of the global position, so it is a pure function of
(config.seed, position).
"""

from __future__ import annotations

import abc
import functools

from absl import logging
import numpy as np
import tensorflow as tf

from centernet_jax.data import coco_json
from centernet_jax.data import image_check
from centernet_jax.data import stream
from centernet_jax.data.sources import base
from centernet_jax.data.sources import record_table


def _num_parallel_calls(config):
  n = int(config.dataset.num_parallel_calls)
  return tf.data.AUTOTUNE if n <= 0 else n


class FileSource(base.Source):
  """A COCO-format set on files (see the module docstring)."""

  @abc.abstractmethod
  def split_paths(self, split: str) -> tuple[str, str]:
    """(annotation JSON, image folder) of `split`; ('', '') when the config names none."""

  def facts(self) -> base.DatasetFacts:
    d = self.config.dataset
    ann = {s: '' for s in base.SPLITS}
    img = dict(ann)
    for split in base.SPLITS:
      ann[split], img[split] = self.split_paths(split)
    # The label map comes from the val annotations (the train ones when there is no val file).
    label_map_file = ann['val'] or ann['train']
    if not label_map_file:
      raise ValueError(f'dataset.source={d.source!r} needs dataset.val_annotations or '
                       'dataset.train_annotations')
    categories = coco_json.read_categories(label_map_file)
    label_map = coco_json.LabelMap(categories, d.label_map_mode)
    num_classes = int(self.config.model.num_classes)
    if d.label_map_mode == 'id_minus_one' and num_classes > label_map.num_channels:
      # A model in the zoo's layout keeps its channels on a set naming only some of its
      # categories (a zoo model evaluated on a COCO subset): channels past the max id are
      # unused, like the gaps between ids.
      label_map = coco_json.LabelMap(categories, d.label_map_mode, num_classes)
    kp_files = {s: str(d[f'{s}_keypoint_annotations']) for s in base.SPLITS}
    spec = None
    kp_truth = ''
    if self.config.keypoints.enabled:
      kp_file = kp_files['val'] or kp_files['train']
      if kp_file:
        categories = coco_json.read_categories(kp_file)
      spec = base.keypoint_spec_from_categories(categories, label_map, self.config.keypoints,
                                                kp_file or label_map_file)
      kp_truth = kp_files['val'] or ann['val']
    return base.DatasetFacts(
        source=str(d.source), label_map=label_map, label_map_file=label_map_file,
        keypoint_spec=spec, annotation_files=ann, image_dirs=img,
        keypoint_annotation_files=kp_files, ground_truth_file=ann['val'],
        keypoint_ground_truth_file=kp_truth)

  def load_split(self, facts, split, *, image_check_cache='', write_image_check_cache=True):
    """The split's records, checked as `dataset.check_images` says (image_check.py), with the
    verdicts cached in `image_check_cache` ('' for none). The val split must carry what
    COCOeval reads."""
    ann, img_dir = facts.annotation_paths(split)
    d = self.config.dataset
    lm = facts.label_map
    file_lm = coco_json.LabelMap.from_coco_json(ann, d.label_map_mode)
    if file_lm != lm:
      raise ValueError(f'{ann}: categories differ from those of the label map source '
                       f'{facts.label_map_file} ({lm.categories()} vs {file_lm.categories()})')
    checker = None
    if d.check_images != 'none':
      checker = image_check.ImageChecker(d.check_images, max_pixels=d.max_image_pixels,
                                         cache_file=image_check_cache,
                                         num_threads=d.image_check_threads,
                                         write_cache=write_image_check_cache)
    ds = coco_json.load_coco_json(ann, img_dir, label_map=lm,
                                  check_images=d.check_images,
                                  skip_bad_images=d.skip_bad_images,
                                  keypoint_spec=facts.keypoint_spec,
                                  keypoint_annotations=facts.keypoint_annotation_files[split],
                                  image_checker=checker,
                                  require_evaluation_fields=split == 'val')
    ids = [r.image_id for r in ds.records]
    if ids and (min(ids) < 0 or max(ids) > np.iinfo(np.int32).max):
      raise ValueError(f'{ann}: image ids must fit int32 and be >= 0')
    over = sum(len(r.boxes) > d.max_boxes for r in ds.records)
    if over:
      logging.warning('%s: %d images have more than max_boxes=%d boxes; only the first %d of '
                      'each are used', ann, over, d.max_boxes, d.max_boxes)
    ds.stats['images_over_max_boxes'] = over
    return ds

  def _decoder(self, facts, table: record_table.RecordTable):
    """Record index -> example dict (boxes and joints normalized to the decoded image)."""

    def decode(idx):
      image = table.image(idx)
      boxes, classes, image_id = table.targets(idx)
      shape = tf.shape(image)
      hw = tf.cast(tf.stack([shape[0], shape[1]]), tf.float32)
      example = {'image': image, 'boxes': tf.reshape(boxes, [-1, 4]) / tf.tile(hw, [2]),
                 'classes': classes, 'image_id': image_id}
      return base.split_keypoints(example, table.keypoints_of(idx), facts.num_keypoints,
                                  scale=hw)

    return decode

  def train_stream(self, facts, *, start_step, process_index, process_count, dataset=None):
    c = self.config
    global_batch = int(c.batch_size)
    local = stream.local_batch_size(global_batch, process_count)
    records = (dataset if dataset is not None else self.load_split(facts, 'train')).records
    if not records:
      raise ValueError('the training set has no images')
    table = record_table.RecordTable(records, cache_decoded=c.dataset.cache_decoded,
                                     cache_max_mib=float(c.dataset.cache_max_mib),
                                     num_parallel_calls=_num_parallel_calls(c))
    decode_record = self._decoder(facts, table)

    def decode(j):
      g = stream.global_position(j, local_batch=local, global_batch=global_batch,
                                 process_index=process_index)
      example = decode_record(stream.shuffled_index(c, g, table.size))
      example['position'] = g
      return example

    elements = tf.data.Dataset.range(int(start_step) * local, np.iinfo(np.int64).max)
    return base.Stream(elements, decode)

  def eval_share(self, facts, *, process_index, process_count, dataset=None):
    data = dataset if dataset is not None else self.load_split(facts, 'val')
    limit = int(self.config.eval.num_examples)
    records = data.records[:limit] if limit > 0 else data.records
    total = len(records)
    base_count, extra = divmod(total, process_count)
    start = process_index * base_count + min(process_index, extra)
    count = base_count + (1 if process_index < extra else 0)
    mine = records[start:start + count]
    table = record_table.RecordTable(mine)
    return base.EvalShare(
        elements=tf.data.Dataset.range(count), decode=self._decoder(facts, table), count=count,
        max_count=base_count + (1 if extra else 0), total=total,
        image_ids=[r.image_id for r in mine], all_image_ids=[r.image_id for r in records])


class GeneratedSource(FileSource):
  """A set this project generates under `dataset.synthetic_dir` on first use (`generate`:
  dataset config section -> its paths dict with '<split>_annotations' / '<split>_images')."""

  generate = None  # set by each subclass

  @functools.cached_property
  def _paths(self):
    return type(self).generate(self.config.dataset)

  def split_paths(self, split):
    return self._paths[f'{split}_annotations'], self._paths[f'{split}_images']
