"""Layers shared by several backbones.

`DepthwiseConv` exists for speed on XLA:CPU (docs/benchmarks.md, "Depthwise convolutions"):
there a grouped `conv_general_dilated` with one channel per group runs ~20x slower forward and
~10x slower backward than the same arithmetic written as k*k shifted multiply-adds (measured
at MobileNetV2 shapes). On GPU and TPU the library convolution is the fast one. The choice is
made per platform when the computation is lowered (`jax.lax.platform_dependent`), so one model
definition serves every backend and exports carry both.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """XLA's (and TF's) 'SAME' padding of one spatial axis: (before, after) pixels."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def depthwise_conv_shift_add(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """Depthwise 'SAME' convolution as k*k strided slices times per-channel weights.

  Args:
    x: `[B, H, W, C]`.
    kernel: `[k, k, 1, C]` (Flax's grouped-conv layout with one input channel per group).
    stride: the same in both axes.
  Returns:
    `[B, ceil(H / stride), ceil(W / stride), C]`, accumulated in float32 and returned in the
    dtype of `x`.
  """
  _, h, w, c = x.shape
  k = kernel.shape[0]
  pad_h, pad_w = same_padding(h, k, stride), same_padding(w, k, stride)
  out_h, out_w = -(-h // stride), -(-w // stride)
  xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
  weights = kernel.reshape(k, k, c).astype(jnp.float32)
  out = jnp.zeros(x.shape[:1] + (out_h, out_w, c), jnp.float32)
  for i in range(k):
    for j in range(k):
      window = jax.lax.slice(
          xp, (0, i, j, 0), (xp.shape[0], i + (out_h - 1) * stride + 1,
                             j + (out_w - 1) * stride + 1, c), (1, stride, stride, 1))
      out = out + window.astype(jnp.float32) * weights[i, j]
  return out.astype(x.dtype)


def depthwise_conv_library(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """The same convolution through `lax.conv_general_dilated` (cuDNN / TPU convolutions)."""
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (stride, stride), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=x.shape[-1])


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """Depthwise 'SAME' convolution: shift-add on CPU, the library convolution elsewhere."""
  return jax.lax.platform_dependent(
      x, kernel,
      cpu=lambda a, b: depthwise_conv_shift_add(a, b, stride),
      default=lambda a, b: depthwise_conv_library(a, b, stride))


class DepthwiseConv(nn.Module):
  """`nn.Conv(C, (k, k), strides, 'SAME', feature_group_count=C, use_bias=False)` with the same
  parameter (`kernel` `[k, k, 1, C]` float32), computed by `depthwise_conv`.

  Attributes:
    kernel_size: k.
    strides: the stride of both axes.
    kernel_init: initializer of the `[k, k, 1, C]` kernel.
    dtype: compute dtype; the kernel parameter stays float32.
  """
  kernel_size: int = 3
  strides: int = 1
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, 1, x.shape[-1]), jnp.float32)
    x = jnp.asarray(x, self.dtype)
    return depthwise_conv(x, kernel.astype(self.dtype), self.strides)
