r"""Imports a TF2-zoo CenterNet archive into a workdir of ours.

  python -m centernet_jax.import_tf_checkpoint \
      --archive centernet_resnet50_v1_fpn_512x512_coco17_tpu-8 --workdir runs/r50_zoo \
      [--experiment experiments/centernet_resnet50_v1_fpn_512x512_coco17_tpu-8.py] \
      [--init_type full|detection|classification] [--skip_keypoint_heads]

The archive directory holds `checkpoint/ckpt-0.{index,data-*}` and `pipeline.config` (as the
zoo tarballs unpack). What happens:
  1. `pipeline.config` is read with the text-proto reader of text_proto.py (no OD API protos
     needed) for
     the feature extractor type, num_classes, the keep-aspect-ratio resizer size, `use_depthwise`
     and the keypoint tasks (name, `per_keypoint_offset`, decoding parameters).
  2. The experiment file is `--experiment`, else `experiments/<archive dir name>.py`, else the
     one experiment under `experiments/` whose model/input settings match the pipeline.config
     (experiments.py loads them; a broken experiment file stops the search, named); its
     settings are checked against the pipeline.config (a mismatch is refused, naming the
     fields). The feature extractor types come from the backbone registry
     (`models.zoo_feature_extractors`).
  3. The checkpoint is converted by `centernet_jax.tf_checkpoint` (strict: an unused checkpoint
     variable, an unfilled parameter or a shape mismatch is refused, naming the variable).
  4. An orbax checkpoint and the run's side files are written in our workdir format
     (run_files.py, checkpointing.py): the TrainState at step 0 with the converted
     params/batch_stats and a fresh optimizer state; meta holds the config (with `model.num_classes` and
     `dataset.label_map_mode='id_minus_one'` of the zoo) and the COCO label map (90 channels,
     channel = category id - 1, names from the official COCO category list), so
     `python -m centernet_jax.main --mode eval` and `python -m centernet_jax.detect` use it.

Keypoint archives (`*_kpts_*`, one `keypoint_estimation_task`): the model is built with the
task's heads (`<task>/keypoint/{heatmap,offset,regression}`, J from the checkpoint's heatmap
head, 17 for the zoo) and they are converted like the other heads; the experiment must have
`keypoints.enabled`; the label map in the meta carries the keypoint task (COCO's person
keypoints: names, skeleton, flip permutation, OKS sigmas), so eval reports keypoint AP and
`detect` draws skeletons. `--skip_keypoint_heads` still imports only the box model (with a
box-only experiment).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from centernet_jax import checkpointing
from centernet_jax import experiments
from centernet_jax import file_io
from centernet_jax import keypoint_spec as kps
from centernet_jax import model_variables
from centernet_jax import models
from centernet_jax import optimizer as optimizer_lib
from centernet_jax import run_files
from centernet_jax import text_proto
from centernet_jax import tf_checkpoint
from centernet_jax import train_step
from centernet_jax.data import coco_categories
from centernet_jax.data import coco_json

COCO_CATEGORIES = coco_categories.COCO_CATEGORIES


class ArchiveImportError(ValueError):
  """The archive cannot be imported as asked (message says why and what to do)."""


# ------------------------------------------------------------------------------------------
# pipeline.config.

# keypoint_estimation_task field -> our `config.keypoints` field (decoding parameters).
KEYPOINT_TASK_FIELDS = {
    'num_candidates_per_keypoint': 'num_candidates',
    'keypoint_candidate_score_threshold': 'candidate_score_threshold',
    'unmatched_keypoint_score': 'unmatched_score',
    'box_scale': 'box_scale',
    'candidate_search_scale': 'candidate_search_scale',
    'offset_peak_radius': 'offset_peak_radius',
    'keypoint_heatmap_loss_weight': 'heatmap_loss_weight',
    'keypoint_offset_loss_weight': 'offset_loss_weight',
    'keypoint_regression_loss_weight': 'regression_loss_weight',
}


@dataclasses.dataclass
class ZooModel:
  """What the importer needs from a pipeline.config."""
  feature_extractor: str
  num_classes: int
  input_size: int
  use_depthwise: bool
  keypoint_tasks: Tuple[str, ...]
  max_box_predictions: int
  channel_means: Tuple[float, ...]
  channel_stds: Tuple[float, ...]
  bgr_ordering: bool
  # Per keypoint task: the `config.keypoints` fields it sets (task_name, per_keypoint_offset,
  # and the KEYPOINT_TASK_FIELDS present), plus 'candidate_ranking_mode'.
  keypoint_settings: Tuple[Dict[str, Any], ...] = ()

  def model_overrides(self) -> Dict[str, Any]:
    """Our `model` config fields implied by the pipeline.config."""
    known = models.zoo_feature_extractors()
    if self.feature_extractor not in known:
      raise ArchiveImportError(f'Unsupported feature extractor {self.feature_extractor!r}; '
                               f'supported: {sorted(known)}.')
    out = dict(known[self.feature_extractor])
    out['depthwise_heads'] = self.use_depthwise
    out['num_classes'] = self.num_classes
    return out


def read_pipeline_config(text: str, source: str = 'pipeline.config') -> ZooModel:
  """Parses the fields of `model { center_net { ... } }` the importer needs (`source` names
  the file in parse errors)."""
  root = text_proto.parse_text_proto(text, source)
  cn = text_proto.get(root, 'model.center_net')
  if cn is None:
    raise ArchiveImportError('pipeline.config has no model { center_net { ... } } section.')
  fe = text_proto.get(cn, 'feature_extractor', {})
  fe_type = text_proto.get(fe, 'type')
  if fe_type is None:
    raise ArchiveImportError('pipeline.config: center_net.feature_extractor.type is missing.')
  if fe_type == 'mobilenet_v2_fpn' and text_proto.get(fe, 'use_separable_conv', False):
    fe_type = 'mobilenet_v2_fpn_sep_conv'
  resizer = text_proto.get(cn, 'image_resizer.keep_aspect_ratio_resizer')
  if resizer is None:
    raise ArchiveImportError('pipeline.config: only keep_aspect_ratio_resizer is supported '
                       '(every zoo CenterNet uses it).')
  min_dim = text_proto.get(resizer, 'min_dimension', 600)
  max_dim = text_proto.get(resizer, 'max_dimension', 1024)
  if min_dim != max_dim or not text_proto.get(resizer, 'pad_to_max_dimension', False):
    raise ArchiveImportError(f'pipeline.config: the resizer must be square and padded (min = max '
                       f'dimension, pad_to_max_dimension); got {min_dim}/{max_dim}.')
  tasks = tuple(str(text_proto.get(t, 'task_name', 'keypoint'))
                for t in cn.get('keypoint_estimation_task', []))
  settings = []
  for t in cn.get('keypoint_estimation_task', []):
    d = {'task_name': str(text_proto.get(t, 'task_name', 'keypoint')),
         'per_keypoint_offset': bool(text_proto.get(t, 'per_keypoint_offset', False)),
         'candidate_ranking_mode': str(text_proto.get(t, 'candidate_ranking_mode', 'min_distance'))}
    for theirs, ours in KEYPOINT_TASK_FIELDS.items():
      if text_proto.get(t, theirs) is not None:
        d[ours] = text_proto.get(t, theirs)
    settings.append(d)
  return ZooModel(
      feature_extractor=str(fe_type), num_classes=int(text_proto.get(cn, 'num_classes', 0)),
      input_size=int(max_dim), use_depthwise=bool(text_proto.get(cn, 'use_depthwise', False)),
      keypoint_tasks=tasks,
      max_box_predictions=int(text_proto.get(cn, 'object_center_params.max_box_predictions', 100)),
      channel_means=tuple(fe.get('channel_means', [])),
      channel_stds=tuple(fe.get('channel_stds', [])),
      bgr_ordering=bool(text_proto.get(fe, 'bgr_ordering', False)),
      keypoint_settings=tuple(settings))


# ------------------------------------------------------------------------------------------
# Experiments.


def config_mismatches(config, zoo: ZooModel, with_keypoints: bool = True) -> List[str]:
  """The experiment fields that disagree with the pipeline.config.

  `with_keypoints`: the archive's keypoint tasks are imported, so the experiment must have
  `keypoints.enabled` exactly when the archive has a keypoint task (False: a box-only import,
  which accepts either experiment and switches keypoints off).
  """
  problems = []
  kp_enabled = bool(config.keypoints.enabled)
  if with_keypoints and kp_enabled != bool(zoo.keypoint_tasks):
    problems.append(f'keypoints.enabled is {kp_enabled}, the archive has keypoint tasks '
                    f'{list(zoo.keypoint_tasks)}')
  for key, want in zoo.model_overrides().items():
    have = config.model
    for part in key.split('.'):  # 'backbone_kwargs.<backbone>.<field>' is nested
      have = have[part]
    if key == 'num_classes' and have in (0, None):
      continue  # 0: taken from the label map; the importer sets it.
    if have != want:
      problems.append(f'model.{key} is {have!r}, the archive needs {want!r}')
  if int(config.input.size) != zoo.input_size:
    problems.append(f'input.size is {config.input.size}, the archive was trained at '
                    f'{zoo.input_size}')
  if float(config.model.width_multiplier) != 1.0:
    problems.append(f'model.width_multiplier is {config.model.width_multiplier}, the zoo '
                    'models have 1.0')
  return problems


def find_experiment(archive: str, zoo: ZooModel, experiments_dir: str = 'experiments',
                    with_keypoints: bool = True) -> str:
  """`experiments/<archive name>.py`, else the single experiment matching `zoo` (a broken
  experiment file raises `experiments.ExperimentError` naming it)."""
  name = os.path.basename(os.path.normpath(archive))
  candidate = os.path.join(experiments_dir, name + '.py')
  if os.path.exists(candidate):
    return candidate
  matches = [path for path, config in experiments.load_folder(experiments_dir)
             if not config_mismatches(config, zoo, with_keypoints)]
  if len(matches) == 1:
    return matches[0]
  why = ('several match: ' + ', '.join(matches)) if matches else 'none matches'
  raise ArchiveImportError(
      f'No experiment file for archive {name!r}: {candidate} does not exist and, among '
      f'{experiments_dir}/*.py, {why} (feature extractor {zoo.feature_extractor}, input '
      f'{zoo.input_size}, {zoo.num_classes} classes). Pass --experiment experiments/<file>.py.')


# ------------------------------------------------------------------------------------------
# Label map.


def zoo_label_map(num_classes: int):
  """The zoo label map: COCO ids with channel = id - 1 (90 channels for COCO)."""
  cats = [(i, n) for i, n in COCO_CATEGORIES if i <= num_classes]
  if not cats:
    raise ArchiveImportError(f'num_classes {num_classes} holds no COCO category id.')
  return coco_json.LabelMap(cats, 'id_minus_one')


def zoo_keypoint_spec(zoo: ZooModel, tf_variables: Dict[str, Any], label_map):
  """The `KeypointSpec` of the archive's (single) keypoint task.

  J is read from the checkpoint's heatmap head (`[1, 1, C, J]` final kernel); a checkpoint
  without keypoint heads (an ExtremeNet or ImageNet init for 'detection' / 'classification')
  gives the zoo's 17 and the pipeline.config's `per_keypoint_offset`. The zoo's
  `human_pose` task on person has COCO's 17 joints (names, skeleton, flip permutation, OKS
  sigmas and std devs from keypoint_spec.py); another J gets names `keypoint_<j>` and no
  left/right pairing. The task's class is person (`/m/01g317`, COCO id 1) in every zoo config.
  """
  settings = zoo.keypoint_settings[0]
  if settings.get('candidate_ranking_mode', 'min_distance') != 'min_distance':
    raise ArchiveImportError(
        f"keypoint task {settings['task_name']!r}: candidate_ranking_mode "
        f"{settings['candidate_ranking_mode']!r}; only 'min_distance' (the zoo's) is implemented.")
  task = settings['task_name']
  heads = {}
  for kind in ('heatmap', 'offset'):
    key = tf_checkpoint.variable_key(
        tf_checkpoint.head_object_path(f'{task}/keypoint/{kind}', 0) + '/layer_with_weights-1',
        'kernel')
    if key in tf_variables:
      heads[kind] = int(np.shape(tf_variables[key])[-1])
  if 'heatmap' in heads:
    num = heads['heatmap']
    per_keypoint_offset = heads.get('offset') == 2 * num
  else:
    num = len(kps.COCO_KEYPOINT_NAMES)
    per_keypoint_offset = bool(settings.get('per_keypoint_offset', True))
  category = kps.coco_person_category()
  if num != len(kps.COCO_KEYPOINT_NAMES):
    category = dict(category, keypoints=[f'keypoint_{j}' for j in range(num)], skeleton=[])
  overrides = {'task_name': task, 'per_keypoint_offset': per_keypoint_offset}
  return kps.spec_from_category(category, label_map.id_to_channel(category['id']), overrides)


# ------------------------------------------------------------------------------------------
# Import: `import_archive` runs these steps in order.


def read_archive(archive: str) -> ZooModel:
  """Step 1: the archive's pipeline.config."""
  config_path = file_io.join(archive, 'pipeline.config')
  if not file_io.exists(config_path):
    raise ArchiveImportError(f'{config_path} does not exist (expected the unpacked zoo archive).')
  with file_io.open_file(config_path) as f:
    return read_pipeline_config(f.read(), config_path)


