"""Start-up check of a whole configuration, before any data is read or any model is built.

`check_config(config, num_devices=..., num_processes=...)` raises one `ConfigError` listing
every problem, each as `<field>=<value>: <what is allowed>`:
- fields that `config_base.base_config()` does not have (a typo in an experiment file), with
  the nearest valid name;
- values whose type differs from the default's (a string where a number belongs, a tuple
  element that is not a number: `--config.optimizer.manual_rates=abc` gives `('abc',)`);
- the augmentation spec `input.augmentations` (augment.spec_problems: unknown ops and
  arguments, values outside their ranges);
- zeros and negatives where they make no sense (batch sizes, steps, `keep_checkpoints`,
  `model.width_multiplier`, warmup, ...), probabilities outside [0, 1], min > max pairs, names
  outside their choices;
- batch sizes that the device mesh or the process count does not divide (found here instead
  of after the model is compiled).
`check_num_classes(config, num_channels)` checks `model.num_classes` against the dataset.
`unknown_overrides(config, names)` explains command-line overrides of fields that do not exist.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Sequence

import ml_collections

from centernet_jax import config_base
from centernet_jax import nms
from centernet_jax import tta
from centernet_jax.data import augment
from centernet_jax.data import coco_json
from centernet_jax.data import image_check
from centernet_jax.data import sources

BACKBONES = ('hourglass', 'mobilenet_v2_fpn', 'resnet_v1_fpn', 'resnet_v2')

_POSITIVE_INT = (
    'batch_size', 'num_train_steps', 'log_every_steps', 'checkpoint_every_steps',
    'keep_checkpoints', 'eval.batch_size', 'eval.max_detections', 'dataset.max_boxes',
    'dataset.shuffle_buffer', 'dataset.synthetic_num_train', 'dataset.synthetic_num_val',
    'dataset.synthetic_image_size', 'dataset.synthetic_min_object_size', 'input.size',
    'model.head_channels', 'keypoints.num_candidates')
_NON_NEGATIVE = (
    'eval_every_steps', 'eval.num_examples', 'optimizer.warmup_steps', 'model.num_classes',
    'dataset.image_check_threads', 'dataset.max_image_pixels', 'dataset.cache_max_mib',
    'keypoints.offset_peak_radius', 'optimizer.warmup_learning_rate', 'optimizer.grad_clip_norm',
    'loss.center_weight', 'loss.scale_weight', 'loss.offset_weight',
    'loss.focal_alpha', 'loss.focal_beta', 'keypoints.heatmap_loss_weight',
    'keypoints.offset_loss_weight', 'keypoints.regression_loss_weight',
    'seed', 'dataset.synthetic_seed')
_POSITIVE = ('model.width_multiplier', 'optimizer.learning_rate', 'optimizer.adam_epsilon',
             'keypoints.box_scale', 'keypoints.candidate_search_scale')
_PROBABILITY = ('keypoints.candidate_score_threshold', 'keypoints.unmatched_score')
_OPEN_UNIT = ('targets.min_overlap',)  # strictly between 0 and 1
_CHOICES = {
    'dataset.source': sources.NAMES,
    'dataset.label_map_mode': coco_json.LABEL_MAP_MODES,
    'dataset.check_images': image_check.MODES,
    'model.backbone': BACKBONES,
    'model.dtype': ('float32', 'bfloat16'),
    'model.head_dtype': ('', 'float32', 'bfloat16'),
    'optimizer.schedule': ('cosine', 'manual_steps'),
    'targets.radius_variant': ('odapi', 'corrected'),
    'eval.tta': tta.MODES,
    'eval.tta_nms': nms.METHODS,
}
_DEPTHS = {'resnet_v1_fpn': (18, 34, 50, 101), 'resnet_v2': (50, 101)}


class ConfigError(ValueError):
  """A configuration that cannot run; the message lists every problem found."""


def _flatten(config, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def _nearest(name: str, candidates: Iterable[str]) -> str:
  candidates = list(candidates)
  close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
  if not close:  # a typo in the last part: compare that part alone
    tail = name.rsplit('.', 1)[-1]
    tails = {c.rsplit('.', 1)[-1]: c for c in candidates}
    hit = difflib.get_close_matches(tail, list(tails), n=1, cutoff=0.6)
    close = [tails[hit[0]]] if hit else []
  return f" (did you mean '{close[0]}'?)" if close else ''


def _is_number(v) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(float(v)))


def _type_problem(name: str, value, default) -> str | None:
  """What is wrong with `value`'s type given the default's, or None."""
  if isinstance(default, bool):
    ok = isinstance(value, bool)
    want = 'True or False'
  elif isinstance(default, int):
    ok = isinstance(value, int) and not isinstance(value, bool)
    want = 'an integer'
  elif isinstance(default, float):
    ok = _is_number(value)
    want = 'a finite number'
  elif isinstance(default, str):
    ok = isinstance(value, str)
    want = 'a string'
  elif isinstance(default, (tuple, list)):
    if not isinstance(value, (tuple, list)):
      return f'{name}={value!r}: must be a tuple of numbers'
    bad = [v for v in value if not _is_number(v)]
    if bad:
      return (f'{name}={tuple(value)!r}: every element must be a number, got {bad[0]!r} '
              "(write it as --config.{name}='(a, b)')".replace('{name}', name))
    return None
  else:
    return None
  return None if ok else f'{name}={value!r}: must be {want}'


def unknown_overrides(config: ml_collections.ConfigDict, names: Sequence[str]) -> list[str]:
  """Messages for dotted field names (`config.` prefix optional) that `config` lacks."""
  known = _flatten(config)
  groups = {k.rsplit('.', 1)[0] for k in known if '.' in k}
  out = []
  for name in names:
    field = name[len('config.'):] if name.startswith('config.') else name
    if field in known or field in groups:
      continue
    out.append(f"--config.{field}: the config has no field '{field}'"
               f'{_nearest(field, list(known) + sorted(groups))}')
  return out


def check_config(config: ml_collections.ConfigDict, *, num_devices: int,
                 num_processes: int) -> None:
  """Raises ConfigError listing every problem of `config` (see the module docstring)."""
  problems = []
  flat = _flatten(config)
  defaults = _flatten(config_base.base_config())
  for name, value in flat.items():
    if name not in defaults:
      problems.append(f"{name}: not a config field{_nearest(name, defaults)}")
      continue
    p = _type_problem(name, value, defaults[name])
    if p:
      problems.append(p)
  missing = [n for n in defaults if n not in flat]
  problems += [f'{n}: missing (an experiment file must start from config_base.base_config())'
               for n in missing]
  if problems:  # the value checks below assume the fields exist with the right types
    raise ConfigError(_message(problems))

  def num(name):
    return flat[name]

  for name in _POSITIVE_INT:
    if num(name) < 1:
      problems.append(f'{name}={num(name)!r}: must be >= 1')
  for name in _NON_NEGATIVE:
    if num(name) < 0:
      problems.append(f'{name}={num(name)!r}: must be >= 0')
  for name in _POSITIVE:
    if num(name) <= 0:
      problems.append(f'{name}={num(name)!r}: must be > 0')
  for name in _PROBABILITY:
    if not 0 <= num(name) <= 1:
      problems.append(f'{name}={num(name)!r}: must be in [0, 1]')
  for name in _OPEN_UNIT:
    if not 0 < num(name) < 1:
      problems.append(f'{name}={num(name)!r}: must be strictly between 0 and 1')
  problems += augment.spec_problems(num('input.augmentations'))
  for name, choices in _CHOICES.items():
    if num(name) not in choices:
      problems.append(f'{name}={num(name)!r}: must be one of {list(choices)}'
                      f'{_nearest(str(num(name)), choices)}')
  depths = _DEPTHS.get(num('model.backbone'))
  if depths and num('model.depth') not in depths:
    problems.append(f"model.depth={num('model.depth')!r}: model.backbone="
                    f"{num('model.backbone')!r} has depths {list(depths)}")
  if num('input.size') % 4:
    problems.append(f"input.size={num('input.size')}: must be a multiple of 4 (output stride)")
  if num('optimizer.schedule') == 'cosine':
    if num('optimizer.warmup_steps') >= num('num_train_steps') > 0:
      problems.append(f"optimizer.warmup_steps={num('optimizer.warmup_steps')}: must be "
                      f"smaller than num_train_steps={num('num_train_steps')}")
  else:
    bounds = [int(b) for b in num('optimizer.manual_boundaries')]
    rates = list(num('optimizer.manual_rates'))
    if len(rates) != len(bounds) + 1:
      problems.append(f'optimizer.manual_rates={tuple(rates)!r}: needs one more entry than '
                      f'optimizer.manual_boundaries={tuple(bounds)!r}')
    if bounds != sorted(set(bounds)) or (bounds and bounds[0] <= 0):
      problems.append(f'optimizer.manual_boundaries={tuple(bounds)!r}: must be positive and '
                      'strictly increasing')
    if any(r <= 0 for r in rates):
      problems.append(f'optimizer.manual_rates={tuple(rates)!r}: must be > 0')
  for name in ('keypoints.std_devs', 'keypoints.oks_sigmas'):
    if any(v <= 0 for v in num(name)):
      problems.append(f'{name}={tuple(num(name))!r}: every value must be > 0')
  perm = num('keypoints.flip_permutation')
  if any(int(v) != v or v < 0 for v in perm):
    problems.append(f'keypoints.flip_permutation={tuple(perm)!r}: must be joint indices >= 0')
  problems += _tta_problems(flat)
  problems += _mesh_problems(flat, num_devices, num_processes)
  if problems:
    raise ConfigError(_message(problems))


def _tta_problems(flat) -> list[str]:
  problems = []
  scales = tuple(flat['eval.tta_scales'])
  if not scales or any(not s > 0 for s in scales):
    problems.append(f'eval.tta_scales={scales!r}: must be one or more scales > 0')
  if not 0 <= flat['eval.tta_nms_iou'] <= 1:
    problems.append(f"eval.tta_nms_iou={flat['eval.tta_nms_iou']!r}: must be in [0, 1]")
  if not flat['eval.tta_soft_nms_sigma'] > 0:
    problems.append(f"eval.tta_soft_nms_sigma={flat['eval.tta_soft_nms_sigma']!r}: must be > 0")
  return problems


def _mesh_problems(flat, num_devices: int, num_processes: int) -> list[str]:
  """The mesh must fit the devices and the batch sizes must split over it and the processes."""
  out = []
  fsdp, data = flat['mesh.fsdp'], flat['mesh.data']
  if fsdp < 1 or num_devices % fsdp:
    return [f'mesh.fsdp={fsdp}: must be >= 1 and divide the {num_devices} devices']
  if data == -1:
    data = num_devices // fsdp
  if data < 1 or num_devices % (data * fsdp):
    return [f"mesh.data={flat['mesh.data']}: with mesh.fsdp={fsdp} must be -1 or a count "
            f'that, times mesh.fsdp, divides the {num_devices} devices']
  size = data * fsdp
  for name in ('batch_size', 'eval.batch_size'):
    b = flat[name]
    if b >= 1 and b % size:
      out.append(f'{name}={b}: must be divisible by the {size} devices of the mesh '
                 f'(e.g. {max(size, b - b % size)})')
    elif b >= 1 and b % num_processes:
      out.append(f'{name}={b}: must be divisible by the {num_processes} processes')
  return out


def check_num_classes(config: ml_collections.ConfigDict, num_channels: int,
                      source: str) -> None:
  """`model.num_classes` must be 0 (take the dataset's) or equal the dataset's channels."""
  n = config.model.num_classes
  if n and n != num_channels:
    raise ConfigError(_message([
        f'model.num_classes={n}: the dataset ({source}) has {num_channels} class channels '
        f'(dataset.label_map_mode={config.dataset.label_map_mode!r}); set 0 to take them from '
        'the dataset, or point the dataset at annotations with that many categories']))


def _message(problems: list[str]) -> str:
  head = f'invalid configuration ({len(problems)} problem{"s" * (len(problems) > 1)}):'
  return '\n'.join([head] + [f'  {p}' for p in problems])
