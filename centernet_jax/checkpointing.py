"""Orbax checkpointing of the train state, wrapped in one place.

Layout of a workdir:
  DIR/checkpoints/<step>/state   the TrainState pytree (params, batch_stats, opt_state, step)
  DIR/checkpoints/<step>/meta    JSON: step, the config and the label map
Saves are asynchronous; every process calls save and restore (orbax coordinates the writes).
Restores go onto the caller's shardings, so a checkpoint written on one device count restores
onto another.
"""

from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from centernet_jax import file_io

STATE = 'state'
META = 'meta'


def checkpoint_dir(workdir: str | epath.PathLike) -> epath.Path:
  """DIR/checkpoints, made absolute for local paths (orbax requires it); gs:// kept as is."""
  return epath.Path(file_io.absolute(workdir)) / 'checkpoints'


def make_manager(workdir, *, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=(STATE, META))


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any]) -> None:
  """Starts an async save of `state` at `step` (waits for the previous save first)."""
  manager.save(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}), force=True)


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs carrying each leaf's sharding: the restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
      tree)


def restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None
            ) -> tuple[Any, dict[str, Any]] | None:
  """Restores (state, meta) at `step` (latest if None) onto `target`'s shapes and shardings.

  `target` is a pytree of arrays or ShapeDtypeStructs with shardings (e.g. from
  `jax.eval_shape` plus the state shardings). Returns None when there is no checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  logging.info('Restoring checkpoint step %d from %s', step, manager.directory)
  restored = manager.restore(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardRestore(abstract_like(target)), META: ocp.args.JsonRestore()}))
  return restored[STATE], restored[META]


def read_meta(workdir, step: int | None = None) -> dict[str, Any]:
  """Reads the JSON metadata (config, label map) of a checkpoint without its arrays."""
  manager = make_manager(workdir, read_only=True)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'No checkpoint found under {checkpoint_dir(workdir)}.')
  restored = manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
  manager.close()
  return restored[META]