def choose_experiment(archive: str, zoo: ZooModel, experiment: Optional[str],
                      experiments_dir: str, with_keypoints: bool):
  """Step 2: (experiment path, its config), checked against the pipeline.config."""
  experiment = experiment or find_experiment(archive, zoo, experiments_dir, with_keypoints)
  config = experiments.load_config(experiment)
  problems = config_mismatches(config, zoo, with_keypoints)
  if problems:
    raise ArchiveImportError(f'Experiment {experiment} does not match '
                             f'{file_io.join(archive, "pipeline.config")}: ' +
                             '; '.join(problems) + '.')
  return experiment, config


def check_import_target(workdir: str, zoo: ZooModel, with_keypoints: bool) -> None:
  """Step 3: an empty workdir, and at most one keypoint task to import."""
  manager = checkpointing.make_manager(workdir, read_only=True)
  latest = manager.latest_step()
  manager.close()
  if latest is not None:
    raise ArchiveImportError(f'{workdir} already holds checkpoints; choose an empty workdir.')
  if len(zoo.keypoint_tasks) > 1 and with_keypoints:
    raise ArchiveImportError(
        f'The archive has {len(zoo.keypoint_tasks)} keypoint tasks {list(zoo.keypoint_tasks)}; '
        'this project predicts one keypoint task (pass --skip_keypoint_heads for the boxes).')


