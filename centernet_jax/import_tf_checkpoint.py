r"""Imports a TF2-zoo CenterNet archive into a workdir of ours.

  python -m centernet_jax.import_tf_checkpoint \
      --archive centernet_resnet50_v1_fpn_512x512_coco17_tpu-8 --workdir runs/r50_zoo \
      [--experiment experiments/centernet_resnet50_v1_fpn_512x512_coco17_tpu-8.py] \
      [--init_type full|detection|classification] [--skip_keypoint_heads]

The archive directory holds `checkpoint/ckpt-0.{index,data-*}` and `pipeline.config` (as the
zoo tarballs unpack). What happens:
  1. `pipeline.config` is read with a small text-proto parser (no OD API protos needed) for
     the feature extractor type, num_classes, the keep-aspect-ratio resizer size, `use_depthwise`
     and the keypoint tasks (name, `per_keypoint_offset`, decoding parameters).
  2. The experiment file is `--experiment`, else `experiments/<archive dir name>.py`, else the
     one experiment under `experiments/` whose model/input settings match the pipeline.config;
     its settings are checked against the pipeline.config (a mismatch is refused, naming the
     fields).
  3. The checkpoint is converted by `centernet_jax.tf_checkpoint` (strict: an unused checkpoint
     variable, an unfilled parameter or a shape mismatch is refused, naming the variable).
  4. An orbax checkpoint is written in our workdir format (`checkpoints/0/{state,meta}`, see
     checkpointing.py): the TrainState at step 0 with the converted params/batch_stats and a
     fresh optimizer state; meta holds the config (with `model.num_classes` and
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
import glob
import importlib.util
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from centernet_jax import file_io
from centernet_jax.data import coco_categories

COCO_CATEGORIES = coco_categories.COCO_CATEGORIES

# Defaults of model config fields that the experiment may leave out (the builders' defaults).
MODEL_FIELD_DEFAULTS = {'depthwise_heads': False, 'use_separable_conv': True}

# OD API feature extractor type -> our model config fields.
FEATURE_EXTRACTORS: Dict[str, Dict[str, Any]] = {
    'resnet_v1_18_fpn': {'backbone': 'resnet_v1_fpn', 'depth': 18},
    'resnet_v1_34_fpn': {'backbone': 'resnet_v1_fpn', 'depth': 34},
    'resnet_v1_50_fpn': {'backbone': 'resnet_v1_fpn', 'depth': 50},
    'resnet_v1_101_fpn': {'backbone': 'resnet_v1_fpn', 'depth': 101},
    'resnet_v2_50': {'backbone': 'resnet_v2', 'depth': 50},
    'resnet_v2_101': {'backbone': 'resnet_v2', 'depth': 101},
    'hourglass_104': {'backbone': 'hourglass'},
    'mobilenet_v2_fpn': {'backbone': 'mobilenet_v2_fpn', 'use_separable_conv': False},
    'mobilenet_v2_fpn_sep_conv': {'backbone': 'mobilenet_v2_fpn', 'use_separable_conv': True},
}


class ArchiveImportError(ValueError):
  """The archive cannot be imported as asked (message says why and what to do)."""


# ------------------------------------------------------------------------------------------
# pipeline.config: a small text-proto reader.

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}\[\]:,;<>])|'
                    r'([^\s{}\[\]:,;<>"\']+))')


def _tokens(text: str) -> List[str]:
  out, pos = [], 0
  while pos < len(text):
    m = _TOKEN.match(text, pos)
    if not m or m.end() == pos:
      if text[pos:].strip():
        raise ArchiveImportError(f'pipeline.config: cannot parse near {text[pos:pos + 40]!r}')
      break
    pos = m.end()
    if m.group(1):
      continue
    out.append(m.group(2) or m.group(3) or m.group(4))
  return out


def _scalar(token: str) -> Any:
  if token[0] in '"\'':
    return bytes(token[1:-1], 'utf-8').decode('unicode_escape')
  if token in ('true', 'True'):
    return True
  if token in ('false', 'False'):
    return False
  try:
    return int(token)
  except ValueError:
    pass
  try:
    return float(token)
  except ValueError:
    return token  # enum value


def parse_text_proto(text: str) -> Dict[str, List[Any]]:
  """Text proto -> {field: [values]}; a message value is a nested dict of the same form."""
  tokens = _tokens(text)
  pos = 0

  def message(closing: Optional[str]) -> Dict[str, List[Any]]:
    nonlocal pos
    fields: Dict[str, List[Any]] = {}
    while pos < len(tokens):
      tok = tokens[pos]
      if tok in ('}', '>'):
        if closing is None:
          raise ArchiveImportError('pipeline.config: unbalanced braces')
        pos += 1
        return fields
      if tok in (',', ';'):
        pos += 1
        continue
      name = tok
      pos += 1
      if pos < len(tokens) and tokens[pos] == ':':
        pos += 1
      if pos >= len(tokens):
        raise ArchiveImportError(f'pipeline.config: field {name!r} has no value')
      tok = tokens[pos]
      if tok in ('{', '<'):
        pos += 1
        fields.setdefault(name, []).append(message(tok))
      elif tok == '[':
        pos += 1
        while tokens[pos] != ']':
          if tokens[pos] == ',':
            pos += 1
            continue
          if tokens[pos] in ('{', '<'):
            pos += 1
            fields.setdefault(name, []).append(message(tokens[pos - 1]))
          else:
            fields.setdefault(name, []).append(_scalar(tokens[pos]))
            pos += 1
        pos += 1
      else:
        fields.setdefault(name, []).append(_scalar(tok))
        pos += 1
    if closing is not None:
      raise ArchiveImportError('pipeline.config: missing closing brace')
    return fields

  return message(None)


def _get(msg: Dict[str, List[Any]], path: str, default: Any = None) -> Any:
  node: Any = msg
  for part in path.split('.'):
    if not isinstance(node, dict) or part not in node:
      return default
    node = node[part][0]
  return node


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
    if self.feature_extractor not in FEATURE_EXTRACTORS:
      raise ArchiveImportError(f'Unsupported feature extractor {self.feature_extractor!r}; '
                         f'supported: {sorted(FEATURE_EXTRACTORS)}.')
    out = dict(FEATURE_EXTRACTORS[self.feature_extractor])
    out['depthwise_heads'] = self.use_depthwise
    out['num_classes'] = self.num_classes
    return out


def read_pipeline_config(text: str) -> ZooModel:
  """Parses the fields of `model { center_net { ... } }` the importer needs."""
  root = parse_text_proto(text)
  cn = _get(root, 'model.center_net')
  if cn is None:
    raise ArchiveImportError('pipeline.config has no model { center_net { ... } } section.')
  fe = _get(cn, 'feature_extractor', {})
  fe_type = _get(fe, 'type')
  if fe_type is None:
    raise ArchiveImportError('pipeline.config: center_net.feature_extractor.type is missing.')
  if fe_type == 'mobilenet_v2_fpn' and _get(fe, 'use_separable_conv', False):
    fe_type = 'mobilenet_v2_fpn_sep_conv'
  resizer = _get(cn, 'image_resizer.keep_aspect_ratio_resizer')
  if resizer is None:
    raise ArchiveImportError('pipeline.config: only keep_aspect_ratio_resizer is supported '
                       '(every zoo CenterNet uses it).')
  min_dim, max_dim = _get(resizer, 'min_dimension', 600), _get(resizer, 'max_dimension', 1024)
  if min_dim != max_dim or not _get(resizer, 'pad_to_max_dimension', False):
    raise ArchiveImportError(f'pipeline.config: the resizer must be square and padded (min = max '
                       f'dimension, pad_to_max_dimension); got {min_dim}/{max_dim}.')
  tasks = tuple(str(_get(t, 'task_name', 'keypoint'))
                for t in cn.get('keypoint_estimation_task', []))
  settings = []
  for t in cn.get('keypoint_estimation_task', []):
    d = {'task_name': str(_get(t, 'task_name', 'keypoint')),
         'per_keypoint_offset': bool(_get(t, 'per_keypoint_offset', False)),
         'candidate_ranking_mode': str(_get(t, 'candidate_ranking_mode', 'min_distance'))}
    for theirs, ours in KEYPOINT_TASK_FIELDS.items():
      if _get(t, theirs) is not None:
        d[ours] = _get(t, theirs)
    settings.append(d)
  return ZooModel(
      feature_extractor=str(fe_type), num_classes=int(_get(cn, 'num_classes', 0)),
      input_size=int(max_dim), use_depthwise=bool(_get(cn, 'use_depthwise', False)),
      keypoint_tasks=tasks,
      max_box_predictions=int(_get(cn, 'object_center_params.max_box_predictions', 100)),
      channel_means=tuple(fe.get('channel_means', [])),
      channel_stds=tuple(fe.get('channel_stds', [])),
      bgr_ordering=bool(_get(fe, 'bgr_ordering', False)),
      keypoint_settings=tuple(settings))


# ------------------------------------------------------------------------------------------
# Experiments.


def load_experiment(path: str):
  """`get_config()` of an experiment file."""
  spec = importlib.util.spec_from_file_location(
      '_experiment_' + re.sub(r'\W', '_', os.path.basename(path)), path)
  if spec is None or spec.loader is None:
    raise ArchiveImportError(f'Cannot load experiment file {path}.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def config_mismatches(config, zoo: ZooModel, with_keypoints: bool = True) -> List[str]:
  """The experiment fields that disagree with the pipeline.config.

  `with_keypoints`: the archive's keypoint tasks are imported, so the experiment must have
  `keypoints.enabled` exactly when the archive has a keypoint task (False: a box-only import,
  which accepts either experiment and switches keypoints off).
  """
  problems = []
  kp_enabled = bool((config.get('keypoints') or {}).get('enabled', False))
  if with_keypoints and kp_enabled != bool(zoo.keypoint_tasks):
    problems.append(f'keypoints.enabled is {kp_enabled}, the archive has keypoint tasks '
                    f'{list(zoo.keypoint_tasks)}')
  for key, want in zoo.model_overrides().items():
    have = config.model.get(key, MODEL_FIELD_DEFAULTS.get(key))
    if key == 'num_classes' and have in (0, None):
      continue  # 0: taken from the label map; the importer sets it.
    if have != want:
      problems.append(f'model.{key} is {have!r}, the archive needs {want!r}')
  if int(config.input.size) != zoo.input_size:
    problems.append(f'input.size is {config.input.size}, the archive was trained at '
                    f'{zoo.input_size}')
  if float(config.model.get('width_multiplier', 1.0)) != 1.0:
    problems.append(f'model.width_multiplier is {config.model.width_multiplier}, the zoo '
                    'models have 1.0')
  return problems


def find_experiment(archive: str, zoo: ZooModel, experiments_dir: str = 'experiments',
                    with_keypoints: bool = True) -> str:
  """`experiments/<archive name>.py`, else the single experiment matching `zoo`."""
  name = os.path.basename(os.path.normpath(archive))
  candidate = os.path.join(experiments_dir, name + '.py')
  if os.path.exists(candidate):
    return candidate
  matches = []
  for path in sorted(glob.glob(os.path.join(experiments_dir, '*.py'))):
    try:
      config = load_experiment(path)
    except Exception:  # pylint: disable=broad-except
      continue
    if not config_mismatches(config, zoo, with_keypoints):
      matches.append(path)
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
  from centernet_jax.data import coco_json  # pylint: disable=g-import-not-at-top
  cats = [(i, n) for i, n in COCO_CATEGORIES if i <= num_classes]
  if not cats:
    raise ArchiveImportError(f'num_classes {num_classes} holds no COCO category id.')
  return coco_json.LabelMap(cats, 'id_minus_one')


def label_map_json(label_map) -> Dict[str, Any]:
  """The label map as stored in checkpoint meta (`LabelMap.to_json_dict` when it exists).

  Per channel: `names` and `category_ids` (unused channels: id -1, name 'unused_<id>').
  """
  to_json = getattr(label_map, 'to_json_dict', None)
  if to_json is not None:
    return to_json()
  ids = [int(i) for i in label_map.channel_to_id_array]
  names = [label_map.channel_to_name(ch) if cid >= 0 else f'unused_{ch + 1}'
           for ch, cid in enumerate(ids)]
  return {'mode': label_map.mode, 'num_channels': int(label_map.num_channels),
          'names': names, 'category_ids': ids, 'categories': label_map.categories()}


def zoo_keypoint_spec(zoo: ZooModel, tf_variables: Dict[str, Any], label_map):
  """The `KeypointSpec` of the archive's (single) keypoint task.

  J is read from the checkpoint's heatmap head (`[1, 1, C, J]` final kernel); a checkpoint
  without keypoint heads (an ExtremeNet or ImageNet init for 'detection' / 'classification')
  gives the zoo's 17 and the pipeline.config's `per_keypoint_offset`. The zoo's
  `human_pose` task on person has COCO's 17 joints (names, skeleton, flip permutation, OKS
  sigmas and std devs from keypoint_spec.py); another J gets names `keypoint_<j>` and no
  left/right pairing. The task's class is person (`/m/01g317`, COCO id 1) in every zoo config.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from centernet_jax import keypoint_spec as kps  # pylint: disable=g-import-not-at-top
  from centernet_jax import tf_checkpoint  # pylint: disable=g-import-not-at-top
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
# Import.


