"""CenterNet prediction heads (TF2 OD API `make_prediction_net`).

Each head is Conv3x3(head_channels, bias, 'SAME') -> ReLU -> Conv1x1(out_channels, bias), or,
with `depthwise=True`, a Keras `SeparableConv2D` for the 3x3 (depthwise 3x3 without bias, then
pointwise 1x1 with the single bias). Kernels are Glorot-uniform, biases zero, except the final
bias of heatmap heads, which is `heatmap_bias_init` (-2.19 ~ -log((1 - 0.1) / 0.1)).

Parameter names: `conv_3x3` (or `depthwise_3x3` + `pointwise_1x1`) is the checkpoint's
`layer_with_weights-0`, `conv_1x1` its `layer_with_weights-1`.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from centernet_jax.models import layers

DEFAULT_HEATMAP_BIAS_INIT = -2.19


class PredictionHead(nn.Module):
  """One CenterNet head. Returns `[B, H, W, out_channels]` in the compute dtype.

  Attributes:
    out_channels: channels of the final 1x1 conv.
    head_channels: channels of the 3x3 (hidden) conv.
    bias_init_value: constant for the final bias (0 for regression heads, -2.19 for heatmaps).
    depthwise: separable 3x3 (MobileNet heads) instead of a full 3x3.
    dtype: compute dtype; params stay float32.
  """
  out_channels: int
  head_channels: int = 256
  bias_init_value: float = 0.0
  depthwise: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    glorot = nn.initializers.glorot_uniform()
    x = jnp.asarray(x, self.dtype)
    if self.depthwise:
      # Keras SeparableConv2D: depthwise [3,3,C,1] (Flax: [3,3,1,C]); Glorot's fan_in + fan_out
      # is the same in both layouts, so the init distribution matches.
      x = layers.DepthwiseConv(3, 1, kernel_init=glorot, dtype=self.dtype,
                               name='depthwise_3x3')(x)
      x = nn.Conv(self.head_channels, (1, 1), use_bias=True, kernel_init=glorot,
                  bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=jnp.float32,
                  conv_general_dilated=layers.conv_general_dilated, name='pointwise_1x1')(x)
    else:
      x = nn.Conv(self.head_channels, (3, 3), padding='SAME', use_bias=True,
                  kernel_init=glorot, bias_init=nn.initializers.zeros, dtype=self.dtype,
                  param_dtype=jnp.float32, conv_general_dilated=layers.conv_general_dilated,
                  name='conv_3x3')(x)
    x = nn.relu(x)
    return nn.Conv(self.out_channels, (1, 1), use_bias=True, kernel_init=glorot,
                   bias_init=nn.initializers.constant(self.bias_init_value),
                   dtype=self.dtype, param_dtype=jnp.float32,
                   conv_general_dilated=layers.conv_general_dilated, name='conv_1x1')(x)