def zoo_run(config, zoo: ZooModel, tf_vars: Dict[str, Any], with_keypoints: bool
            ) -> run_files.RunFiles:
  """Step 4: the run the archive becomes: the experiment's config with the zoo's classes,
  label map mode, detections and keypoint settings; the zoo label map; the keypoint task."""
  with config.unlocked():
    config.model.num_classes = zoo.num_classes
    config.dataset.label_map_mode = 'id_minus_one'
    config.eval.max_detections = zoo.max_box_predictions
  label_map = zoo_label_map(zoo.num_classes)
  spec = None
  if with_keypoints:
    spec = zoo_keypoint_spec(zoo, tf_vars, label_map)
    settings = {k: v for k, v in zoo.keypoint_settings[0].items()
                if k != 'candidate_ranking_mode'}
    with config.unlocked():
      config.keypoints.enabled = True
      for key, value in settings.items():
        have = config.keypoints.get(key)
        config.keypoints[key] = type(have)(value) if have is not None else value
  elif 'keypoints' in config:
    with config.unlocked():
      config.keypoints.enabled = False
  return run_files.RunFiles(config, run_files.label_map_json(label_map), spec)


def drop_keypoint_heads(tf_vars: Dict[str, Any], zoo: ZooModel, with_keypoints: bool
                        ) -> Tuple[Dict[str, Any], int]:
  """Step 5: without keypoints, the archive's keypoint head variables are dropped (counted in
  the summary). Returns (kept variables, number dropped)."""
  if with_keypoints or not zoo.keypoint_tasks:
    return tf_vars, 0
  prefixes = tuple(
      f'{tf_checkpoint.HEADS}/{tf_checkpoint.escape_segment(task + "/keypoint")}.S'
      for task in zoo.keypoint_tasks)
  kept = {k: v for k, v in tf_vars.items() if not k.startswith(prefixes)}
  return kept, len(tf_vars) - len(kept)


