"""The device mesh, the state shardings and the global arrays built from per-process data.

The mesh has two named axes, `data` and `fsdp` (`config.mesh`). The batch is split over both
(every device gets its own examples). Parameters and optimizer state are replicated when
`fsdp` is 1; with `fsdp` = n > 1 each large leaf is split over the `fsdp` axis along its
largest dimension that n divides (ZeRO-3 / FSDP style), so every device holds 1/n of it and
XLA gathers it where a layer needs it. Under `jax.jit` the compiler inserts the gradient
reduction, and BatchNorm statistics are computed over the global batch.
"""

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
# Leaves smaller than this stay replicated: splitting them saves nothing worth a collective.
FSDP_MIN_SIZE = 2**14


def make_mesh(mesh_config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """A `('data', 'fsdp')` mesh; `data=-1` takes every device the `fsdp` axis leaves."""
  num_devices = jax.device_count()
  fsdp = int(mesh_config.fsdp)
  if fsdp < 1 or num_devices % fsdp:
    raise ValueError(f'mesh.fsdp={fsdp} does not divide the {num_devices} devices.')
  data = num_devices // fsdp if mesh_config.data == -1 else int(mesh_config.data)
  if data < 1 or data * fsdp > num_devices or num_devices % (data * fsdp):
    raise ValueError(f'mesh.data={mesh_config.data} x mesh.fsdp={fsdp} does not fit the '
                     f'{num_devices} devices.')
  devices = jax.devices()[:data * fsdp]
  return jax.make_mesh((data, fsdp), BATCH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device of the mesh; other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def leaf_sharding(mesh: jax.sharding.Mesh, shape: tuple[int, ...]) -> NamedSharding:
  """FSDP placement of one array: its largest dimension divisible by the fsdp size is split."""
  n = mesh.shape[FSDP_AXIS]
  if n == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return replicated(mesh)
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % n == 0:
      spec = [None] * len(shape)
      spec[axis] = FSDP_AXIS
      return NamedSharding(mesh, P(*spec))
  return replicated(mesh)


def state_shardings(mesh: jax.sharding.Mesh, abstract_state: Any) -> Any:
  """Shardings for a pytree of arrays / ShapeDtypeStructs (e.g. from `jax.eval_shape`)."""
  return jax.tree.map(lambda x: leaf_sharding(mesh, tuple(x.shape)), abstract_state)


def bytes_per_device(tree: Any, shardings: Any) -> int:
  """Bytes each device holds of `tree` placed with `shardings` (from shard shapes)."""
  total = 0
  for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
    shard = s.shard_shape(tuple(x.shape))
    total += int(np.prod(shard, dtype=np.int64)) * np.dtype(x.dtype).itemsize
  return total


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh, what: str) -> int:
  """Returns the per-process batch size; raises if the batch does not split evenly."""
  if global_batch % mesh.size:
    raise ValueError(f'{what}={global_batch} must be divisible by the {mesh.size} devices of '
                     f'the mesh.')
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
  return multihost_utils.process_allgather(tree, tiled=True)
