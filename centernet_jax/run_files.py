"""A run's side files, and the model and state they describe: the one place that writes and
reads them, builds the model of a run and restores it.

Workdir layout (the checkpoints themselves: checkpointing.py; runs written before this module
have the same layout and restore unchanged):
  DIR/config.json              the config (`ConfigDict.to_json_best_effort`, indent 2)
  DIR/label_map.json           `label_map_json(label_map, keypoint_spec)`: per channel `names` and
                               `category_ids` (-1 for a channel without a category), `mode`,
                               `num_channels`, `categories`; a keypoint run adds `keypoints`
                               (`KeypointSpec.to_json_dict`)
  DIR/checkpoints/<step>/meta  `checkpoint_meta(...)`: {'step', 'config', 'label_map'} with the
                               same JSON as the two files, plus what the writer adds (the
                               importer: 'imported_from')

API
  RunFiles(config, label_map, keypoint_spec)  what a run is: the ConfigDict, the label map JSON
      dict (without 'keypoints') and the KeypointSpec (None for a box-only run).
  label_map_json(label_map, keypoint_spec=None) -> dict   a LabelMap (or its JSON dict) + spec.
  write_run_files(workdir, config, label_map, keypoint_spec=None)   config.json, label_map.json
      (process 0 writes; the others return).
  checkpoint_meta(config, label_map, keypoint_spec, step, **extra) -> dict   the meta JSON.
  read_run_files(workdir, step=None) -> RunFiles   the checkpoint meta of `step` (latest if
      None), which matches that step's arrays; a workdir without checkpoints: the two files.
  build_model(run) -> CenterNet   `models.build_model` with the run's classes and keypoint task.
  The model's variables and train state without a checkpoint (abstract ones, random ones
      that skip compiling `model.init`, a TrainState around given variables) are built by
      model_variables.py, which imports neither orbax nor TensorFlow (benchmarks/device_suite).
  restore_for_inference(workdir, step=None, device_sharding=None) -> InferenceRun(config,
      label_map, keypoint_spec, model, variables, step): params and BN statistics only (orbax
      partial restore; no optimizer is built), replicated on one device unless
      `device_sharding` is given.
  restore_train_state(manager, state, *, step=None, init_checkpoint='', initialize=None)
      -> TrainState   the full TrainState for training / evaluation (a fresh one when there is
      nothing to restore; see its docstring).
"""

import json
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from etils import epath

from centernet_jax import checkpointing
from centernet_jax import config_base
from centernet_jax import keypoint_spec as kp_spec_lib
from centernet_jax import model_variables
from centernet_jax import models
from centernet_jax import sharding
from centernet_jax.train_step import TrainState

CONFIG_FILE = 'config.json'
LABEL_MAP_FILE = 'label_map.json'
_KEYPOINTS = 'keypoints'  # the label map JSON's key holding the keypoint task


class RunFiles(NamedTuple):
  """A run as its files describe it."""
  config: ml_collections.ConfigDict
  label_map: dict[str, Any]  # LabelMap.to_json_dict(): names, category_ids, mode, ...
  keypoint_spec: kp_spec_lib.KeypointSpec | None

  @property
  def num_classes(self) -> int:
    """Heatmap channels (unused channels of an 'id_minus_one' map included)."""
    return len(self.label_map['names'])


class InferenceRun(NamedTuple):
  """A run restored for inference: `model.apply(variables, images, train=False)`."""
  config: ml_collections.ConfigDict
  label_map: dict[str, Any]  # as RunFiles.label_map
  keypoint_spec: kp_spec_lib.KeypointSpec | None
  model: models.CenterNet
  variables: dict[str, Any]  # {'params', 'batch_stats'}
  step: int


def label_map_json(label_map, keypoint_spec: kp_spec_lib.KeypointSpec | None = None
                   ) -> dict[str, Any]:
  """The label map as the run files hold it: a `LabelMap` (or its JSON dict) plus the keypoint
  task under 'keypoints'."""
  out = dict(label_map) if isinstance(label_map, Mapping) else label_map.to_json_dict()
  out.pop(_KEYPOINTS, None)
  if keypoint_spec is not None:
    out[_KEYPOINTS] = keypoint_spec.to_json_dict()
  return out


