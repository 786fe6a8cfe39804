"""What every data source provides: the dataset's facts, its records, its decoded examples.

`DatasetFacts` is resolved once per run (`sources.resolve(config)`) and passed down to the
pipeline, the model builder, evaluation and the label map written next to the checkpoints.

A `Source` (one class per module of this package, chosen by `sources.for_config`) gives
  path_fields(splits)             the config fields naming its files (start-up check);
  facts()                         the DatasetFacts;
  load_split(facts, split, ...)   the split's host records (file-backed sources; checked at
                                  start-up), None for a streamed source;
  train_stream(facts, ...)        a `Stream`: raw elements and `decode` (element -> example);
  eval_share(facts, ...)          an `EvalShare`: this process's val elements and `decode`.
Decoded examples are the dicts of augment.py: image uint8 [H, W, 3]; boxes float32 [N, 4]
y-first normalized to the image; classes int32 [N]; image_id int32; with a keypoint spec also
keypoints float32 [N, J, 2] (y, x) normalized and keypoint_mask float32 [N, J]; training
examples also carry position int64 (the global stream position, for the augmentation seed).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Mapping

import ml_collections
import tensorflow as tf

from centernet_jax import keypoint_spec as kps
from centernet_jax.data import coco_json

SPLITS = ('train', 'val')


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
  """The dataset of a run, resolved once.

  Attributes:
    source: `config.dataset.source` (+ the TFDS name for TFDS sources), for messages.
    label_map: COCO category ids <-> channels <-> names.
    label_map_file: the file the label map was read from ('' for the official COCO table).
    keypoint_spec: the keypoint task when `config.keypoints.enabled`, else None.
    annotation_files: split -> instances JSON of the file-backed sources ('' when not set).
    image_dirs: split -> image folder ('' when not set).
    keypoint_annotation_files: split -> separate keypoint JSON ('' when the keypoints are in
      the annotation file).
    ground_truth_file: the val JSON that COCOeval reads ('' when there is none).
    keypoint_ground_truth_file: the val JSON with the keypoint ground truth for OKS ('' when
      keypoints are off or there is none).
  """
  source: str
  label_map: coco_json.LabelMap
  label_map_file: str
  keypoint_spec: kps.KeypointSpec | None
  annotation_files: Mapping[str, str]
  image_dirs: Mapping[str, str]
  keypoint_annotation_files: Mapping[str, str]
  ground_truth_file: str
  keypoint_ground_truth_file: str

  @property
  def num_classes(self) -> int:
    """Class channels of the model (label_map.num_channels)."""
    return self.label_map.num_channels

  @property
  def num_keypoints(self) -> int:
    return self.keypoint_spec.num_keypoints if self.keypoint_spec is not None else 0

  def label_map_info(self) -> dict[str, Any]:
    """What label_map.json and the checkpoint meta hold: the label map, plus 'keypoints'."""
    info = self.label_map.to_json_dict()
    if self.keypoint_spec is not None:
      info['keypoints'] = self.keypoint_spec.to_json_dict()
    return info

  def annotation_paths(self, split: str) -> tuple[str, str]:
    """(annotation JSON, image folder) of `split`; ValueError when the source has none."""
    ann, img = self.annotation_files.get(split, ''), self.image_dirs.get(split, '')
    if not ann or not img:
      raise ValueError(f'dataset.source={self.source!r} has no {split} annotation file and '
                       f'image folder (dataset.{split}_annotations={ann!r}, '
                       f'dataset.{split}_images={img!r})')
    return ann, img

  def require_keypoint_ground_truth(self) -> str:
    if not self.keypoint_ground_truth_file:
      raise ValueError(f'keypoint evaluation with dataset.source={self.source!r} needs '
                       'dataset.val_keypoint_annotations (person_keypoints_val2017.json)')
    return self.keypoint_ground_truth_file


@dataclasses.dataclass(frozen=True)
class Stream:
  """Training elements of this process and their decoder.

  `elements` is cheap to produce (indices or undecoded records) and `decode` turns one into an
  example dict (with 'position'), so the pipeline decodes, augments and resizes in one map.
  """
  elements: tf.data.Dataset
  decode: Callable[[Any], dict[str, tf.Tensor]]


@dataclasses.dataclass(frozen=True)
class EvalShare:
  """This process's share of the val set.

  Attributes:
    elements, decode: as in `Stream` (examples without 'position').
    count: real examples of this process.
    max_count: the largest share over the processes (sets the number of batches).
    total: real examples over all processes.
    image_ids: ids of this process's examples in order (None when streamed: read the batches).
    all_image_ids: ids over all processes (None when streamed).
  """
  elements: tf.data.Dataset
  decode: Callable[[Any], dict[str, tf.Tensor]]
  count: int
  max_count: int
  total: int
  image_ids: list[int] | None
  all_image_ids: list[int] | None


class Source(abc.ABC):
  """One kind of dataset (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def path_fields(self, splits) -> dict[str, bool]:
    """Config fields naming files of `splits` that must exist -> whether they must be set
    (checked at start-up, before anything is read)."""
    del splits
    return {}

  @abc.abstractmethod
  def facts(self) -> DatasetFacts:
    """Reads the label map and keypoint spec (generating a synthetic set first)."""

  @abc.abstractmethod
  def load_split(self, facts: DatasetFacts, split: str, *, image_check_cache: str = '',
                 write_image_check_cache: bool = True) -> coco_json.CocoDataset | None:
    """Host records of 'train' or 'val', checked; None for a streamed source."""

  @abc.abstractmethod
  def train_stream(self, facts: DatasetFacts, *, start_step: int, process_index: int,
                   process_count: int, dataset: coco_json.CocoDataset | None = None) -> Stream:
    """This process's training elements from `start_step` on."""

  @abc.abstractmethod
  def eval_share(self, facts: DatasetFacts, *, process_index: int, process_count: int,
                 dataset: coco_json.CocoDataset | None = None) -> EvalShare:
    """This process's val elements (the first `eval.num_examples` when > 0)."""


def keypoint_spec_from_categories(categories, label_map: coco_json.LabelMap, keypoint_config,
                                  where: str) -> kps.KeypointSpec:
  """The keypoint task's spec from COCO category dicts (`where` names them in errors)."""
  category = kps.select_keypoint_category(categories, keypoint_config.class_name)
  if category is None:
    raise ValueError(f"keypoints.enabled but {where} has no category with a 'keypoints' list "
                     'of joint names')
  return kps.spec_from_category(category, label_map.id_to_channel(category['id']),
                                keypoint_config)


def split_keypoints(example: dict[str, tf.Tensor], keypoints, num_keypoints: int,
                    scale=None) -> dict[str, tf.Tensor]:
  """Adds 'keypoints' [N, J, 2] and 'keypoint_mask' [N, J] to a decoded example.

  keypoints: float32 [N, J, 3] (y, x, labelled), divided by `scale` ((h, w), for pixels);
  None: every joint of every box unlabelled. num_keypoints 0: no keypoint keys at all.
  """
  if not num_keypoints:
    return example
  if keypoints is None:
    keypoints = tf.zeros([tf.shape(example['boxes'])[0], num_keypoints, 3], tf.float32)
  keypoints = tf.reshape(tf.cast(keypoints, tf.float32), [-1, num_keypoints, 3])
  yx = keypoints[:, :, :2]
  if scale is not None:
    yx = yx / scale
  return {**example, 'keypoints': yx, 'keypoint_mask': keypoints[:, :, 2]}