def import_archive(archive: str, workdir: str, *, experiment: Optional[str] = None,
                   init_type: str = 'full', skip_keypoint_heads: bool = False,
                   experiments_dir: str = 'experiments', checkpoint: Optional[str] = None
                   ) -> Dict[str, Any]:
  """Converts `archive` and writes step 0 of `workdir`. Returns a summary dict."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from centernet_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from centernet_jax import models  # pylint: disable=g-import-not-at-top
  from centernet_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from centernet_jax import tf_checkpoint  # pylint: disable=g-import-not-at-top
  from centernet_jax import train  # pylint: disable=g-import-not-at-top

  config_path = file_io.join(archive, 'pipeline.config')
  if not file_io.exists(config_path):
    raise ArchiveImportError(f'{config_path} does not exist (expected the unpacked zoo archive).')
  with file_io.open_file(config_path) as f:
    zoo = read_pipeline_config(f.read())
  with_keypoints = bool(zoo.keypoint_tasks) and not skip_keypoint_heads
  experiment = experiment or find_experiment(archive, zoo, experiments_dir, with_keypoints)
  config = load_experiment(experiment)
  problems = config_mismatches(config, zoo, with_keypoints)
  if problems:
    raise ArchiveImportError(f'Experiment {experiment} does not match {config_path}: ' +
                       '; '.join(problems) + '.')
  if checkpointing.make_manager(workdir, read_only=True).latest_step() is not None:
    raise ArchiveImportError(f'{workdir} already holds checkpoints; choose an empty workdir.')
  if len(zoo.keypoint_tasks) > 1 and with_keypoints:
    raise ArchiveImportError(
        f'The archive has {len(zoo.keypoint_tasks)} keypoint tasks {list(zoo.keypoint_tasks)}; '
        'this project predicts one keypoint task (pass --skip_keypoint_heads for the boxes).')
  tf_vars = tf_checkpoint.read_tf_checkpoint(checkpoint or archive)

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
  model = models.build_model(config.model, zoo.num_classes, spec)
  init_size = 128  # parameter shapes do not depend on the input size
  if init_type == 'full':
    variables = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, init_size, init_size, 3)), train=False))
  else:
    variables = jax.jit(lambda rng: model.init(
        rng, jnp.zeros((1, init_size, init_size, 3)), train=False))(
            jax.random.key(int(config.seed)))
  extra_skips = {}
  for task in (zoo.keypoint_tasks if not with_keypoints else ()):
    extra_skips[f'{tf_checkpoint.HEADS}/{tf_checkpoint.escape_segment(task + "/keypoint")}'] = (
        'keypoint head (--skip_keypoint_heads)')
  skipped_keypoint_vars = 0
  if extra_skips:  # dropped on request, counted in the summary
    prefixes = tuple(p + '.S' for p in extra_skips)
    kept = {k: v for k, v in tf_vars.items() if not k.startswith(prefixes)}
    skipped_keypoint_vars = len(tf_vars) - len(kept)
    tf_vars = kept
  new_vars, report = tf_checkpoint.convert_variables(tf_vars, variables, config.model,
                                                     init_type=init_type)
  params = jax.tree.map(jnp.asarray, new_vars['params'])
  batch_stats = jax.tree.map(jnp.asarray, new_vars.get('batch_stats', {}))
  tx, _ = optimizer_lib.make_optimizer(config)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           batch_stats=batch_stats, opt_state=tx.init(params))
  lm_json = label_map_json(label_map)
  if spec is not None:
    lm_json['keypoints'] = spec.to_json_dict()
  meta = {'step': 0, 'config': json.loads(config.to_json_best_effort()), 'label_map': lm_json,
          'imported_from': {'archive': file_io.absolute(archive), 'experiment': experiment,
                            'init_type': init_type, 'conversion': report.summary()}}
  manager = checkpointing.make_manager(workdir, keep=1)
  checkpointing.save(manager, 0, state, meta)
  manager.wait_until_finished()
  manager.close()
  file_io.makedirs(workdir)
  with file_io.open_file(file_io.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  with file_io.open_file(file_io.join(workdir, 'label_map.json'), 'w') as f:
    json.dump(lm_json, f, indent=2)
  num_params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
  return {'workdir': workdir, 'experiment': experiment, 'feature_extractor':
          zoo.feature_extractor, 'num_classes': zoo.num_classes, 'input_size': zoo.input_size,
          'num_params': num_params, 'conversion': report.summary(),
          'keypoints': (f'{spec.task_name}: {spec.num_keypoints} joints of '
                        f'{spec.category_name!r}' if spec is not None else None),
          'skipped_keypoint_head_variables': skipped_keypoint_vars}


def main(argv):
  del argv
  from absl import logging  # pylint: disable=g-import-not-at-top
  summary = import_archive(
      _ARCHIVE.value, _WORKDIR.value, experiment=_EXPERIMENT.value,
      init_type=_INIT_TYPE.value, skip_keypoint_heads=_SKIP_KPTS.value,
      experiments_dir=_EXPERIMENTS_DIR.value, checkpoint=_CHECKPOINT.value)
  logging.info('Imported: %s', summary)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
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
