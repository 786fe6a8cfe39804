"""'synthetic': the embedded shapes set (data/synthetic.py), generated on first use."""

from __future__ import annotations

import functools

from centernet_jax.data import synthetic
from centernet_jax.data.sources import files


class SyntheticSource(files.FileSource):
  """The set under `dataset.synthetic_dir`, generated with the `dataset.synthetic_*` fields."""

  @functools.cached_property
  def _paths(self):
    return synthetic.ensure_synthetic_dataset(self.config.dataset)

  def split_paths(self, split):
    return self._paths[f'{split}_annotations'], self._paths[f'{split}_images']
