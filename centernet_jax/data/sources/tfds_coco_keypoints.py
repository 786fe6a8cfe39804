"""'tfds' with `dataset.tfds_name='coco_keypoints/2017'`: this project's TFDS builder
(data/tfds_coco_keypoints.py: every COCO instance plus the 17 person joints), read like
`coco/2017` with the joints added to the examples."""

from __future__ import annotations

# Importing the builder's module registers `coco_keypoints` with TFDS.
from centernet_jax.data import tfds_coco_keypoints  # noqa: F401  pylint: disable=unused-import
from centernet_jax.data.sources import tfds_coco


class TfdsCocoKeypointsSource(tfds_coco.TfdsCocoSource):
  """As TfdsCocoSource; `tfds_coco.convert_example` reads the builder's keypoint features."""
