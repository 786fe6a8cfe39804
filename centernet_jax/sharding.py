"""The device mesh and the global arrays built from per-process data.

One mesh over all devices of all processes, with a `data` axis that shards the batch. Parameters
and optimizer state are replicated; under `jax.jit` the compiler inserts the gradient
all-reduce, and BatchNorm statistics are computed over the global batch.
"""

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(mesh_config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """A 1-D `('data',)` mesh over `mesh_config.data` devices (-1: all devices)."""
  num_devices = jax.device_count()
  data = num_devices if mesh_config.data == -1 else int(mesh_config.data)
  if data < 1 or num_devices % data:
    raise ValueError(f'mesh.data={mesh_config.data} does not divide the {num_devices} devices.')
  devices = jax.devices()[:data]
  return jax.make_mesh((data,), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`; other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh, what: str) -> int:
  """Returns the per-process batch size; raises if the batch does not split evenly."""
  data = mesh.shape[DATA_AXIS]
  if global_batch % data:
    raise ValueError(f'{what}={global_batch} must be divisible by the {data} devices of the '
                     f'data axis.')
  if global_batch % jax.process_count():
    raise ValueError(f'{what}={global_batch} must be divisible by the '
                     f'{jax.process_count()} processes.')
  return global_batch // jax.process_count()


def to_global(local_batch: dict[str, Any], mesh: jax.sharding.Mesh,
              keys: tuple[str, ...] | None = None) -> dict[str, jax.Array]:
  """Assembles global, batch-sharded arrays from this process's numpy slice of the batch."""
  sharding = batch_sharding(mesh)
  keys = tuple(local_batch) if keys is None else keys
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local_batch[k]))
          for k in keys}


def to_host(tree: Any) -> Any:
  """Fetches a (possibly multi-process) global pytree to numpy on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)
