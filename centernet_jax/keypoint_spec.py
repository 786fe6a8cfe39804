"""What a keypoint task is: joint names, skeleton, flip permutation, std devs and OKS sigmas.

A keypoint task belongs to one category of a COCO-format dataset (the zoo's `human_pose` task on
`person`). Its joints come from that category's `keypoints` (names) and `skeleton` (1-based
pairs, as COCO writes them) fields; the rest is derived from the names unless the config's
`keypoints` section overrides it:

- `flip_permutation[j]` is the joint that joint `j` becomes under a horizontal flip: a name with
  the word 'left' is paired with the same name with 'right' (and back), case-insensitively,
  e.g. `left_eye` <-> `right_eye`, `hand_left` <-> `hand_right`; joints without a partner map
  to themselves. For COCO this is [0, 2, 1, 4, 3, ..., 16, 15].
- `std_devs[j]` multiplies the box sigma to give joint j's heatmap sigma
  (docs/odapi_reference.md, section 5).
  Known COCO joint names take the zoo's table (nose .26, eyes .25, ears .35, shoulders .79,
  elbows .72, wrists .62, hips 1.07, knees .89, ankles .89); other names take 1.0, the OD API's
  default for unlisted keypoints.
- `oks_sigmas[j]` are the per-joint constants of COCO's OKS. Known COCO names take COCO's
  sigmas (nose .026, eyes .025, ears .035, shoulders .079, elbows .072, wrists .062, hips .107,
  knees .087, ankles .089); other names take 0.05, the OD API evaluator's default when no
  sigmas are configured (`DEFAULT_OKS_SIGMA`).

Everything here is plain Python (no JAX, no TF): the spec travels in checkpoint metadata as
JSON (`to_json_dict` / `from_json_dict`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional, Sequence

from centernet_jax import config_base

COCO_KEYPOINT_NAMES = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
    'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
# COCO's person skeleton, 1-based as in the annotation files.
COCO_SKELETON_1BASED = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
COCO_FLIP_PERMUTATION = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

_BODY_PART_STD = {  # the zoo configs' keypoint_label_to_std, by body part
    'nose': 0.26, 'eye': 0.25, 'ear': 0.35, 'shoulder': 0.79, 'elbow': 0.72, 'wrist': 0.62,
    'hip': 1.07, 'knee': 0.89, 'ankle': 0.89}
_BODY_PART_OKS_SIGMA = {  # pycocotools' COCO keypoint sigmas, by body part
    'nose': 0.026, 'eye': 0.025, 'ear': 0.035, 'shoulder': 0.079, 'elbow': 0.072,
    'wrist': 0.062, 'hip': 0.107, 'knee': 0.087, 'ankle': 0.089}
DEFAULT_STD_DEV = 1.0
DEFAULT_OKS_SIGMA = 0.05


def _body_part(name: str) -> Optional[str]:
  """'left_eye' -> 'eye' for the COCO joint names, else None."""
  if name not in COCO_KEYPOINT_NAMES:
    return None
  return name.split('_', 1)[-1]


def default_std_devs(names: Sequence[str]) -> tuple[float, ...]:
  return tuple(_BODY_PART_STD.get(_body_part(n), DEFAULT_STD_DEV) for n in names)


def default_oks_sigmas(names: Sequence[str]) -> tuple[float, ...]:
  return tuple(_BODY_PART_OKS_SIGMA.get(_body_part(n), DEFAULT_OKS_SIGMA) for n in names)


def _swap_side(name: str) -> Optional[str]:
  """The name with 'left' and 'right' exchanged (case kept), or None if it has neither."""
  if not re.search('left|right', name, flags=re.IGNORECASE):
    return None

  def swap(m):
    word = m.group(0)
    other = 'right' if word.lower() == 'left' else 'left'
    if word.isupper():
      return other.upper()
    if word[0].isupper():
      return other.capitalize()
    return other

  return re.sub('left|right', swap, name, flags=re.IGNORECASE)


def flip_permutation_from_names(names: Sequence[str]) -> tuple[int, ...]:
  """`perm[j]`: the joint joint `j` becomes under a horizontal flip (left <-> right by name)."""
  index = {n: i for i, n in enumerate(names)}
  perm = []
  for i, name in enumerate(names):
    other = _swap_side(name)
    perm.append(index.get(other, i) if other is not None else i)
  for i, p in enumerate(perm):
    if perm[p] != i:
      raise ValueError(f'keypoint names {list(names)}: the left/right pairing is not symmetric '
                       f'({names[i]!r} -> {names[p]!r} -> {names[perm[p]]!r})')
  return tuple(perm)


def check_permutation(perm: Sequence[int], num: int) -> tuple[int, ...]:
  perm = tuple(int(p) for p in perm)
  if sorted(perm) != list(range(num)) or any(perm[p] != i for i, p in enumerate(perm)):
    raise ValueError(f'flip permutation {list(perm)} is not a self-inverse permutation of '
                     f'{num} joints')
  return perm


@dataclasses.dataclass(frozen=True)
class KeypointSpec:
  """One keypoint task.

  Attributes:
    category_id: the COCO category id whose instances carry the joints.
    channel: that category's contiguous class channel (the label map's).
    category_name: its name.
    names: joint names, in annotation order.
    skeleton: 0-based joint index pairs to draw as limbs.
    flip_permutation: joint j becomes joint `flip_permutation[j]` under a horizontal flip.
    std_devs: per-joint heatmap sigma multipliers.
    oks_sigmas: per-joint OKS constants for evaluation.
    task_name: head-name prefix (`<task>/keypoint/heatmap`, ...); 'human_pose' in the zoo.
    per_keypoint_offset: the offset head has 2 channels per joint (the zoo) instead of 2.
  """
  category_id: int
  channel: int
  category_name: str
  names: tuple[str, ...]
  skeleton: tuple[tuple[int, int], ...]
  flip_permutation: tuple[int, ...]
  std_devs: tuple[float, ...]
  oks_sigmas: tuple[float, ...]
  task_name: str = 'human_pose'
  per_keypoint_offset: bool = True

  @property
  def num_keypoints(self) -> int:
    return len(self.names)

  def to_json_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d['names'] = list(self.names)
    d['skeleton'] = [list(p) for p in self.skeleton]
    for k in ('flip_permutation', 'std_devs', 'oks_sigmas'):
      d[k] = list(d[k])
    return d

  @classmethod
  def from_json_dict(cls, d: Mapping[str, Any]) -> 'KeypointSpec':
    return cls(category_id=int(d['category_id']), channel=int(d['channel']),
               category_name=str(d['category_name']), names=tuple(d['names']),
               skeleton=tuple((int(a), int(b)) for a, b in d['skeleton']),
               flip_permutation=tuple(int(p) for p in d['flip_permutation']),
               std_devs=tuple(float(s) for s in d['std_devs']),
               oks_sigmas=tuple(float(s) for s in d['oks_sigmas']),
               task_name=str(d.get('task_name', 'human_pose')),
               per_keypoint_offset=bool(d.get('per_keypoint_offset', True)))


def _settings(keypoint_config) -> Any:
  """The base config's `keypoints` section with `keypoint_config` (a config's section, a
  mapping of some of its fields, or None) on top: every field present, defaults from
  config_base only."""
  settings = config_base.base_config().keypoints
  for key, value in dict(keypoint_config or {}).items():
    if key in settings:
      with settings.ignore_type():
        settings[key] = value
  return settings


def _per_joint(value, num, what, default):
  value = tuple(float(v) for v in (value or ()))
  if not value:
    return tuple(default)
  if len(value) == 1:
    return value * num
  if len(value) != num:
    raise ValueError(f'keypoints.{what} has {len(value)} values for {num} joints')
  return value


def spec_from_category(category: Mapping[str, Any], channel: int,
                       keypoint_config=None) -> KeypointSpec:
  """The spec of a COCO category dict with 'keypoints' (names) and optional 'skeleton'.

  `keypoint_config` (the config's `keypoints` section, a mapping of some of its fields, or None
  for the base config's) gives `flip_permutation`, `std_devs`, `oks_sigmas` (empty: derived
  from the names; one value for all joints or one per joint), `task_name` and
  `per_keypoint_offset`.
  """
  names = tuple(str(n) for n in category.get('keypoints') or ())
  if not names:
    raise ValueError(f"category {category.get('id')} ({category.get('name')!r}) has no "
                     "'keypoints' names")
  num = len(names)
  skeleton = []
  for pair in category.get('skeleton') or ():
    a, b = (int(v) - 1 for v in pair)
    if not (0 <= a < num and 0 <= b < num):
      raise ValueError(f"category {category.get('id')}: skeleton pair {list(pair)} is outside "
                       f'1..{num}')
    skeleton.append((a, b))
  k = _settings(keypoint_config)
  perm = tuple(k.flip_permutation)
  perm = check_permutation(perm, num) if perm else flip_permutation_from_names(names)
  return KeypointSpec(
      category_id=int(category['id']), channel=int(channel),
      category_name=str(category.get('name', '')), names=names, skeleton=tuple(skeleton),
      flip_permutation=perm,
      std_devs=_per_joint(k.std_devs, num, 'std_devs', default_std_devs(names)),
      oks_sigmas=_per_joint(k.oks_sigmas, num, 'oks_sigmas', default_oks_sigmas(names)),
      task_name=str(k.task_name), per_keypoint_offset=bool(k.per_keypoint_offset))


def coco_person_category() -> dict[str, Any]:
  """COCO's person category as its keypoint files write it."""
  return {'id': 1, 'name': 'person', 'supercategory': 'person',
          'keypoints': list(COCO_KEYPOINT_NAMES),
          'skeleton': [list(p) for p in COCO_SKELETON_1BASED]}


def select_keypoint_category(categories: Sequence[Mapping[str, Any]],
                             class_name: str = '') -> Optional[Mapping[str, Any]]:
  """The category of the keypoint task: the one named `class_name`, else the only category
  with a non-empty 'keypoints' list (None if there is none; an error if there are several)."""
  with_kps = [c for c in categories if c.get('keypoints')]
  if class_name:
    named = [c for c in categories if c.get('name') == class_name]
    if not named:
      raise ValueError(f'keypoints.class_name {class_name!r} is not a category name '
                       f'({[c.get("name") for c in categories]})')
    if not named[0].get('keypoints'):
      raise ValueError(f"category {class_name!r} has no 'keypoints' names")
    return named[0]
  if len(with_kps) > 1:
    raise ValueError('several categories have keypoints '
                     f'({[c.get("name") for c in with_kps]}); set keypoints.class_name')
  return with_kps[0] if with_kps else None
