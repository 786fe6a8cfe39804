"""Orbax checkpointing of the train state, wrapped in one place, with integrity checks.

Layout of a workdir:
  DIR/checkpoints/<step>/state        the TrainState pytree (params, batch_stats, opt_state, step)
  DIR/checkpoints/<step>/meta         JSON: step, the config and the label map
                                      (run_files.checkpoint_meta)
  DIR/checkpoint_checksums/<step>.json  size and SHA-256 of every file of that step
  DIR/checkpoints_set_aside/<step>[.n]  steps found damaged on restore (moved, never deleted)
Saves are asynchronous; every process calls save and restore (orbax coordinates the writes).
Restores go onto the caller's shardings, so a checkpoint written on one device count restores
onto another.

Integrity: when a save has finished (checked at the next save and at `close`), process 0
records the checksums of its files. `restore` (latest step) verifies them, and a step whose
files differ, or that orbax cannot read, is moved to `checkpoints_set_aside/` with a warning
naming it and the cause; the next older step is tried. A step without recorded checksums
(killed between its save and the record) is restored unverified. A save that fails in the
background (disk full, permissions) raises `CheckpointSaveError` naming the workdir and the
cause at the next `check_saves` / `save` / `close`; the previous checkpoint is kept.
A checkpoint whose arrays have other shapes than the model's raises `CheckpointMismatchError`
naming the leaf, both shapes and the options that decide them (not a damage: nothing is moved).

Subset restores: a manager made with `subset=True` (read-only) restores only the parts of the
state its target names (e.g. `{'params', 'batch_stats'}` for inference), with an orbax partial
restore: the optimizer state is neither read nor needed to shape the target.
"""

import hashlib
import json
import logging as py_logging
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from centernet_jax import file_io

STATE = 'state'
META = 'meta'
CHECKSUMS = 'checkpoint_checksums'
SET_ASIDE = 'checkpoints_set_aside'
_HASH_CHUNK = 1 << 22


class CheckpointSaveError(RuntimeError):
  """An asynchronous checkpoint save failed; the run must stop."""


class CheckpointMismatchError(ValueError):
  """The checkpoint's arrays do not fit the model the config builds."""


def checkpoint_dir(workdir: str | epath.PathLike) -> epath.Path:
  """DIR/checkpoints, made absolute for local paths (orbax requires it); gs:// kept as is."""
  return epath.Path(file_io.absolute(workdir)) / 'checkpoints'


class _OrbaxTracebacksToOneLine(py_logging.Filter):
  """Keeps orbax's error lines but drops their tracebacks: a failed background save logs the
  same error from every thread that waits on it; `check_saves` raises it once, with the
  workdir and the cause."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.exc_info and '/orbax/' in record.pathname.replace('\\', '/'):
      record.exc_info = None
      record.exc_text = None
    return True


def _install_orbax_filter() -> None:
  logger = py_logging.getLogger('absl')
  if not any(isinstance(f, _OrbaxTracebacksToOneLine) for f in logger.filters):
    logger.addFilter(_OrbaxTracebacksToOneLine())


class SubsetManager(ocp.CheckpointManager):
  """A read-only manager whose `restore` target may hold only some of the state's fields."""


def make_manager(workdir, *, keep: int = 3, read_only: bool = False,
                 subset: bool = False) -> ocp.CheckpointManager:
  """The workdir's checkpoint manager. `subset` (read-only only): its `restore` takes a target
  holding part of the state's top-level fields (orbax partial restore) instead of all of it."""
  _install_orbax_filter()
  if subset and not read_only:
    raise ValueError('a subset checkpoint manager restores only; pass read_only=True')
  if keep < 1:
    raise ValueError(f'keep_checkpoints={keep}: must be >= 1 (0 would delete every checkpoint '
                     'right after writing it)')
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=not read_only)
  # Handlers given up front (not only item names): `item_metadata` then reads a step's array
  # shapes before any restore, for check_shapes. Both state handlers read the same files; only
  # the PyTree one restores part of a tree.
  kind = SubsetManager if subset else ocp.CheckpointManager
  state_handler = ocp.PyTreeCheckpointHandler() if subset else ocp.StandardCheckpointHandler()
  return kind(checkpoint_dir(workdir), options=options, item_handlers={
      STATE: state_handler, META: ocp.JsonCheckpointHandler()})


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return f'{type(error).__name__}: {text.splitlines()[0] if text else ""}'.rstrip(': ')


def _root(manager: ocp.CheckpointManager) -> epath.Path:
  """The workdir of a manager (the parent of DIR/checkpoints)."""
  return epath.Path(manager.directory).parent