# Fields an older run's config held flat in `model`, now in `model.backbone_kwargs`.
_MOVED_MODEL_FIELDS = {'hourglass_depth': ('hourglass', 'depth'),
                       'use_separable_conv': ('mobilenet_v2_fpn', 'use_separable_conv')}


def config_from_json(saved: Mapping[str, Any], where: str) -> ml_collections.ConfigDict:
  """A saved run config on today's layout: the base config with the saved values on top.

  So every field exists (a field added since the run was saved takes its base default, the one
  place defaults live), the flat backbone fields of older runs (`model.hourglass_depth`,
  `model.use_separable_conv`) move to `model.backbone_kwargs`, and fields that no longer exist
  (e.g. the boolean `input.*` augmentation switches replaced by `input.augmentations`) are
  dropped, listed in the log.
  """
  saved = json.loads(json.dumps(saved))  # a deep copy
  model = saved.get('model')
  if isinstance(model, dict):
    kwargs = model.setdefault('backbone_kwargs', {})
    for old, (backbone, field) in _MOVED_MODEL_FIELDS.items():
      if old in model:
        kwargs.setdefault(backbone, {})[field] = model.pop(old)
  config = config_base.base_config()
  dropped = []

  def overlay(target: ml_collections.ConfigDict, values: Mapping[str, Any], prefix: str):
    for key, value in values.items():
      if key not in target:
        dropped.append(prefix + key)
      elif isinstance(target[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
        overlay(target[key], value, f'{prefix}{key}.')
      else:
        with target.ignore_type():
          target[key] = tuple(value) if isinstance(value, list) else value

  overlay(config, saved, '')
  if dropped:
    logging.info('%s: config fields that no longer exist, ignored: %s', where,
                 ', '.join(dropped))
  return config


def _from_json(config_json: Mapping[str, Any], label_map: Mapping[str, Any], where: str
               ) -> RunFiles:
  for key in ('names', 'category_ids'):
    if key not in label_map:
      raise ValueError(f'{where}: the label map has no {key!r} field (keys: '
                       f'{sorted(label_map)}); it was not written by this project.')
  label_map = dict(label_map)
  kp = label_map.pop(_KEYPOINTS, None)
  spec = kp_spec_lib.KeypointSpec.from_json_dict(kp) if kp else None
  return RunFiles(config_from_json(config_json, where), label_map, spec)


def checkpoint_meta(config: ml_collections.ConfigDict, label_map,
                    keypoint_spec: kp_spec_lib.KeypointSpec | None, step: int,
                    **extra: Any) -> dict[str, Any]:
  """The JSON saved next to each checkpoint's arrays; `extra` adds fields (JSON values)."""
  return {'step': int(step), 'config': json.loads(config.to_json_best_effort()),
          'label_map': label_map_json(label_map, keypoint_spec), **extra}


def write_run_files(workdir, config: ml_collections.ConfigDict, label_map,
                    keypoint_spec: kp_spec_lib.KeypointSpec | None = None) -> None:
  """Writes DIR/config.json and DIR/label_map.json (process 0; the others return)."""
  if jax.process_index() != 0:
    return
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  (root / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
  (root / LABEL_MAP_FILE).write_text(json.dumps(label_map_json(label_map, keypoint_spec),
                                                indent=2))


def read_run_files(workdir, step: int | None = None) -> RunFiles:
  """The run of `workdir`: from the meta of checkpoint `step` (the latest if None), else (no
  checkpoint, `step` None) from DIR/config.json and DIR/label_map.json."""
  manager = checkpointing.make_manager(workdir, read_only=True)
  latest = manager.latest_step()
  manager.close()
  if step is not None or latest is not None:
    meta = checkpointing.read_meta(workdir, step)
    where = f'checkpoint step {meta.get("step", step)} in {checkpointing.checkpoint_dir(workdir)}'
    for key in ('config', 'label_map'):
      if key not in meta:
        raise ValueError(f'{where}: its meta has no {key!r} field (keys: {sorted(meta)}).')
    return _from_json(meta['config'], meta['label_map'], where)
  root = epath.Path(workdir)
  files = [root / CONFIG_FILE, root / LABEL_MAP_FILE]
  missing = [str(f) for f in files if not f.exists()]
  if missing:
    raise FileNotFoundError(f'{workdir} holds no checkpoint under '
                            f'{checkpointing.checkpoint_dir(workdir)} and not '
                            f'{", ".join(missing)}: not a run directory.')
  parsed = []
  for f in files:
    try:
      parsed.append(json.loads(f.read_text()))
    except ValueError as e:
      raise ValueError(f'{f}: not valid JSON ({e}).') from None
  return _from_json(parsed[0], parsed[1], str(files[1]))


def build_model(run: RunFiles) -> models.CenterNet:
  """The run's CenterNet: config.model, one heatmap channel per label map channel, the
  keypoint task's heads if any."""
  return models.build_model(run.config.model, run.num_classes, run.keypoint_spec)


def _one_device_replicated() -> jax.sharding.Sharding:
  mesh = config_base.base_config().mesh
  mesh.data = 1
  return sharding.replicated(sharding.make_mesh(mesh))


def restore_for_inference(workdir, step: int | None = None,
                          device_sharding: jax.sharding.Sharding | None = None) -> InferenceRun:
  """The run of `workdir` with the params and BN statistics of checkpoint `step` (the latest
  good one if None: a damaged step is set aside as `checkpointing.restore` does).

  Only the step counter, `params` and `batch_stats` are read (orbax partial restore); the
  optimizer state is neither read nor built. Arrays land on `device_sharding` (default:
  replicated on one device).
  """
  run = read_run_files(workdir, step)
  model = build_model(run)
  target_sharding = device_sharding or _one_device_replicated()
  abstract = {'step': jax.ShapeDtypeStruct((), jnp.int32),
              **model_variables.abstract_variables(model, int(run.config.input.size))}
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=target_sharding), abstract)
  manager = checkpointing.make_manager(workdir, read_only=True, subset=True)
  try:
    restored = checkpointing.restore(manager, target, step)
  finally:
    manager.close()
  if restored is None:
    raise FileNotFoundError(f'No checkpoint under {checkpointing.checkpoint_dir(workdir)}.')
  state, _ = restored
  return InferenceRun(run.config, run.label_map, run.keypoint_spec, model,
                      {'params': state['params'], 'batch_stats': state['batch_stats']},
                      int(state['step']))


def restore_train_state(manager, state: TrainState, *, step: int | None = None,
                        init_checkpoint: str = '',
                        initialize: Callable[[], TrainState] | None = None) -> TrainState:
  """The TrainState to continue from, on `state`'s shapes and shardings (`state` may be
  abstract: `jax.ShapeDtypeStruct`s with shardings).

  `step` given: exactly that checkpoint of `manager`'s workdir (raises if it is missing or
  damaged). `step` None: the latest good checkpoint there; else (none) a fresh start,
  `initialize()` (or `state` itself without `initialize`), with the params and BN statistics of
  `init_checkpoint` (a workdir; partial restore, its optimizer state is neither read nor
  shape-checked) if one is given.
  """
  restored = checkpointing.restore(manager, state, step)
  if restored is not None:
    logging.info('Resumed from the workdir at step %d.', int(restored[0].step))
    return restored[0]
  if initialize is not None:
    state = initialize()
  if not init_checkpoint:
    return state
  target = {'params': state.params, 'batch_stats': state.batch_stats}
  other = checkpointing.make_manager(init_checkpoint, read_only=True, subset=True)
  try:
    loaded = checkpointing.restore(other, target, fallback=False)
  finally:
    other.close()
  if loaded is None:
    raise FileNotFoundError(f'init_checkpoint {init_checkpoint}: no checkpoint.')
  logging.info('Initialised params from %s.', init_checkpoint)
  return state.replace(params=loaded[0]['params'], batch_stats=loaded[0]['batch_stats'])
