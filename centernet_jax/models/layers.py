"""Layers shared by several backbones.

`DepthwiseConv` exists for speed on XLA:CPU (docs/benchmarks.md, "Depthwise convolutions"):
there a grouped `conv_general_dilated` with one channel per group runs ~20x slower forward and
~10x slower backward than the same arithmetic written as k*k shifted multiply-adds (measured
at MobileNetV2 shapes). On GPU and TPU the library convolution is the fast one. The choice is
made per platform when the computation is lowered (`jax.lax.platform_dependent`), so one model
definition serves every backend and exports carry both.

`conv_general_dilated` (given to `nn.Conv`) does the same for dense convolutions' weight
gradient: XLA:CPU computes it as a backward convolution at ~6-25 GFLOP/s, while the same sums
written as k*k matrix products `x_ij^T @ g` ran 1.2-13x faster at the ResNet50 V1 FPN shapes
(`benchmarks/conv_cpu.py`; docs/benchmarks.md, "Hot paths"). The forward pass and the input
gradient stay the library's (faster there). Parameters are untouched: it is `nn.Conv`'s own
kernel `[k, k, Cin, Cout]`.
"""

import functools
import math
from typing import Any, Callable, Sequence

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


# Below this many output pixels per image the weight gradient stays the library's: the demo's
# 96 px ResNet-18 FPN (maps of 48 x 48 and less) trained at 3.6-3.9 steps/s with the products
# against 4.5 with the library (`make demo` runs, 2026-12-02, AMD EPYC, AVX2 only), while the
# ResNet50 V1 FPN 512 step gains most at its 128 x 128 and 64 x 64 maps (benchmarks/conv_cpu.py).
DOTS_MIN_OUTPUT_PIXELS = 64 * 64
# ... unless the weight gradient is this big (2 x pixels x k*k x Cin x Cout per image): the
# products won 2.1-2.7x at ResNet conv4/conv5 shapes (32 x 32 and 16 x 16 maps, 256-2048
# channels, 0.3-1.2 GFLOP per image; benchmarks/conv_cpu.py), while every demo convolution is
# under 0.05 GFLOP (docs/benchmarks.md, "Hot paths").
DOTS_MIN_WEIGHT_GRAD_FLOPS = 2e8

# Flax's `nn.Conv` dimension numbers for a 2-D convolution: NHWC input, HWIO kernel.
_NHWC_HWIO = jax.lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                          out_spec=(0, 3, 1, 2))


def conv_windows(x: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int],
                 pads: Sequence[tuple[int, int]]) -> list[jax.Array]:
  """The k*k strided windows of the zero-padded input, row-major over the kernel taps.

  Args:
    x: `[B, H, W, C]`.
    kernel_hw: (kh, kw).
    strides: (sh, sw).
    pads: ((top, bottom), (left, right)) zero padding in pixels.
  Returns:
    kh * kw arrays `[B, Ho, Wo, C]`: window (i, j) holds the pixels kernel tap (i, j) multiplies.
  """
  (kh, kw), (sh, sw) = kernel_hw, strides
  xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  b, hp, wp, c = xp.shape
  oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  return [jax.lax.slice(xp, (0, i, j, 0), (b, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c),
                        (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]


def conv_weight_grad_dots(x: jax.Array, g: jax.Array, kernel_hw: tuple[int, int],
                          strides: tuple[int, int],
                          pads: Sequence[tuple[int, int]]) -> jax.Array:
  """The weight gradient of a dense NHWC/HWIO convolution as k*k matrix products.

  Args:
    x: the convolution's input `[B, H, W, Cin]`.
    g: the output's cotangent `[B, Ho, Wo, Cout]`.
    kernel_hw, strides, pads: as in `conv_windows`.
  Returns:
    `[kh, kw, Cin, Cout]`: tap (i, j) is `window_ij^T @ g` over the B*Ho*Wo pixels, accumulated
    in float32 and returned in the dtype of `x`.
  """
  cin, cout = x.shape[-1], g.shape[-1]
  g2 = g.reshape(-1, cout)
  taps = [jax.lax.dot_general(win.reshape(-1, cin), g2, (((0,), (0,)), ((), ())),
                              preferred_element_type=jnp.float32)
          for win in conv_windows(x, kernel_hw, strides, pads)]
  return jnp.stack(taps).reshape(kernel_hw + (cin, cout)).astype(x.dtype)


def _conv_library(x, kernel, strides, pads):
  return jax.lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_NHWC_HWIO)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_dots_weight_grad(x, kernel, strides, pads):
  return _conv_library(x, kernel, strides, pads)


def _conv_dots_weight_grad_fwd(x, kernel, strides, pads):
  return _conv_library(x, kernel, strides, pads), (x, kernel)


def _conv_dots_weight_grad_bwd(strides, pads, residuals, g):
  x, kernel = residuals
  # The input gradient is linear in g: XLA's transposed convolution, as autodiff would emit it.
  (dx,) = jax.linear_transpose(lambda a: _conv_library(a, kernel, strides, pads), x)(g)
  dw = conv_weight_grad_dots(x, g, kernel.shape[:2], strides, pads)
  return dx, dw.astype(kernel.dtype)


_conv_dots_weight_grad.defvjp(_conv_dots_weight_grad_fwd, _conv_dots_weight_grad_bwd)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         precision=None, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` for `nn.Conv(conv_general_dilated=...)`: on CPU, a 2-D
  NHWC/HWIO convolution without dilation or groups, with at least `DOTS_MIN_OUTPUT_PIXELS`
  output pixels per image (approximately, by ceil(H / stride) * ceil(W / stride)) or a weight
  gradient of at least `DOTS_MIN_WEIGHT_GRAD_FLOPS` per image, gets its weight gradient from
  `conv_weight_grad_dots` (same forward and input gradient); anything else, and every other
  platform, is the library call unchanged."""
  library = functools.partial(
      jax.lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      precision=precision, **kwargs)
  plain = (lhs.ndim == 4 and feature_group_count == 1 and not kwargs and precision is None
           and all(d == 1 for d in (lhs_dilation or (1,))) and
           all(d == 1 for d in (rhs_dilation or (1,))) and
           jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           == _NHWC_HWIO)
  strides = tuple(int(s) for s in window_strides)
  out_pixels = -(-lhs.shape[1] // strides[0]) * -(-lhs.shape[2] // strides[1])
  weight_grad_flops = 2.0 * out_pixels * math.prod(rhs.shape)
  if not plain or (out_pixels < DOTS_MIN_OUTPUT_PIXELS and
                   weight_grad_flops < DOTS_MIN_WEIGHT_GRAD_FLOPS):
    return library(lhs, rhs)
  if isinstance(padding, str):
    pads = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  return jax.lax.platform_dependent(
      lhs, rhs, cpu=lambda a, b: _conv_dots_weight_grad(a, b, strides, pads),
      default=library)
