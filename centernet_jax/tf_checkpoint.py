"""TF2 Object Detection API CenterNet checkpoints (the TF2 zoo) -> our Flax variables.

A zoo archive holds `checkpoint/ckpt-0.{index,data-*}`, an object-based checkpoint written as
`tf.train.Checkpoint(model=detection_model)`. Its keys have the form
`<object path>/<variable>/.ATTRIBUTES/VARIABLE_VALUE`, where the object path is made of Python
attribute names, list indices, dict keys and Keras tracking names (research note
tf_od_api_centernet.md, section 6):
  * escaping inside one path segment: '.' is written '..' and '/' is written '.S', so the head
    dict key `box/scale` appears as `box.Sscale` (`escape_segment` / `unescape_segment`);
  * Keras `Sequential` and functional models expose their layers as `layer_with_weights-N`,
    the N-th layer that owns weights in `model.layers` order (not by name);
  * heads: `model/_prediction_head_dict/<key>/<output index>/layer_with_weights-{0,1}/...`;
  * Keras-application backbones: `model/_feature_extractor/_base_model/layer_with_weights-N`;
    the FPN/upsampling layers: `model/_feature_extractor/_feature_extractor_model/
    layer_with_weights-K` (K = 0 is the nested backbone itself, so the new layers start at 1);
  * the hourglass: `model/_feature_extractor/_network/<attribute path>`.

Each backbone maps its Flax module paths to object paths in its own file
(`models/<backbone>.py: tf_layer_map`, named by the `models.BACKBONES` entry; the vocabulary
is models/tf_checkpoint_paths.py); this module adds the heads and does the conversion.
The key sets and shapes were checked against checkpoints saved by the OD API for every zoo
architecture (tests/test_tf_checkpoint.py; values in parity/, docs/parity.md).

Layouts: conv kernels are HWIO in both frameworks (copied as they are); a depthwise kernel
`[h, w, C, M]` becomes Flax's grouped `[h, w, 1, C * M]`; a Keras `Conv2DTranspose` kernel
`[h, w, out, in]` is kept as it is for a Flax `ConvTranspose(transpose_kernel=True)` (same
layout; research note 1.3); BN `gamma, beta` -> params `scale, bias` and `moving_mean,
moving_variance` -> batch_stats `mean, var`.

Init types (`INIT_TYPES`), as the OD API's `fine_tune_checkpoint_type`:
  * 'full': every variable of the model, heads included;
  * 'detection': the feature extractor only (`model/_feature_extractor/...`); the heads keep
    the caller's fresh init, so `num_classes` may differ from the checkpoint's;
  * 'classification': a Keras-application ImageNet checkpoint as written by the OD API's
    `convert_keras_models.py` (`tf.train.Checkpoint(feature_extractor=keras_app_with_top)`, keys
    `feature_extractor/layer_with_weights-N/...`): the backbone only; FPN/upsampling layers and
    heads keep the fresh init.

The conversion is strict. It refuses (`CheckpointMismatchError`, naming the variables) when
  * a checkpoint variable is left unused, except the documented skips (`skip_reason`):
    `save_counter`, `_CHECKPOINTABLE_OBJECT_GRAPH`, optimizer state (`optimizer/...`, slot
    variables `.../.OPTIMIZER_SLOT/...`, the training `step` counter), the unused `post_bn` of
    the Keras ResNet50V2 (the OD API taps `conv5_block3_out` before it), the classifier
    (`predictions`) of a 'classification' checkpoint, and, for 'detection', the heads (out of
    that init type's scope by definition);
  * a Flax variable in scope is left unfilled;
  * a shape differs (after the layout transform).

Only `read_tf_checkpoint` and `checkpoint_prefix` use TensorFlow; the rest is numpy.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from centernet_jax import models
from centernet_jax.models.centernet import head_module_name
from centernet_jax.models.tf_checkpoint_paths import (  # noqa: F401  (names of this API)
    BASE_MODEL, CLASSIFICATION_ROOT, FE_MODEL, FEATURE_EXTRACTOR, CheckpointMismatchError,
    FlaxPath, LayerMap)

INIT_TYPES = ('full', 'detection', 'classification')

VALUE_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'
OBJECT_GRAPH_KEY = '_CHECKPOINTABLE_OBJECT_GRAPH'
MODEL = 'model'
HEADS = 'model/_prediction_head_dict'

# Flax leaf name -> TF variable name, per layer kind.
_LEAF_NAMES = {
    'conv': {('params', 'kernel'): 'kernel', ('params', 'bias'): 'bias'},
    'conv_transpose': {('params', 'kernel'): 'kernel', ('params', 'bias'): 'bias'},
    'depthwise': {('params', 'kernel'): 'depthwise_kernel', ('params', 'bias'): 'bias'},
    # The pointwise half of a Keras SeparableConv2D (its single bias follows the pointwise).
    'pointwise': {('params', 'kernel'): 'pointwise_kernel', ('params', 'bias'): 'bias'},
    'bn': {('params', 'scale'): 'gamma', ('params', 'bias'): 'beta',
           ('batch_stats', 'mean'): 'moving_mean', ('batch_stats', 'var'): 'moving_variance'},
}
LAYER_KINDS = tuple(_LEAF_NAMES)


# ------------------------------------------------------------------------------------------
# Key names.


def escape_segment(name: str) -> str:
  """One object-path segment as TF writes it: '.' -> '..', then '/' -> '.S'."""
  return str(name).replace('.', '..').replace('/', '.S')


def unescape_segment(segment: str) -> str:
  """Inverse of `escape_segment` ('box.Sscale' -> 'box/scale', 'a..b' -> 'a.b')."""
  out, i = [], 0
  while i < len(segment):
    if segment[i] == '.' and i + 1 < len(segment):
      nxt = segment[i + 1]
      if nxt == '.':
        out.append('.')
        i += 2
        continue
      if nxt == 'S':
        out.append('/')
        i += 2
        continue
    out.append(segment[i])
    i += 1
  return ''.join(out)


def variable_key(object_path: str, variable: str) -> str:
  """'model/x/layer_with_weights-0' + 'kernel' -> the full checkpoint key."""
  return f'{object_path}/{variable}{VALUE_SUFFIX}'


def object_path_of(key: str) -> str:
  """The object path of a variable key (without the variable name and suffix)."""
  body = key[:-len(VALUE_SUFFIX)] if key.endswith(VALUE_SUFFIX) else key
  return body.rsplit('/', 1)[0]


def head_object_path(head_key: str, output_index: int) -> str:
  """`model/_prediction_head_dict/<escaped head key>/<output index>`."""
  return f'{HEADS}/{escape_segment(head_key)}/{int(output_index)}'


_SKIP_RULES: Tuple[Tuple[str, Callable[[str], bool]], ...] = (
    ('checkpoint bookkeeping (save_counter)', lambda k: k.startswith('save_counter/')),
    ('checkpoint object graph', lambda k: k == OBJECT_GRAPH_KEY),
    ('optimizer state', lambda k: k.startswith('optimizer/') or '/.OPTIMIZER_SLOT/' in k),
    ('training step counter', lambda k: k in ('step' + VALUE_SUFFIX,
                                              'global_step' + VALUE_SUFFIX)),
)


def skip_reason(key: str, init_type: str = 'full',
                extra_skips: Optional[Mapping[str, str]] = None) -> Optional[str]:
  """Why checkpoint variable `key` is deliberately not converted, or None.

  `extra_skips` maps object-path prefixes to reasons (the backbone family's documented skips,
  e.g. ResNet50V2's `post_bn`).
  """
  for reason, rule in _SKIP_RULES:
    if rule(key):
      return reason
  if init_type == 'detection' and key.startswith(MODEL + '/') and not key.startswith(
      FEATURE_EXTRACTOR + '/'):
    return "outside the feature extractor (init type 'detection' restores only the backbone)"
  for prefix, reason in (extra_skips or {}).items():
    if key == prefix or key.startswith(prefix + '/'):
      return reason
  return None


# ------------------------------------------------------------------------------------------
# Layer maps: Flax module path -> (TF object path, layer kind); the backbones' own are in
# their files (models.BACKBONES[...].tf_layer_map), the heads' below.


@dataclasses.dataclass(frozen=True)
class Entry:
  """One variable: checkpoint key -> Flax (collection, path), with a layout transform."""
  tf_key: str
  collection: str  # 'params' | 'batch_stats'
  path: FlaxPath
  kind: str  # a LAYER_KINDS entry

  @property
  def flax_name(self) -> str:
    return f"{self.collection}/{'/'.join(self.path)}"


def to_flax_layout(value: np.ndarray, entry: Entry, target_shape: Sequence[int]) -> np.ndarray:
  """Checkpoint array -> the Flax layout of `entry` (raises on a shape mismatch)."""
  value = np.asarray(value)
  target_shape = tuple(int(s) for s in target_shape)
  if entry.kind == 'depthwise' and entry.path[-1] == 'kernel' and value.ndim == 4:
    h, w, c, m = value.shape
    value = value.reshape(h, w, 1, c * m)  # channel c*M + m, as Flax's feature groups
  if tuple(value.shape) != target_shape:
    raise CheckpointMismatchError(
        f'Shape mismatch: checkpoint variable {entry.tf_key} has shape '
        f'{list(np.shape(value))} (as Flax layout {list(value.shape)}), but Flax '
        f'{entry.flax_name} expects {list(target_shape)}.')
  return value


def _flatten(tree: Mapping[str, Any], prefix: FlaxPath = ()) -> Dict[FlaxPath, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (str(k),)))
    else:
      out[prefix + (str(k),)] = v
  return out


def _unflatten(flat: Mapping[FlaxPath, Any]) -> Dict[str, Any]:
  out: Dict[str, Any] = {}
  for path, v in flat.items():
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = v
  return out


def head_layer_map(params: Mapping[str, Any], head_keys: Sequence[str]) -> LayerMap:
  """The prediction heads: `<key>_<i>/{conv_3x3 | depthwise_3x3 + pointwise_1x1, conv_1x1}`."""
  layers: LayerMap = {}
  for key in head_keys:
    i = 0
    while head_module_name(key, i) in params:
      name = head_module_name(key, i)
      tf_path = head_object_path(key, i)
      layers[(name, 'conv_3x3')] = (f'{tf_path}/layer_with_weights-0', 'conv')
      layers[(name, 'depthwise_3x3')] = (f'{tf_path}/layer_with_weights-0', 'depthwise')
      layers[(name, 'pointwise_1x1')] = (f'{tf_path}/layer_with_weights-0', 'pointwise')
      layers[(name, 'conv_1x1')] = (f'{tf_path}/layer_with_weights-1', 'conv')
      i += 1
  return layers


def default_head_keys(variables_or_params: Mapping[str, Any]) -> Tuple[str, ...]:
  """The head keys present in a Flax tree: detection heads plus any keypoint heads."""
  params = variables_or_params.get('params', variables_or_params)
  keys = []
  candidates = ['object_center', 'box/scale', 'box/offset']
  for name in params:
    m = re.fullmatch(r'(.+)_keypoint_(heatmap|offset|regression)_\d+', name)
    if m:
      candidates.append(f'{m.group(1)}/keypoint/{m.group(2)}')
  for key in candidates:
    if head_module_name(key, 0) in params and key not in keys:
      keys.append(key)
  return tuple(keys)


def variable_entries(variables: Mapping[str, Any], model_config, *, init_type: str = 'full',
                     head_keys: Optional[Sequence[str]] = None
                     ) -> Tuple[list, Dict[str, str], FlaxPath]:
  """Every Flax leaf in scope of `init_type` -> its checkpoint `Entry`.

  Args:
    variables: `{'params', 'batch_stats'}` of the model (arrays or ShapeDtypeStructs).
    model_config: the `model` config section (`backbone`, `depth`, ...).
    init_type: one of `INIT_TYPES`.
    head_keys: head dict keys ('object_center', 'box/scale', ...); default: those present.

  Returns:
    (entries, extra skips {object path prefix: reason}, Flax scope prefix).

  Raises:
    CheckpointMismatchError naming every Flax variable in scope that has no checkpoint
    counterpart.
  """
  if init_type not in INIT_TYPES:
    raise ValueError(f'init_type must be one of {INIT_TYPES}, got {init_type!r}.')
  params = variables['params']
  try:
    builder = models.backbone_spec(model_config.backbone).tf_layer_map
  except ValueError as e:
    raise CheckpointMismatchError(f'No TF checkpoint mapping: {e}') from None
  layers, classification_scope, extra = builder(
      model_config, params, classification=(init_type == 'classification'))
  if init_type == 'full':
    head_keys = default_head_keys(params) if head_keys is None else tuple(head_keys)
    layers = {**layers, **head_layer_map(params, head_keys)}
    scope: FlaxPath = ()
  elif init_type == 'detection':
    scope = ('backbone',)
  else:
    scope = tuple(classification_scope)

  entries, unmapped = [], []
  for collection in ('params', 'batch_stats'):
    for path in sorted(_flatten(variables.get(collection, {}))):
      if path[:len(scope)] != scope:
        continue
      module, leaf = path[:-1], path[-1]
      if module not in layers:
        unmapped.append(f'{collection}/{"/".join(path)}')
        continue
      tf_object, kind = layers[module]
      tf_var = _LEAF_NAMES[kind].get((collection, leaf))
      if tf_var is None:
        unmapped.append(f'{collection}/{"/".join(path)} (no {kind} variable for {leaf!r})')
        continue
      entries.append(Entry(variable_key(tf_object, tf_var), collection, path, kind))
  if unmapped:
    raise CheckpointMismatchError(
        f'{len(unmapped)} Flax variable(s) have no checkpoint counterpart for backbone '
        f'{model_config.backbone!r}, init type {init_type!r}: ' + _listing(unmapped))
  return entries, extra, scope


def _listing(names: Sequence[str], limit: int = 20) -> str:
  shown = ', '.join(names[:limit])
  return shown + (f', ... ({len(names) - limit} more)' if len(names) > limit else '')


@dataclasses.dataclass
class ConversionReport:
  """What a conversion did."""
  init_type: str
  converted: int  # Flax leaves filled from the checkpoint
  converted_values: int  # scalar values copied
  kept_fresh: int  # Flax leaves outside the init type's scope (fresh init kept)
  skipped: Dict[str, int]  # skip reason -> number of checkpoint variables

  def summary(self) -> str:
    skipped = ', '.join(f'{n} {r}' for r, n in sorted(self.skipped.items())) or 'none'
    return (f'init type {self.init_type!r}: {self.converted} variables '
            f'({self.converted_values:,} values) converted, {self.kept_fresh} kept fresh; '
            f'skipped checkpoint variables: {skipped}.')


def convert_variables(tf_variables: Mapping[str, Any], variables: Mapping[str, Any],
                      model_config, *, init_type: str = 'full',
                      head_keys: Optional[Sequence[str]] = None
                      ) -> Tuple[Dict[str, Any], ConversionReport]:
  """Fills `variables` (the model's fresh `{'params', 'batch_stats'}`) from a checkpoint.

  Args:
    tf_variables: checkpoint key -> array (`read_tf_checkpoint`); values may be lazy
      (anything `np.asarray` accepts).
    variables: the model's variables (arrays or ShapeDtypeStructs): their structure, shapes
      and dtypes define the target; the leaves outside the init type's scope are returned
      unchanged.
    model_config: the `model` config section.
    init_type: 'full' | 'detection' | 'classification'.
    head_keys: the head dict keys (default: those present in `variables`).

  Returns:
    (new variables as nested dicts: numpy arrays for the converted leaves, the given leaves
    elsewhere; report).

  Raises:
    CheckpointMismatchError naming the variables when a checkpoint variable in scope is
    unused, a Flax variable in scope is unfilled, or a shape differs.
  """
  entries, extra_skips, _ = variable_entries(variables, model_config, init_type=init_type,
                                             head_keys=head_keys)
  by_key = {e.tf_key: e for e in entries}
  missing = [f'{e.tf_key} (for Flax {e.flax_name})' for e in entries
             if e.tf_key not in tf_variables]
  skipped: Dict[str, int] = {}
  unused = []
  for key in sorted(tf_variables):
    if key in by_key:
      continue
    reason = skip_reason(key, init_type, extra_skips)
    if reason is None:
      unused.append(key)
    else:
      skipped[reason] = skipped.get(reason, 0) + 1
  problems = []
  if unused:
    problems.append(f'{len(unused)} checkpoint variable(s) left unused: ' + _listing(unused))
  if missing:
    problems.append(f'{len(missing)} Flax variable(s) left unfilled, their checkpoint '
                    'variables are missing: ' + _listing(missing))
  if problems:
    raise CheckpointMismatchError(
        f'Checkpoint does not match the {model_config.backbone!r} model (init type '
        f'{init_type!r}): ' + '; '.join(problems))

  flat = {c: _flatten(variables.get(c, {})) for c in ('params', 'batch_stats')}
  out = {c: dict(flat[c]) for c in flat}  # leaves outside the scope are kept as they are
  mismatches, values = [], 0
  for e in entries:
    target = flat[e.collection][e.path]
    try:
      value = to_flax_layout(np.asarray(tf_variables[e.tf_key]), e, target.shape)
    except CheckpointMismatchError as err:
      mismatches.append(str(err))
      continue
    out[e.collection][e.path] = value.astype(getattr(target, 'dtype', np.float32))
    values += value.size
  if mismatches:
    raise CheckpointMismatchError(f'{len(mismatches)} shape mismatch(es): ' +
                                  ' '.join(mismatches[:20]))
  total = sum(len(f) for f in flat.values())
  report = ConversionReport(init_type=init_type, converted=len(entries),
                            converted_values=int(values), kept_fresh=total - len(entries),
                            skipped=skipped)
  new_vars = {c: _unflatten(out[c]) for c in out if flat[c] or c in variables}
  return new_vars, report


# ------------------------------------------------------------------------------------------
# Reading checkpoints (TensorFlow needed).


def checkpoint_prefix(path: str) -> str:
  """A checkpoint prefix from a prefix, an archive dir or a `checkpoint/` dir."""
  path = str(path)
  if os.path.isdir(path):
    for candidate in (os.path.join(path, 'checkpoint'), path):
      if not os.path.isdir(candidate):
        continue
      if os.path.isfile(os.path.join(candidate, 'checkpoint')):
        latest = tf.train.latest_checkpoint(candidate)
        if latest and os.path.exists(latest + '.index'):
          return latest
      found = sorted((f[:-len('.index')] for f in os.listdir(candidate)
                      if f.endswith('.index')),
                     key=lambda n: (len(n), n))
      if found:
        return os.path.join(candidate, found[-1])
    raise FileNotFoundError(f'No TF checkpoint (*.index) found in {path} or {path}/checkpoint.')
  if not os.path.exists(path + '.index'):
    raise FileNotFoundError(f'No TF checkpoint at {path} ({path}.index does not exist).')
  return path


def read_tf_checkpoint(path: str) -> Dict[str, np.ndarray]:
  """Reads every variable of a TF object-based checkpoint: key -> numpy array.

  `path` is a checkpoint prefix (`.../ckpt-0`) or a directory containing one (an archive dir
  with `checkpoint/`, or the `checkpoint/` dir itself). The object graph proto is not read.
  """
  reader = tf.train.load_checkpoint(checkpoint_prefix(path))
  out = {}
  for key in reader.get_variable_to_shape_map():
    if key == OBJECT_GRAPH_KEY:
      out[key] = np.zeros((), np.float32)  # placeholder: counted as a documented skip
      continue
    out[key] = reader.get_tensor(key)
  return out


def load_tf_checkpoint(path: str, variables: Mapping[str, Any], model_config, *,
                       init_type: str = 'full', head_keys: Optional[Sequence[str]] = None
                       ) -> Tuple[Dict[str, Any], ConversionReport]:
  """`read_tf_checkpoint` + `convert_variables`."""
  return convert_variables(read_tf_checkpoint(path), variables, model_config,
                           init_type=init_type, head_keys=head_keys)


def expected_checkpoint_shapes(variables: Mapping[str, Any], model_config, *,
                               init_type: str = 'full',
                               head_keys: Optional[Sequence[str]] = None
                               ) -> Dict[str, Tuple[int, ...]]:
  """Checkpoint key -> TF shape the model expects (inverse layout of `to_flax_layout`)."""
  entries, _, _ = variable_entries(variables, model_config, init_type=init_type,
                                   head_keys=head_keys)
  flat = {c: _flatten(variables.get(c, {})) for c in ('params', 'batch_stats')}
  out = {}
  for e in entries:
    shape = tuple(int(s) for s in flat[e.collection][e.path].shape)
    if e.kind == 'depthwise' and e.path[-1] == 'kernel':
      h, w, _, cm = shape
      shape = (h, w, cm, 1)  # depth multiplier 1 (all OD API CenterNet models)
    out[e.tf_key] = shape
  return out


__all__ = ['CheckpointMismatchError', 'ConversionReport', 'Entry', 'INIT_TYPES',
           'convert_variables', 'escape_segment', 'expected_checkpoint_shapes',
           'load_tf_checkpoint', 'read_tf_checkpoint', 'skip_reason',
           'unescape_segment', 'variable_entries']
