"""Model registry: adding a backbone is one new file plus one `BACKBONES` entry.

A backbone file provides
  * `build(model_config, dtype) -> nn.Module` whose `__call__(x, train)` returns a list of
    stride-4 feature maps (1 for the FPNs, 2 for the hourglass), and
  * `normalize_input(images) -> images`, mapping raw 0..255 RGB to what the backbone expects.

`build_model(config.model, num_classes)` then wraps it in `CenterNet`.
"""

from typing import Any, Callable, NamedTuple

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


class BackboneSpec(NamedTuple):
  build: Callable[..., nn.Module]  # (model_config, dtype) -> module
  normalize: Callable[[jnp.ndarray], jnp.ndarray]  # raw 0..255 RGB -> backbone input


BACKBONES = {
    'hourglass': BackboneSpec(hourglass.build, hourglass.normalize_input),
    'mobilenet_v2_fpn': BackboneSpec(mobilenet_v2_fpn.build, mobilenet_v2_fpn.normalize_input),
    'resnet_v1_fpn': BackboneSpec(resnet_v1_fpn.build, resnet_v1_fpn.normalize_input),
    'resnet_v2': BackboneSpec(resnet_v2.build, resnet_v2.normalize_input),
}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str) -> Any:
  """'float32' | 'bfloat16' -> the jnp dtype."""
  if name not in _DTYPES:
    raise ValueError(f'model.dtype must be one of {sorted(_DTYPES)}, got {name!r}.')
  return _DTYPES[name]


def _backbone_spec(backbone_name: str) -> BackboneSpec:
  if backbone_name not in BACKBONES:
    raise ValueError(f'Unknown backbone {backbone_name!r}; registered: {sorted(BACKBONES)}.')
  return BACKBONES[backbone_name]


def input_normalization(backbone_name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """The backbone's raw 0..255 RGB -> backbone input function (applied inside the model)."""
  return _backbone_spec(backbone_name).normalize


def build_model(model_config, num_classes: int, keypoint_spec=None) -> CenterNet:
  """Builds CenterNet from the `model` config section.

  Uses model.{backbone, depth, width_multiplier, head_channels, heatmap_bias_init, dtype,
  depthwise_heads}; `num_classes` (>0) is the resolved number of heatmap channels.
  `keypoint_spec` (a `keypoint_spec.KeypointSpec`, or None for a box-only model) adds the
  keypoint task's heads (`keypoint_head_specs`).
  """
  if num_classes <= 0:
    raise ValueError(f'num_classes must be positive, got {num_classes}.')
  spec = _backbone_spec(model_config.backbone)
  dtype = compute_dtype(model_config.get('dtype', 'float32'))
  head_specs = None
  if keypoint_spec is not None:
    head_specs = tuple(detection_head_specs(int(num_classes))) + keypoint_head_specs(
        keypoint_spec.task_name, keypoint_spec.num_keypoints,
        keypoint_spec.per_keypoint_offset)
  return CenterNet(
      backbone=spec.build(model_config, dtype=dtype),
      normalize=spec.normalize,
      num_classes=int(num_classes),
      head_channels=int(model_config.get('head_channels', 256)),
      heatmap_bias_init=float(model_config.get('heatmap_bias_init',
                                               heads.DEFAULT_HEATMAP_BIAS_INIT)),
      depthwise_heads=bool(model_config.get('depthwise_heads', False)),
      dtype=dtype, head_specs=head_specs)


__all__ = ['BACKBONES', 'BackboneSpec', 'CenterNet', 'build_model', 'compute_dtype',
           'detection_head_specs', 'input_normalization', 'keypoint_head_specs']