def convert(tf_vars: Dict[str, Any], run: run_files.RunFiles, model, init_type: str):
  """Step 6: the model's variables from the checkpoint. 'full' fills every variable (shapes
  suffice as the target); the other init types keep a fresh init outside their scope."""
  init_size = 128  # parameter shapes do not depend on the input size
  if init_type == 'full':
    template = model_variables.abstract_variables(model, init_size)
  else:
    template = jax.jit(lambda rng: model.init(
        rng, jnp.zeros((1, init_size, init_size, 3)), train=False))(
            jax.random.key(int(run.config.seed)))
  new_vars, report = tf_checkpoint.convert_variables(tf_vars, template, run.config.model,
                                                     init_type=init_type)
  variables = {'params': jax.tree.map(jnp.asarray, new_vars['params']),
               'batch_stats': jax.tree.map(jnp.asarray, new_vars.get('batch_stats', {}))}
  return variables, report


def write_workdir(workdir: str, run: run_files.RunFiles, variables: Dict[str, Any],
                  imported_from: Dict[str, Any]) -> None:
  """Step 7: step 0 of `workdir` (the TrainState with a fresh optimizer state, so training
  can resume there) and the run's side files."""
  tx, _ = optimizer_lib.make_optimizer(run.config)
  state = train_step.train_state_from_variables(variables, tx)
  meta = run_files.checkpoint_meta(run.config, run.label_map, run.keypoint_spec, 0,
                                   imported_from=imported_from)
  manager = checkpointing.make_manager(workdir, keep=1)
  checkpointing.save(manager, 0, state, meta)
  checkpointing.close(manager)
  run_files.write_run_files(workdir, run.config, run.label_map, run.keypoint_spec)


