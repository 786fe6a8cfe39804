"""Model registry: adding a backbone is one new file plus one `BACKBONES` entry.

A backbone file provides
  * `build(model_config, dtype) -> nn.Module` whose `__call__(x, train)` returns a list of
    stride-4 feature maps (1 for the FPNs, 2 for the hourglass),
  * `normalize_input(images) -> images`, mapping raw 0..255 RGB to what the backbone expects,
  * `tf_layer_map(model_config, params, *, classification=False)`, its TF2-zoo checkpoint
    layer map (models/tf_checkpoint_paths.py says what it returns; tf_checkpoint.py converts
    with it), and
  * `ZOO_FEATURE_EXTRACTORS`: OD API `feature_extractor.type` -> the model config fields it
    implies besides `backbone` (the zoo importer reads pipeline.config with it).

`build_model(config.model, num_classes)` then wraps it in `CenterNet`.
"""

from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from centernet_jax.models import heads
from centernet_jax.models import hourglass
from centernet_jax.models import mobilenet_v2_fpn
from centernet_jax.models import resnet_v1_fpn
from centernet_jax.models import resnet_v2
from centernet_jax.models.centernet import CenterNet
from centernet_jax.models.centernet import detection_head_specs
from centernet_jax.models.centernet import keypoint_head_specs
from centernet_jax.models.tf_checkpoint_paths import LayerMapResult


class BackboneSpec(NamedTuple):
  build: Callable[..., nn.Module]  # (model_config, dtype) -> module
  normalize: Callable[[jnp.ndarray], jnp.ndarray]  # raw 0..255 RGB -> backbone input
  # (model_config, params, *, classification) -> tf_checkpoint_paths.LayerMapResult
  tf_layer_map: Callable[..., LayerMapResult]
  zoo_feature_extractors: Mapping[str, Mapping[str, Any]]  # OD API type -> config fields


def _spec(module) -> BackboneSpec:
  return BackboneSpec(module.build, module.normalize_input, module.tf_layer_map,
                      module.ZOO_FEATURE_EXTRACTORS)


BACKBONES = {
    'hourglass': _spec(hourglass),
    'mobilenet_v2_fpn': _spec(mobilenet_v2_fpn),
    'resnet_v1_fpn': _spec(resnet_v1_fpn),
    'resnet_v2': _spec(resnet_v2),
}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str) -> Any:
  """'float32' | 'bfloat16' -> the jnp dtype."""
  if name not in _DTYPES:
    raise ValueError(f'model.dtype must be one of {sorted(_DTYPES)}, got {name!r}.')
  return _DTYPES[name]


def backbone_spec(backbone_name: str) -> BackboneSpec:
  if backbone_name not in BACKBONES:
    raise ValueError(f'Unknown backbone {backbone_name!r}; registered: {sorted(BACKBONES)}.')
  return BACKBONES[backbone_name]


def zoo_feature_extractors() -> dict[str, dict[str, Any]]:
  """Every OD API `feature_extractor.type` a registered backbone converts -> our model config
  fields (`backbone` and the backbone's own, e.g. `depth`)."""
  return {fe: {'backbone': name, **fields} for name, spec in sorted(BACKBONES.items())
          for fe, fields in spec.zoo_feature_extractors.items()}


def input_normalization(backbone_name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """The backbone's raw 0..255 RGB -> backbone input function (applied inside the model)."""
  return backbone_spec(backbone_name).normalize


def build_model(model_config, num_classes: int, keypoint_spec=None) -> CenterNet:
  """Builds CenterNet from the `model` config section.

  Uses model.{backbone, depth, width_multiplier, head_channels, heatmap_bias_init, dtype,
  head_dtype, depthwise_heads}; `num_classes` (>0) is the resolved number of heatmap channels.
  `keypoint_spec` (a `keypoint_spec.KeypointSpec`, or None for a box-only model) adds the
  keypoint task's heads (`keypoint_head_specs`).
  """
  if num_classes <= 0:
    raise ValueError(f'num_classes must be positive, got {num_classes}.')
  spec = backbone_spec(model_config.backbone)
  dtype = compute_dtype(model_config.dtype)
  head_dtype = compute_dtype(model_config.head_dtype or model_config.dtype)
  head_specs = None
  if keypoint_spec is not None:
    head_specs = tuple(detection_head_specs(int(num_classes))) + keypoint_head_specs(
        keypoint_spec.task_name, keypoint_spec.num_keypoints,
        keypoint_spec.per_keypoint_offset)
  return CenterNet(
      backbone=spec.build(model_config, dtype=dtype),
      normalize=spec.normalize,
      num_classes=int(num_classes),
      head_channels=int(model_config.head_channels),
      heatmap_bias_init=float(model_config.heatmap_bias_init),
      depthwise_heads=bool(model_config.depthwise_heads),
      dtype=head_dtype, head_specs=head_specs)


def backbone_kwargs(model_config) -> dict[str, Any]:
  """`model.backbone_kwargs[model.backbone]`: the backbone module's own keyword arguments."""
  return dict(model_config.backbone_kwargs[model_config.backbone])


__all__ = ['BACKBONES', 'BackboneSpec', 'CenterNet', 'backbone_spec', 'build_model',
           'backbone_kwargs', 'compute_dtype', 'detection_head_specs', 'input_normalization',
           'keypoint_head_specs', 'zoo_feature_extractors']
