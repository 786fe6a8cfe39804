"""The CenterNet model: input normalization, a backbone, and one head set per feature output.

Contract (docs/conventions.md): `model.apply(variables, images, train=...)` takes float32
`[B, S, S, 3]` raw 0..255 RGB and returns a list with one dict per backbone feature output:
`{'object_center': [B, S/4, S/4, C] logits, 'box/scale': [B, S/4, S/4, 2] (h, w),
'box/offset': [B, S/4, S/4, 2] (y, x)}`, all float32. Inference uses the last entry.
Variables: `{'params', 'batch_stats'}`.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from centernet_jax.models import heads as heads_lib

# (output key, number of channels, is a heatmap head).
HeadSpec = Tuple[str, int, bool]


def detection_head_specs(num_classes: int) -> Tuple[HeadSpec, ...]:
  """The object-detection heads: center heatmap, box size (h, w), center offset (y, x)."""
  return (('object_center', num_classes, True),
          ('box/scale', 2, False),
          ('box/offset', 2, False))


def keypoint_head_specs(task_name: str, num_keypoints: int,
                        per_keypoint_offset: bool = True) -> Tuple[HeadSpec, ...]:
  """The heads of a keypoint task (TF2 OD API `keypoint_estimation_task`), named like its
  prediction dict: `<task>/keypoint/heatmap` (J channels, a heatmap head),
  `<task>/keypoint/offset` (2J (y, x) pairs per joint, or 2 shared) and
  `<task>/keypoint/regression` (2J: center -> joint (y, x) per joint)."""
  j = int(num_keypoints)
  return ((f'{task_name}/keypoint/heatmap', j, True),
          (f'{task_name}/keypoint/offset', 2 * j if per_keypoint_offset else 2, False),
          (f'{task_name}/keypoint/regression', 2 * j, False))


def head_module_name(key: str, output_index: int) -> str:
  """Flax module name of head `key` for feature output `output_index`, e.g. 'box_scale_0'.

  The TF checkpoint stores it as `_prediction_head_dict/<key with '/'->'.S'>/<index>/`.
  """
  return f"{key.replace('/', '_')}_{output_index}"


class CenterNet(nn.Module):
  """Backbone + per-output heads.

  Attributes:
    backbone: module with `__call__(x, train) -> list of stride-4 feature maps`; it receives
      the normalized float32 images.
    normalize: the backbone's input normalization (raw 0..255 RGB -> backbone input).
    num_classes: heatmap channels.
    head_channels: hidden channels of every head.
    heatmap_bias_init: final bias of heatmap heads.
    depthwise_heads: separable 3x3 in the heads (MobileNet configs).
    dtype: compute dtype of the heads (the backbone carries its own).
    head_specs: overrides `detection_head_specs(num_classes)` (e.g. to add keypoint heads).
  """
  backbone: nn.Module
  normalize: Callable[[jnp.ndarray], jnp.ndarray]
  num_classes: int
  head_channels: int = 256
  heatmap_bias_init: float = heads_lib.DEFAULT_HEATMAP_BIAS_INIT
  depthwise_heads: bool = False
  dtype: Any = jnp.float32
  head_specs: Optional[Sequence[HeadSpec]] = None

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool) -> List[Dict[str, jnp.ndarray]]:
    x = self.normalize(jnp.asarray(images, jnp.float32))
    features = self.backbone(x, train)
    specs = self.head_specs if self.head_specs is not None else detection_head_specs(
        self.num_classes)
    outputs = []
    for i, feature in enumerate(features):
      out = {}
      for key, channels, is_heatmap in specs:
        head = heads_lib.PredictionHead(
            out_channels=channels, head_channels=self.head_channels,
            bias_init_value=self.heatmap_bias_init if is_heatmap else 0.0,
            depthwise=self.depthwise_heads, dtype=self.dtype,
            name=head_module_name(key, i))
        out[key] = jnp.asarray(head(feature), jnp.float32)
      outputs.append(out)
    return outputs