def check_saves(manager: ocp.CheckpointManager, wait: bool = False) -> None:
  """Raises CheckpointSaveError if a background save failed (`wait`: for the pending one too).

  Cheap without `wait` (nothing is waited for while a save is still writing): call it every
  step to stop as soon as a save has failed instead of at the next save.
  """
  if not wait and manager.is_saving_in_progress():
    return
  try:
    manager.wait_until_finished()  # returns at once unless a finished save left an error
    manager.check_for_errors()
  except Exception as e:  # pylint: disable=broad-except  # OSError, ValueError, tensorstore...
    steps = manager.all_steps()
    kept = f'the last complete checkpoint is step {max(steps)}' if steps else 'no checkpoint'
    raise CheckpointSaveError(
        f'saving a checkpoint to {manager.directory} failed: {_first_line(e)} (workdir '
        f'{_root(manager)}; {kept}; free space or fix permissions, then rerun to resume)'
    ) from None
  if wait:
    _record_checksums(manager)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any]) -> None:
  """Starts an async save of `state` at `step` (finishes and checks the previous save first)."""
  check_saves(manager, wait=True)
  try:
    manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}), force=True)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointSaveError(
        f'saving the checkpoint of step {step} to {manager.directory} failed: '
        f'{_first_line(e)} (workdir {_root(manager)})') from None


def close(manager: ocp.CheckpointManager) -> None:
  """Waits for the pending save, records its checksums and closes the manager."""
  try:
    check_saves(manager, wait=True)
  finally:
    manager.close()


# ---------------------------------------------------------------------------------------------
# Checksums.


def _walk(root: epath.Path) -> list[epath.Path]:
  """Every file under `root`, sorted (epath's recursive glob is refused on gs://)."""
  files, folders = [], [root]
  while folders:
    for p in folders.pop().iterdir():
      (folders if p.is_dir() else files).append(p)
  return sorted(files)


def _step_files(step_dir: epath.Path) -> dict[str, Any]:
  """{relative path: [size, sha256]} of every file under a step directory."""
  out = {}
  for p in _walk(step_dir):
    h = hashlib.sha256()
    size = 0
    with p.open('rb') as f:
      while chunk := f.read(_HASH_CHUNK):
        h.update(chunk)
        size += len(chunk)
    out[str(p.relative_to(step_dir))] = [size, h.hexdigest()]
  return out


def _checksum_file(manager, step: int) -> epath.Path:
  return _root(manager) / CHECKSUMS / f'{step}.json'


def _record_checksums(manager: ocp.CheckpointManager) -> None:
  """Process 0 writes the checksums of finished steps that have none; drops stale ones."""
  if jax.process_index() != 0 or manager._options.read_only:  # pylint: disable=protected-access
    return
  steps = set(manager.all_steps())
  folder = _root(manager) / CHECKSUMS
  folder.mkdir(parents=True, exist_ok=True)
  for step in sorted(steps):
    target = _checksum_file(manager, step)
    if target.exists():
      continue
    record = {'step': step, 'files': _step_files(epath.Path(manager.directory) / str(step))}
    tmp = folder / f'{step}.json.tmp'
    tmp.write_text(json.dumps(record))
    tmp.rename(target)  # atomic: a kill leaves no half-written record
  for p in folder.glob('*.json'):
    if p.stem.isdigit() and int(p.stem) not in steps:
      p.unlink()


def verify(manager: ocp.CheckpointManager, step: int) -> str | None:
  """None if the step's files match their recorded checksums (or none were recorded), else
  what differs."""
  record_path = _checksum_file(manager, step)
  if not record_path.exists():
    logging.warning('checkpoint step %d in %s has no recorded checksums (written by an older '
                    'version, or the run stopped right after saving it); restoring it '
                    'unverified', step, manager.directory)
    return None
  try:
    recorded = json.loads(record_path.read_text())['files']
  except (ValueError, KeyError, TypeError, OSError) as e:
    logging.warning('checksums of checkpoint step %d unreadable (%s); restoring it unverified',
                    step, e)
    return None
  actual = _step_files(epath.Path(manager.directory) / str(step))
  for name, (size, digest) in sorted(recorded.items()):
    if name not in actual:
      return f'file {name} is missing'
    if actual[name][0] != size:
      return f'file {name} has {actual[name][0]} bytes, {size} were written'
    if actual[name][1] != digest:
      return f'file {name} differs from what was written (SHA-256 mismatch)'
  extra = sorted(set(actual) - set(recorded))
  if extra:
    return f'file {extra[0]} was not written by the save'
  return None