def import_archive(archive: str, workdir: str, *, experiment: Optional[str] = None,
                   init_type: str = 'full', skip_keypoint_heads: bool = False,
                   experiments_dir: str = 'experiments', checkpoint: Optional[str] = None
                   ) -> Dict[str, Any]:
  """Converts `archive` and writes step 0 of `workdir` (steps 1-7 above). Returns a summary
  dict."""
  zoo = read_archive(archive)
  with_keypoints = bool(zoo.keypoint_tasks) and not skip_keypoint_heads
  experiment, config = choose_experiment(archive, zoo, experiment, experiments_dir,
                                         with_keypoints)
  check_import_target(workdir, zoo, with_keypoints)
  tf_vars = tf_checkpoint.read_tf_checkpoint(checkpoint or archive)
  run = zoo_run(config, zoo, tf_vars, with_keypoints)
  tf_vars, skipped_keypoint_vars = drop_keypoint_heads(tf_vars, zoo, with_keypoints)
  variables, report = convert(tf_vars, run, run_files.build_model(run), init_type)
  write_workdir(workdir, run, variables, {
      'archive': file_io.absolute(archive), 'experiment': experiment, 'init_type': init_type,
      'conversion': report.summary()})
  spec = run.keypoint_spec
  return {'workdir': workdir, 'experiment': experiment, 'feature_extractor':
          zoo.feature_extractor, 'num_classes': zoo.num_classes, 'input_size': zoo.input_size,
          'num_params': int(sum(np.size(x) for x in jax.tree.leaves(variables['params']))),
          'conversion': report.summary(),
          'keypoints': (f'{spec.task_name}: {spec.num_keypoints} joints of '
                        f'{spec.category_name!r}' if spec is not None else None),
          'skipped_keypoint_head_variables': skipped_keypoint_vars}


def main(argv):
  del argv
  summary = import_archive(
      _ARCHIVE.value, _WORKDIR.value, experiment=_EXPERIMENT.value,
      init_type=_INIT_TYPE.value, skip_keypoint_heads=_SKIP_KPTS.value,
      experiments_dir=_EXPERIMENTS_DIR.value, checkpoint=_CHECKPOINT.value)
  logging.info('Imported: %s', summary)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  # Defined here, not at import: detect.py and main.py define --workdir too.
  _ARCHIVE = flags.DEFINE_string('archive', None,
                                 'Unpacked zoo archive: checkpoint/ckpt-0.* + pipeline.config.')
  _WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir to create (must hold no checkpoint).')
  _EXPERIMENT = flags.DEFINE_string('experiment', None,
                                    'Experiment file (default: picked from experiments/).')
  _INIT_TYPE = flags.DEFINE_enum('init_type', 'full', ['full', 'detection', 'classification'],
                                 'What to restore (tf_checkpoint.py).')
  _SKIP_KPTS = flags.DEFINE_bool('skip_keypoint_heads', False,
                                 'Import only the box model of a keypoint archive (its keypoint '
                                 'heads are dropped; keypoints are imported by default).')
  _EXPERIMENTS_DIR = flags.DEFINE_string('experiments_dir', 'experiments',
                                         'Where experiment files are looked up.')
  _CHECKPOINT = flags.DEFINE_string('checkpoint', None,
                                    'Checkpoint prefix (default: <archive>/checkpoint/, latest).')
  flags.mark_flags_as_required(['archive', 'workdir'])
  app.run(main)
