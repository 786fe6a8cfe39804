"""'synthetic_keypoints': the embedded stick-figure set (data/synthetic_keypoints.py)."""

from __future__ import annotations

import functools

from centernet_jax.data import synthetic_keypoints
from centernet_jax.data.sources import files


class SyntheticKeypointsSource(files.FileSource):
  """The set under `dataset.synthetic_dir`, generated with the `dataset.synthetic_*` fields."""

  @functools.cached_property
  def _paths(self):
    return synthetic_keypoints.ensure_keypoint_dataset(self.config.dataset)

  def split_paths(self, split):
    return self._paths[f'{split}_annotations'], self._paths[f'{split}_images']
