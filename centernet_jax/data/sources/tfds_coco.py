"""'tfds' with `dataset.tfds_name='coco/2017'`: COCO 2017 images and boxes streamed from TFDS
(data/tfds_coco.py reads them; its docstring says what the order guarantees), evaluated
against the official val JSON (`dataset.val_annotations`)."""

from __future__ import annotations

import tensorflow as tf

from centernet_jax import keypoint_spec as kps
from centernet_jax.data import coco_json
from centernet_jax.data import stream
from centernet_jax.data import tfds_coco
from centernet_jax.data.sources import base


class TfdsCocoSource(base.Source):
  """Streamed TFDS records; no host records (load_split only checks the val ground truth)."""

  def path_fields(self, splits):
    # Without it there is no evaluation ground truth: checked where evaluation needs it.
    return {'dataset.val_annotations': False} if 'val' in splits else {}

  def facts(self) -> base.DatasetFacts:
    d = self.config.dataset
    label_map = self._label_map()
    kp_files = {s: str(d[f'{s}_keypoint_annotations']) for s in base.SPLITS}
    spec = None
    if self.config.keypoints.enabled:
      kp_file = kp_files['val'] or kp_files['train']
      # Without a keypoint file: the person joints of COCO's keypoint files.
      categories = (coco_json.read_categories(kp_file) if kp_file
                    else [kps.coco_person_category()])
      spec = base.keypoint_spec_from_categories(categories, label_map, self.config.keypoints,
                                                kp_file or f'TFDS {d.tfds_name}')
    empty = {s: '' for s in base.SPLITS}
    return base.DatasetFacts(
        source=f'tfds ({d.tfds_name})', label_map=label_map,
        label_map_file=str(d.val_annotations), keypoint_spec=spec, annotation_files=empty,
        image_dirs=empty, keypoint_annotation_files=kp_files,
        ground_truth_file=str(d.val_annotations),
        keypoint_ground_truth_file=kp_files['val'] if spec is not None else '')

  def _label_map(self) -> coco_json.LabelMap:
    """The official categories, or those of `dataset.val_annotations` when set.

    The file may hold a subset of the official categories (e.g. `person_keypoints_val2017.json`
    for a person-only model): objects of the other classes are then dropped from the examples,
    as the OD API drops classes missing from its label map.
    """
    d = self.config.dataset
    if not d.val_annotations:
      return coco_json.LabelMap(tfds_coco.COCO_CATEGORIES, d.label_map_mode)
    lm = coco_json.LabelMap.from_coco_json(d.val_annotations, d.label_map_mode)
    official = dict(tfds_coco.COCO_CATEGORIES)
    if any(official.get(cid) != lm.id_to_name(cid) for cid in lm.ids):
      raise ValueError(f'{d.val_annotations}: categories are not (a subset of) the official 80 '
                       f'COCO categories that TFDS labels map to (ids {list(lm.ids)[:10]}...)')
    return lm

  def load_split(self, facts, split, *, image_check_cache='', write_image_check_cache=True):
    if split == 'val' and facts.ground_truth_file:
      # The images come from TFDS; the JSON is COCOeval's ground truth: check its records.
      coco_json.load_coco_json(facts.ground_truth_file, None,
                               label_map_mode=self.config.dataset.label_map_mode,
                               check_images='none', require_evaluation_fields=True)
    return None

  def _decoder(self, facts):
    def decode(record):
      example = tfds_coco.convert_example(record, facts.label_map)
      keypoints = example.pop('keypoints', None)
      return base.split_keypoints(example, keypoints, facts.num_keypoints)
    return decode

  def train_stream(self, facts, *, start_step, process_index, process_count, dataset=None):
    c = self.config
    global_batch = int(c.batch_size)
    local = stream.local_batch_size(global_batch, process_count)
    records = tfds_coco.train_records(c, tfds_coco.builder_of(c), start_step=start_step,
                                      process_index=process_index, process_count=process_count)
    decode_record = self._decoder(facts)

    def decode(j, record):
      example = decode_record(record)
      example['position'] = stream.global_position(
          j, local_batch=local, global_batch=global_batch, process_index=process_index)
      return example

    return base.Stream(records, decode)

  def eval_share(self, facts, *, process_index, process_count, dataset=None):
    records, count, max_count, total = tfds_coco.eval_records(
        self.config, tfds_coco.builder_of(self.config), process_index=process_index,
        process_count=process_count)
    return base.EvalShare(elements=records, decode=self._decoder(facts), count=count,
                          max_count=max_count, total=total, image_ids=None,
                          all_image_ids=None)
