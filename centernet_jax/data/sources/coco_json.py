"""'coco_json': any COCO instances JSON plus image folder per split, named by the config."""

from __future__ import annotations

from centernet_jax.data.sources import files


class CocoJsonSource(files.FileSource):
  """`dataset.{train,val}_annotations` and `dataset.{train,val}_images`."""

  def split_paths(self, split):
    d = self.config.dataset
    return str(d[f'{split}_annotations']), str(d[f'{split}_images'])

  def path_fields(self, splits):
    return {f'dataset.{s}_{kind}': True for s in splits for kind in ('annotations', 'images')}