def _set_aside(manager: ocp.CheckpointManager, step: int, reason: str) -> epath.Path:
  """Moves a damaged step (and its checksums) to DIR/checkpoints_set_aside/; process 0 only."""
  folder = _root(manager) / SET_ASIDE
  target = folder / str(step)
  n = 0
  while target.exists():
    n += 1
    target = folder / f'{step}.{n}'
  if jax.process_index() == 0:
    folder.mkdir(parents=True, exist_ok=True)
    src = epath.Path(manager.directory) / str(step)
    if file_io.is_local(str(src)):
      src.rename(target)
    else:  # object stores cannot rename a folder: copy, then remove the original
      _copy_tree(src, target)
      src.rmtree()
    (target / 'WHY_SET_ASIDE.txt').write_text(reason + '\n')
    record = _checksum_file(manager, step)
    if record.exists():
      record.rename(target / 'checksums.json')
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'checkpoint set aside {step}')
  manager.reload()
  return target


def _copy_tree(src: epath.Path, dst: epath.Path) -> None:
  for p in _walk(src):
    rel = p.relative_to(src)
    (dst / rel).parent.mkdir(parents=True, exist_ok=True)
    p.copy(dst / rel)


# ---------------------------------------------------------------------------------------------
# Restore.


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs carrying each leaf's sharding: the restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
      tree)


def _dotted(path) -> str:
  parts = []
  for k in path:
    for attr in ('name', 'key', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return '.'.join(parts)


def check_shapes(manager: ocp.CheckpointManager, step: int, target: Any) -> None:
  """Raises CheckpointMismatchError naming the first leaf whose shape differs (params first)."""
  metadata = manager.item_metadata(step)[STATE]
  tree = getattr(metadata, 'tree', metadata)
  saved = {}
  for _, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if hasattr(leaf, 'shape') and hasattr(leaf, 'name'):
      saved[leaf.name] = tuple(leaf.shape)
  if not saved:
    return
  wanted = {_dotted(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  bad = [(n, saved.get(n), s) for n, s in wanted.items() if saved.get(n) != s]
  if not bad:
    return
  bad.sort(key=lambda b: (not b[0].startswith('params.'), b[0]))
  name, have, want = bad[0]
  where = f'checkpoint step {step} in {manager.directory}'
  if have is None:
    detail = f'leaf {name} (shape {want}) is not in the {where}'
  else:
    detail = f'leaf {name} has shape {have} in the {where} but {want} in the model'
  raise CheckpointMismatchError(
      f'{detail} ({len(bad)} leaves differ). The checkpoint was written for another model: '
      'the number of classes (the dataset\'s categories, dataset.label_map_mode, '
      'model.num_classes), model.backbone / depth / width_multiplier / head_channels and '
      'keypoints.* must match it; change them, or use another workdir / init_checkpoint.')


def _restore_step(manager, step, target):
  abstract = abstract_like(target)
  if isinstance(manager, SubsetManager):
    state_args = ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True)
  else:
    state_args = ocp.args.StandardRestore(abstract)
  restored = manager.restore(step, args=ocp.args.Composite(**{
      STATE: state_args, META: ocp.args.JsonRestore()}))
  return restored[STATE], restored[META]


def restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None, *,
            fallback: bool = True) -> tuple[Any, dict[str, Any]] | None:
  """Restores (state, meta) at `step` (the latest good one if None) onto `target`'s shapes and
  shardings.

  `target` is a pytree of arrays or ShapeDtypeStructs with shardings (e.g. from
  `jax.eval_shape` plus the state shardings). Returns None when there is no checkpoint. With
  `step` None and `fallback`, a damaged step is set aside and the next older one tried; else
  a damaged step raises.
  """
  steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
  if not steps:
    return None
  for s in steps:
    logging.info('Restoring checkpoint step %d from %s', s, manager.directory)
    problem = verify(manager, s)
    if problem is None:
      try:
        check_shapes(manager, s, target)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except  # unreadable metadata
        problem = f'its metadata cannot be read ({_first_line(e)})'
    if problem is None:
      try:
        restored = _restore_step(manager, s, target)
        logging.info('Restored checkpoint step %d from %s', s, manager.directory)
        return restored
      except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds
        problem = f'orbax cannot read it ({_first_line(e)})'
    where = f'checkpoint step {s} in {manager.directory}'
    if step is not None or not fallback:
      raise ValueError(f'{where} is damaged: {problem}')
    moved = _set_aside(manager, s, problem)
    logging.warning('%s is damaged: %s. Set aside as %s (not deleted); trying the next older '
                    'step.', where, problem, moved)
  raise ValueError(f'every checkpoint in {manager.directory} is damaged (set aside under '
                   f'{_root(manager) / SET_ASIDE}); rerun to start afresh, or restore one of '
                   'them by hand')


def read_meta(workdir, step: int | None = None) -> dict[str, Any]:
  """Reads the JSON metadata (config, label map) of a checkpoint without its arrays."""
  manager = make_manager(workdir, read_only=True)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'No checkpoint found under {checkpoint_dir(workdir)}.')
  restored = manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
  manager.close()
  return restored[META]
