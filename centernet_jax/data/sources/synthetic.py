"""'synthetic': the embedded shapes set (data/synthetic.py), generated on first use."""

from centernet_jax.data import synthetic
from centernet_jax.data.sources import files


class SyntheticSource(files.GeneratedSource):
  """The set under `dataset.synthetic_dir`, generated with the `dataset.synthetic_*` fields."""
  generate = staticmethod(synthetic.ensure_synthetic_dataset)
