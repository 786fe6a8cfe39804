"""'synthetic_keypoints': the embedded stick-figure set (data/synthetic_keypoints.py)."""

from centernet_jax.data import synthetic_keypoints
from centernet_jax.data.sources import files


class SyntheticKeypointsSource(files.GeneratedSource):
  """The set under `dataset.synthetic_dir`, generated with the `dataset.synthetic_*` fields."""
  generate = staticmethod(synthetic_keypoints.ensure_keypoint_dataset)
