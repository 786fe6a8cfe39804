"""The data sources: one class per module, chosen here and nowhere else.

  facts = sources.resolve(config)          # once per run: label map, keypoint spec, files
  source = sources.for_config(config)      # facts(), load_split(), train_stream(), eval_share()

`dataset.source` picks the class; for 'tfds' the builder in `dataset.tfds_name` does
('coco_keypoints/...' or any builder with coco/2017's features).
The modules are imported when chosen (registry plug-ins: the TFDS ones import
tensorflow_datasets, the synthetic ones the generators).
"""

from __future__ import annotations

import importlib

import ml_collections

from centernet_jax.data.sources.base import DatasetFacts, EvalShare, Source, Stream  # noqa: F401

# dataset.source (or 'tfds:<builder name>') -> (module under this package, class name).
_REGISTRY = {
    'coco_json': ('coco_json', 'CocoJsonSource'),
    'synthetic': ('synthetic', 'SyntheticSource'),
    'synthetic_keypoints': ('synthetic_keypoints', 'SyntheticKeypointsSource'),
    'tfds:coco': ('tfds_coco', 'TfdsCocoSource'),
    'tfds:coco_keypoints': ('tfds_coco_keypoints', 'TfdsCocoKeypointsSource'),
}
NAMES = ('coco_json', 'synthetic', 'synthetic_keypoints', 'tfds')


def _key(config) -> str:
  d = config.dataset
  if d.source == 'tfds':
    # Any other builder name is read as one with coco/2017's features.
    builder = str(d.tfds_name).split('/')[0]
    return 'tfds:coco_keypoints' if builder == 'coco_keypoints' else 'tfds:coco'
  return str(d.source)


def for_config(config: ml_collections.ConfigDict) -> Source:
  """The source object of `config.dataset` (no I/O until its methods are called)."""
  key = _key(config)
  if key not in _REGISTRY:
    raise ValueError(f'dataset.source={config.dataset.source!r}: must be one of {list(NAMES)}')
  module, name = _REGISTRY[key]
  cls = getattr(importlib.import_module(f'{__name__}.{module}'), name)
  return cls(config)


def resolve(config: ml_collections.ConfigDict) -> DatasetFacts:
  """The dataset's facts, read once per run and passed down (see base.DatasetFacts)."""
  return for_config(config).facts()
