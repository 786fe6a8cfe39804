"""Layers shared by several backbones.

`DepthwiseConv` exists for speed on XLA:CPU (docs/benchmarks.md, "Depthwise convolutions"):
there a grouped `conv_general_dilated` with one channel per group runs ~20x slower forward and
~10x slower backward than the same arithmetic written as k*k shifted multiply-adds (measured
at MobileNetV2 shapes); its weight gradient sums groups of output rows elementwise before one
reduction (`depthwise_weight_grad`). On GPU and TPU the library convolution is the fast one.
The choice is made per platform when the computation is lowered (`jax.lax.platform_dependent`),
so one model definition serves every backend and exports carry both.

`conv_general_dilated` (given to `nn.Conv`) does the same for dense convolutions' weight
gradient: XLA:CPU computes it as a backward convolution at ~6-25 GFLOP/s, while the same sums
written as k*k matrix products `x_ij^T @ g` ran 1.2-13x faster at the ResNet50 V1 FPN shapes
(`benchmarks/conv_cpu.py`; docs/benchmarks.md, "Hot paths"); for the RGB stems, one product of
the k*k windows side by side; for 1x1 kernels, one product at smaller sizes too. Float32 3x3
stride-1 convolutions with enough channels and tiles get some or all of their three passes
from Winograd's F(4x4, 3x3) instead (4x fewer multiplications; docs/winograd.md). In training,
1x1 kernels and big 3x3 kernels on small maps also take their forward pass and input gradient
as one matrix product per kernel tap (`conv_tap_products`), where the library convolution under
the training step's compiler options was slower; other forward passes and input gradients stay
the library's (`conv_plan` has the rules). Parameters are untouched: it is `nn.Conv`'s own
kernel `[k, k, Cin, Cout]`.
`ConvTranspose2D` (Flax's `nn.ConvTranspose` with `transpose_kernel=True`, which takes no
convolution function) routes its convolution of the zero-dilated input through the same
function; there the weight gradient is products over the output pixels of one parity class per
kernel tap, the only ones the dilated input's nonzero pixels reach, where XLA:CPU's backward
convolution ran as a plain loop (about half of the ResNet50 V2 training step;
docs/benchmarks.md, "Hot paths").

`BatchNorm` is `nn.BatchNorm` with its training gradient written out (fewer passes over the
activations than autodiff's on XLA:CPU); every backbone builds its batch norms with it.
`Conv` is `nn.Conv` whose bias can be left out of the output: `conv_then_batch_norm` hands a
convolution's bias to the batch norm after it in training, where the batch mean removes it
anyway, which saves a pass over the activations per layer (docs/benchmarks.md, "The training
step against the OD API's, op by op").
`block_output` (an optimization barrier on residual block outputs) and `max_pool` (strided
slices and a written-out gradient) exist for XLA:CPU too: without them it recomputed whole
residual chains and took the pool's gradient through full-size index arrays
(docs/benchmarks.md, "Residual chains").
"""

import contextlib
import contextvars
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


# What `block_output` does on CPU; a module attribute so that benchmarks/conv_models.py can
# lower a model without it (identity).
BLOCK_OUTPUT_CPU: Callable[[jax.Array], jax.Array] = jax.lax.optimization_barrier


def block_output(x: jax.Array) -> jax.Array:
  """A residual block's output `relu(shortcut + y)`, kept as one buffer that the next block
  reads, on XLA:CPU.

  Without it XLA:CPU fuses each block's batch-norm + add + ReLU tail into the next block's
  and recomputes the whole residual chain of a stage in every block's fusion: in ResNet101's
  23 conv4 blocks the k-th block's tail fusion held the k tails before it (408 instructions
  for the last), 193 of the 596 ms of a 512 predict at batch 1 (docs/benchmarks.md, "Residual
  chains"). An optimization barrier ends the chain. The ResNet V1 and Hourglass blocks use it;
  ResNet V2 (no ReLU after the sum) and MobileNetV2 showed no such chain and do not. Other
  platforms, and the ONNX export, get the identity."""
  return jax.lax.platform_dependent(x, cpu=BLOCK_OUTPUT_CPU, default=lambda a: a)


_NO_PADS = ((0, 0), (0, 0))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_cpu(x, window, strides):
  return functools.reduce(jnp.maximum, conv_windows(x, window, strides, _NO_PADS))


def _max_pool_cpu_fwd(x, window, strides):
  # The index of each window's first maximal element, row-major (the element `nn.max_pool`'s
  # gradient picks), found with the maximum: small integer residuals, not x and the output.
  windows = conv_windows(x, window, strides, _NO_PADS)
  index_dtype = jnp.int8 if len(windows) <= 127 else jnp.int32
  out, first = windows[0], jnp.zeros(windows[0].shape, index_dtype)
  for t, win in enumerate(windows[1:], 1):
    first = jnp.where(win > out, jnp.asarray(t, index_dtype), first)
    out = jnp.maximum(out, win)
  # In memory: XLA would otherwise recompute it (every window compared) in each tap's select of
  # the backward, 99 ms there instead of 22 in the ResNet stem's profile.
  first = jax.lax.optimization_barrier(first)
  return out, (first, jnp.zeros((0,) + x.shape, x.dtype))


def _max_pool_cpu_bwd(window, strides, residuals, g):
  # The input gradient by stride phase: input pixel (sh * a + p, sw * b + q) is reached only by
  # the taps (i, j) with i % sh == p and j % sw == q, from output (a - i // sh, b - j // sw). Each
  # phase is a sum of those taps' cotangents shifted into place (pads), and the phases are
  # interleaved by a reshape: each input pixel reads its own taps only. A sum over all the taps
  # of interior-padded arrays, each tap's hit decided by comparing the windows again, took 56
  # ms in the ResNet50 V1 FPN 512 step's profile at batch 2 on one core, this 24 (with the
  # index); docs/benchmarks.md, "The training step against the OD API's, op by op".
  first, x_shape_holder = residuals
  b, h, w, c = x_shape_holder.shape[1:]
  (kh, kw), (sh, sw) = window, strides
  _, oh, ow, _ = g.shape
  ph, pw = -(-h // sh), -(-w // sw)
  zero = jnp.zeros((), g.dtype)
  phases = [[jnp.zeros((b, ph, pw, c), g.dtype) for _ in range(sw)] for _ in range(sh)]
  for i in range(kh):
    for j in range(kw):
      taken = jnp.where(first == i * kw + j, g, zero)
      di, dj = i // sh, j // sw
      phases[i % sh][j % sw] = phases[i % sh][j % sw] + jax.lax.pad(
          taken, zero, ((0, 0, 0), (di, ph - oh - di, 0), (dj, pw - ow - dj, 0), (0, 0, 0)))
  dx = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [B, PH, sh, PW, sw, C]
  dx = dx.reshape(b, ph * sh, pw * sw, c)[:, :h, :w]
  return (dx.astype(x_shape_holder.dtype),)


_max_pool_cpu.defvjp(_max_pool_cpu_fwd, _max_pool_cpu_bwd)


def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int]) -> jax.Array:
  """`nn.max_pool(x, window, strides, padding='VALID')` on NHWC `[B, H, W, C]`.

  On XLA:CPU as a max of the kh*kw strided slices, with a written-out gradient (to the first
  maximal element of each window, row-major, by stride phase): autodiff's gradient of
  `reduce_window` became a variadic reduce-window over four full-size index arrays there,
  about 200 ms of the ResNet50 V1 FPN 512 training step's 4.3 s of op time at batch 2
  (docs/benchmarks.md, "Residual chains"). Other platforms get `nn.max_pool`."""
  window, strides = tuple(window), tuple(strides)
  return jax.lax.platform_dependent(
      x, cpu=lambda a: _max_pool_cpu(a, window, strides),
      default=lambda a: nn.max_pool(a, window, strides=strides, padding='VALID'))


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
  """Keras `UpSampling2D(2)` (nearest neighbour), as the FPNs and the hourglass use it:
  `[B, H, W, C]` -> `[B, 2H, 2W, C]`, every pixel repeated into a 2x2 block."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """XLA's (and TF's) 'SAME' padding of one spatial axis: (before, after) pixels."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _same_pads(x_shape, k: int, stride: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """'SAME' ((top, bottom), (left, right)) padding of a k x k, stride `stride` convolution of
  `x_shape` `[B, H, W, C]`, in pixels."""
  return same_padding(x_shape[1], k, stride), same_padding(x_shape[2], k, stride)


def _depthwise_shift_add(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """`depthwise_conv_shift_add` under autodiff (its input gradient, and the old weight
  gradient benchmarks/conv_models.py compares with)."""
  k, c = kernel.shape[0], x.shape[-1]
  windows = conv_windows(x, (k, k), (stride, stride), _same_pads(x.shape, k, stride))
  weights = kernel.reshape(k * k, c).astype(jnp.float32)
  out = jnp.zeros(windows[0].shape, jnp.float32)
  for tap, window in enumerate(windows):
    out = out + window.astype(jnp.float32) * weights[tap]
  return out.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv_shift_add(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """Depthwise 'SAME' convolution as k*k strided slices times per-channel weights.

  Its input gradient is autodiff's (the same shift-adds, transposed); its weight gradient is
  `depthwise_weight_grad`.

  Args:
    x: `[B, H, W, C]`.
    kernel: `[k, k, 1, C]` (Flax's grouped-conv layout with one input channel per group).
    stride: the same in both axes.
  Returns:
    `[B, ceil(H / stride), ceil(W / stride), C]`, accumulated in float32 and returned in the
    dtype of `x`.
  """
  return _depthwise_shift_add(x, kernel, stride)


def _depthwise_fwd(x, kernel, stride):
  return _depthwise_shift_add(x, kernel, stride), (x, kernel)


def _depthwise_bwd(stride, residuals, g):
  x, kernel = residuals
  # Barriers on g and dx: otherwise XLA:CPU fuses g's producer (the next layer's batch norm
  # and ReLU6 gradient) into the k*k shifted reads of both gradients and dx into its
  # consumer, recomputing that work per read: the MobileNetV2 FPN 512 train step at batch 2
  # ran 704 -> 630 ms with both, 654 ms with the one on g alone (docs/benchmarks.md,
  # "Depthwise and 1x1 weight gradients").
  g = jax.lax.optimization_barrier(g)
  _, x_vjp = jax.vjp(lambda a: _depthwise_shift_add(a, kernel, stride), x)
  dx, = x_vjp(g)
  dk = depthwise_weight_grad(x, g, kernel.shape[0], stride)
  return jax.lax.optimization_barrier(dx), dk.astype(kernel.dtype)


depthwise_conv_shift_add.defvjp(_depthwise_fwd, _depthwise_bwd)

# Output rows whose products `depthwise_weight_grad` sums elementwise (the largest divisor of
# the output height up to this) before its one reduction. Autodiff's weight gradient is one
# reduction per tap over a window copied out of the padded input (XLA:CPU materializes each
# for YNNPACK's reduce), nine passes over the activations; the sums of 32 rows run in one loop
# fusion that reads x and g once and leaves the reduction 1/32 of the products. Weight
# gradient alone at MobileNetV2 FPN 512 shapes, batch 2 (docs/benchmarks.md, "Depthwise and
# 1x1 weight gradients"): 256 x 256 x 32 47 -> 8 ms, 128 x 128 x 144 51 -> 10 ms, 32 x 32 x 576
# 12 -> 3 ms; groups of 16 or 64 rows did no better than 32 there, 4 or 8 worse.
DEPTHWISE_WEIGHT_GRAD_ROWS = 32


def depthwise_weight_grad(x: jax.Array, g: jax.Array, k: int, stride: int) -> jax.Array:
  """The kernel's gradient of `sum(depthwise_conv_shift_add(x, kernel, stride) * g)`.

  dk[i, j, c] = sum over (b, y, x) of xp[b, stride * y + i, stride * x + j, c] * g[b, y, x, c],
  xp the 'SAME'-padded input; summed first over groups of R output rows, elementwise
  (R = the largest divisor of the output height <= `DEPTHWISE_WEIGHT_GRAD_ROWS`), then reduced.

  Args:
    x: `[B, H, W, C]` the convolution's input.
    g: `[B, ceil(H / stride), ceil(W / stride), C]` the cotangent of its output.
    k: the kernel side.
    stride: the same in both axes.
  Returns:
    `[k, k, 1, C]` float32.
  """
  b, _, _, c = x.shape
  out_h, out_w = g.shape[1:3]
  rows = max(r for r in range(1, min(DEPTHWISE_WEIGHT_GRAD_ROWS, out_h) + 1) if out_h % r == 0)
  groups = out_h // rows
  xp = jnp.pad(x, ((0, 0),) + _same_pads(x.shape, k, stride) + ((0, 0),)).astype(jnp.float32)
  g32 = g.astype(jnp.float32)

  def every_rows_th(a, first_row, first_col, row_step, col_step, cols):
    """Rows first_row + row_step * m (m < groups), `cols` columns from first_col."""
    return jax.lax.slice(a, (0, first_row, first_col, 0),
                         (b, first_row + row_step * (groups - 1) + 1,
                          first_col + col_step * (cols - 1) + 1, c), (1, row_step, col_step, 1))

  g_rows = [every_rows_th(g32, r, 0, rows, 1, out_w) for r in range(rows)]
  x_rows = {}  # one slice per (input row offset, column offset), shared by the taps
  taps = []
  for i in range(k):
    for j in range(k):
      total = None
      for r in range(rows):
        key = (stride * r + i, j)
        if key not in x_rows:
          x_rows[key] = every_rows_th(xp, key[0], j, stride * rows, stride, out_w)
        term = x_rows[key] * g_rows[r]
        total = term if total is None else total + term
      taps.append(total)
  return jnp.sum(jnp.stack(taps), axis=(1, 2, 3)).reshape(k, k, 1, c)


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

# A 1x1 kernel's weight gradient is one product `x^T @ g` from this much weight gradient per
# image on, whatever the bounds above: no windows to copy, while at the MobileNetV2 FPN 512
# shapes under both bounds (32 x 32 and 16 x 16 maps, 4-210 MFLOP per image) the library's ran
# at ~12 GFLOP/s (19 ms for 576 -> 96 channels at batch 2). Train step at batch 2 with the
# product for every 1x1 kernel, interleaved rounds: MobileNetV2 FPN 881 -> 826 ms (1.07x),
# ResNet50 V1 FPN unchanged, the demo's model (1x1 kernels of 0.15-1.2 MFLOP) 86 -> 84 ms at
# batch 8, inside its spread, while its rounding changed enough to move `make demo`'s AP from
# 0.628 to 0.615; below this bound the demo keeps the library's (docs/benchmarks.md,
# "Depthwise and 1x1 weight gradients").
POINTWISE_DOTS_MIN_WEIGHT_GRAD_FLOPS = 1e7

# Up to this many input channels the weight gradient is one product of the k*k windows side by
# side (`[pixels, k*k*Cin]^T @ g`), which reads the cotangent once instead of k*k times: the
# RGB stems, where the windows are narrow. Scratch timings of the weight gradient alone at batch
# 2 (docs/benchmarks.md, "Hot paths"): ResNet 7x7 stride-2 stem 126 -> 57 ms, Hourglass stem
# 231 -> 93 ms, MobileNetV2's 3x3 stride-2 stem 19 -> 14 ms; at 16 to 64 input channels
# neither won by more than 1.17x, the k*k products mostly.
IM2COL_MAX_INPUT_CHANNELS = 4

# ...except for stems with a kernel of at least this size and at most
# LIBRARY_STEM_MAX_OUTPUT_CHANNELS outputs (the ResNet V1 and V2 7x7 stride-2 stems, 3 -> 64),
# which keep the library's weight gradient: on the Intel Xeon of 2026-12-05 (AVX-512, AMX) it
# ran 1.55x (one core 1.52x) faster there than the one product with its window copies, 2.1x
# at 3 -> 32, even at 5x5 3 -> 64 and slower at 3 -> 96 and 3 -> 128 (the Hourglass stem) and
# for 3x3 kernels (scratch timings, batch 2, 256 x 256 outputs). Train step at batch 2:
# ResNet50 V1 FPN 1918 -> 1875 ms (1.02x), ResNet50 V2 2042 -> 1959 ms (1.04x)
# (docs/benchmarks.md, "The training step against the OD API's, op by op").
LIBRARY_STEM_MIN_KERNEL = 7
LIBRARY_STEM_MAX_OUTPUT_CHANNELS = 64

# In training (the forward pass of the custom VJP and the input gradient) a convolution is
# matrix products over its kernel taps, `sum_ij window_ij @ W_ij` and its transpose, instead of
# the library convolution, where XLA:CPU's training options (YNNPACK's convolutions) were
# measured slowest: 3x3 stride-1 kernels with at least this many Cin x Cout pairs on at most
# TRAIN_PRODUCTS_MAX_PIXELS output pixels per call (ResNet conv5 and the 2048-channel
# upsampling input of ResNet50 V2, 1.2-2.9x per pass at batch 2 to 8), and 1x1 kernels whose
# weight gradient (2 x pixels x Cin x Cout) is at least TRAIN_PRODUCTS_MIN_POINTWISE_FLOPS per
# image (1.0-2.0x; the bound, the same as the 1x1 weight gradient's, leaves the demo's small
# 1x1 kernels alone), except the forward of a strided 1x1 kernel with fewer channel pairs than
# the 3x3 bound (0.65-0.9x there; 1.2-1.6x from 512 x 1024 on).
# Inference keeps the library forward, which XLA's own kernels (the predict function's
# options) ran as fast or faster (docs/benchmarks.md, "Convolutions as tap products in
# training").
TRAIN_PRODUCTS_MIN_CHANNEL_PAIRS = 512 * 512
TRAIN_PRODUCTS_MAX_PIXELS = 2048
TRAIN_PRODUCTS_MIN_POINTWISE_FLOPS = POINTWISE_DOTS_MIN_WEIGHT_GRAD_FLOPS

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
  """The weight gradient of a dense NHWC/HWIO convolution as matrix products: k*k of them,
  or, with at most `IM2COL_MAX_INPUT_CHANNELS` input channels, one over the windows
  concatenated along the channels.

  Args:
    x: the convolution's input `[B, H, W, Cin]`.
    g: the output's cotangent `[B, Ho, Wo, Cout]`.
    kernel_hw, strides, pads: as in `conv_windows`.
  Returns:
    `[kh, kw, Cin, Cout]`: tap (i, j) is `window_ij^T @ g` over the B*Ho*Wo pixels, accumulated
    in float32 and returned in the dtype of `x`.
  """
  windows = conv_windows(x, kernel_hw, strides, pads)
  cin, cout = x.shape[-1], g.shape[-1]
  if cin > IM2COL_MAX_INPUT_CHANNELS:
    return _tap_products([(win, g) for win in windows], kernel_hw, cin, cout, x.dtype)
  columns = jnp.concatenate(windows, axis=-1).reshape(-1, len(windows) * cin)
  dw = jax.lax.dot_general(columns, g.reshape(-1, cout), (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)
  return dw.reshape(tuple(kernel_hw) + (cin, cout)).astype(x.dtype)


def _tap_products(pairs, kernel_hw: tuple[int, int], cin: int, cout: int, dtype) -> jax.Array:
  """`[kh, kw, Cin, Cout]` from the taps' (input pixels `[..., Cin]`, cotangent pixels
  `[..., Cout]`) pairs, row-major over the kernel (None: a tap that meets no pixel, zero):
  each tap `inputs^T @ cotangents` over the pixels, accumulated in float32, cast to `dtype`."""
  taps = [jnp.zeros((cin, cout), jnp.float32) if pair is None else
          jax.lax.dot_general(pair[0].reshape(-1, cin), pair[1].reshape(-1, cout),
                              (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
          for pair in pairs]
  return jnp.stack(taps).reshape(kernel_hw + (cin, cout)).astype(dtype)


def conv_tap_products(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                      pads: Sequence[tuple[int, int]]) -> jax.Array:
  """A dense NHWC/HWIO convolution as one matrix product per kernel tap, summed:
  `sum_ij window_ij @ kernel[i, j]` over the windows of `conv_windows`.

  Args:
    x: `[B, H, W, Cin]`.
    kernel: `[kh, kw, Cin, Cout]`.
    strides, pads: as in `conv_windows`.
  Returns:
    `[B, Ho, Wo, Cout]` in the dtype of `x` (accumulated in float32).
  """
  windows = conv_windows(x, kernel.shape[:2], strides, pads)
  kw = kernel.shape[1]
  total = None
  for t, win in enumerate(windows):
    y = jax.lax.dot_general(win, kernel[t // kw, t % kw], (((3,), (0,)), ((), ())),
                            preferred_element_type=jnp.float32)
    total = y if total is None else total + y
  return total.astype(x.dtype)


def conv_input_grad_tap_products(g: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                                 pads: Sequence[tuple[int, int]], x_shape) -> jax.Array:
  """The input gradient of `conv_tap_products`: per tap `g @ kernel[i, j]^T`, put back where
  its window came from (the transposes of the window's slice and of the padding).

  Args:
    g: the output's cotangent `[B, Ho, Wo, Cout]`.
    kernel: `[kh, kw, Cin, Cout]`.
    strides, pads: as in `conv_windows`.
    x_shape: the input's shape `[B, H, W, Cin]`.
  Returns:
    `[B, H, W, Cin]` in the dtype of `g`.
  """
  (dx,) = jax.linear_transpose(lambda a: conv_tap_products(a, kernel, strides, pads),
                               jax.ShapeDtypeStruct(tuple(x_shape), g.dtype))(g)
  return dx


def dilated_conv_weight_grad_dots(x: jax.Array, g: jax.Array, kernel_hw: tuple[int, int],
                                  lhs_dilation: tuple[int, int],
                                  pads: Sequence[tuple[int, int]]) -> jax.Array:
  """The weight gradient of a stride-1 NHWC/HWIO convolution of the input dilated by
  `lhs_dilation` (s - 1 zeros between pixels, then `pads`), as matrix products.

  The dilated, padded input holds pixel n at row `lo + n * s`, so kernel row i meets a pixel
  only at output rows y with (y + i - lo) divisible by s: per tap, the products run over that
  parity class of output pixels (1 / (sh * sw) of them) against the input pixels they meet,
  which is the exact sum without the zeros.

  Args:
    x: the undilated input `[B, H, W, Cin]`.
    g: the output's cotangent `[B, Ho, Wo, Cout]`.
    kernel_hw: (kh, kw).
    lhs_dilation: (sh, sw).
    pads: ((top, bottom), (left, right)) padding of the dilated input, in its pixels.
  Returns:
    `[kh, kw, Cin, Cout]` in the dtype of `x` (accumulated in float32).
  """
  (kh, kw), (sh, sw) = kernel_hw, lhs_dilation
  b, _, _, cin = x.shape
  _, ho, wo, cout = g.shape
  xd = jax.lax.pad(x, jnp.zeros((), x.dtype),
                   ((0, 0, 0), (pads[0][0], pads[0][1], sh - 1),
                    (pads[1][0], pads[1][1], sw - 1), (0, 0, 0)))
  pairs = []
  for i in range(kh):
    ri = (pads[0][0] - i) % sh
    ni = len(range(ri, ho, sh))
    for j in range(kw):
      rj = (pads[1][0] - j) % sw
      nj = len(range(rj, wo, sw))
      if ni == 0 or nj == 0:
        pairs.append(None)
        continue
      win = jax.lax.slice(xd, (0, i + ri, j + rj, 0),
                          (b, i + ri + (ni - 1) * sh + 1, j + rj + (nj - 1) * sw + 1, cin),
                          (1, sh, sw, 1))
      gs = jax.lax.slice(g, (0, ri, rj, 0),
                         (b, ri + (ni - 1) * sh + 1, rj + (nj - 1) * sw + 1, cout),
                         (1, sh, sw, 1))
      pairs.append((win, gs))
  return _tap_products(pairs, kernel_hw, cin, cout, x.dtype)


def _phase_taps(kernel: int, dilation: int, pad_low: int, phase: int) -> tuple[int, int, int]:
  """(first tap, number of taps, input offset) of the output pixels `y = s * q + phase` of a
  stride-1 convolution over an input dilated by s with `pad_low` pixels of padding: tap t meets
  an input pixel there iff (phase + t - pad_low) is a multiple of s, and then the pixel
  `q + (phase + t - pad_low) / s`."""
  first = (pad_low - phase) % dilation
  return first, len(range(first, kernel, dilation)), (phase + first - pad_low) // dilation


def input_dilated_conv_phases(x: jax.Array, kernel: jax.Array, lhs_dilation: tuple[int, int],
                              pads: Sequence[tuple[int, int]]) -> jax.Array:
  """A stride-1 NHWC/HWIO convolution of the input dilated by `lhs_dilation` (s - 1 zeros
  between pixels, then `pads`), the forward of a transposed convolution, without the zeros:
  the output pixels of one phase (y mod sh, x mod sw) meet the input only through the kernel
  taps of that phase (`_phase_taps`), so each phase is a plain stride-1 'VALID' convolution of
  the undilated input, padded or cropped to line up, with those taps; the sh * sw results are
  interleaved. The same sums as the library's, over the input's own pixels only.

  Args:
    x: the undilated input `[B, H, W, Cin]`.
    kernel: `[kh, kw, Cin, Cout]`.
    lhs_dilation: (sh, sw).
    pads: ((top, bottom), (left, right)) padding of the dilated input, in its pixels (may be
      negative).
  Returns:
    `[B, Ho, Wo, Cout]`, Ho = top + (H - 1) * sh + 1 + bottom - kh + 1 (Wo alike).
  """
  (kh, kw), (sh, sw) = kernel.shape[:2], lhs_dilation
  b, h, w, _ = x.shape
  cout = kernel.shape[3]
  ho = pads[0][0] + (h - 1) * sh + 1 + pads[0][1] - kh + 1
  wo = pads[1][0] + (w - 1) * sw + 1 + pads[1][1] - kw + 1
  # Every phase computes ceil(Ho / sh) x ceil(Wo / sw) pixels, so that they interleave by a
  # reshape; the surplus row or column is cropped after.
  qh, qw = -(-ho // sh), -(-wo // sw)
  rows = []
  for py in range(sh):
    ty, ny, dy = _phase_taps(kh, sh, pads[0][0], py)
    cols = []
    for px in range(sw):
      tx, nx, dx = _phase_taps(kw, sw, pads[1][0], px)
      if ny == 0 or nx == 0:
        cols.append(jnp.zeros((b, qh, qw, cout), jnp.result_type(x, kernel)))
        continue
      xp = jax.lax.pad(x, jnp.zeros((), x.dtype),
                       ((0, 0, 0), (-dy, qh + ny - 1 - h + dy, 0),
                        (-dx, qw + nx - 1 - w + dx, 0), (0, 0, 0)))
      cols.append(_conv_library(xp, kernel[ty::sh, tx::sw], (1, 1), _NO_PADS))
    rows.append(jnp.stack(cols, axis=3))  # [B, qh, qw, sw, Cout]
  y = jnp.stack(rows, axis=2)  # [B, qh, sh, qw, sw, Cout]
  return y.reshape(b, qh * sh, qw * sw, cout)[:, :ho, :wo]


# Winograd's minimal filtering F(4x4, 3x3) (docs/winograd.md): a 3x3 stride-1 convolution
# computed on 6x6 input tiles that overlap by 2, each giving a 4x4 output tile, with 36
# products per tile and channel pair instead of 144. Y = A^T [(G w G^T) . (B^T d B)] A per
# tile; the three matrices below (interpolation points 0, +-1, +-2 and infinity) are the
# standard ones, checked against the library convolution by tests/test_layers.py.
_WINOGRAD_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]])
_WINOGRAD_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                        [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_WINOGRAD_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                         [0, 1, -1, 8, -8, 1]])
_TILE_OUT, _TILE_IN = 4, 6
# Where each pass of a float32 3x3 stride-1 'SAME' convolution goes through it on CPU
# (docs/winograd.md has the timings these bounds come from, ResNet50 V1 FPN 512 shapes at
# batch 2 and 8): the forward pass and the input gradient when both channel counts are at
# least WINOGRAD_MIN_CHANNELS, one of them is 128 to 256, and the call has 64 to 1024 output
# tiles (more overflow the caches: a 128x128 map at batch 2 has 2048); the weight gradient
# whenever both channel counts are at least WINOGRAD_MIN_CHANNELS and there are 64 tiles or
# more (below, the 36 kernel-sized products cost more than they save).
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_CONV_CHANNELS = (128, 256)
WINOGRAD_CONV_TILES = (64, 1024)
WINOGRAD_WEIGHT_GRAD_MIN_TILES = 64
# The inference forward (no gradient) also on smaller maps and wider convolutions: one of the
# channel counts up to 2048 and from 16 tiles per image, e.g. conv5's 512 -> 512 at 16 x 16
# and ResNet50 V2's first upsampling 3x3, 2048 -> 256 at 16 x 16, when the images of one call
# share the kernel tiles over at least WINOGRAD_INFERENCE_MIN_SHARED_TILES tiles. On CPU the
# predict function runs the images in turn, and XLA computes the kernel tiles (4x the kernel's
# size) once per call, outside the images' loop, so the batch shares their cost. AMD EPYC
# (AVX2), the predict function, same process, interleaved: batch 8 ResNet50 V2 512 1.065x,
# ResNet50 V1 FPN 1.028x; batch 1 1.018x and 0.986x, and our batch-1 SavedModel of ResNet50 V1
# FPN under TensorFlow's XLA 0.93x, so one image alone keeps the library there
# (docs/benchmarks.md, "F(4x4, 3x3) for the inference forward" and "... shared by a batch").
WINOGRAD_INFERENCE_CONV_CHANNELS = (128, 2048)
WINOGRAD_INFERENCE_CONV_TILES = (16, 1024)
WINOGRAD_INFERENCE_MIN_SHARED_TILES = 64

# How many images share one set of kernel tiles in the inference call being traced: set by
# `images_sharing_kernel_tiles` around the trace of a loop over a batch's images
# (`predict.images_in_turn`). A trace-time setting, like `jax.default_matmul_precision`.
_IMAGES_SHARING_KERNEL_TILES = contextvars.ContextVar('images_sharing_kernel_tiles', default=1)


@contextlib.contextmanager
def images_sharing_kernel_tiles(images: int):
  """Convolutions traced inside run once per image for `images` (>= 1) images of one call
  that share their weights, so F(4x4, 3x3)'s kernel tiles, computed once, serve them all
  (`winograd_inference_forward`). Like the module's bounds, it is read when a convolution is
  traced, and jit's cache does not key on it: a jitted function traced inside keeps that
  plan when called outside. `predict.images_in_turn` sets it around a loop body it defines
  anew in every trace, whose batch size fixes `images`."""
  if images < 1:
    raise ValueError(f'images_sharing_kernel_tiles: images must be >= 1, got {images}')
  token = _IMAGES_SHARING_KERNEL_TILES.set(images)
  try:
    yield
  finally:
    _IMAGES_SHARING_KERNEL_TILES.reset(token)


def _combine(coefficients, arrays):
  """sum_i c_i * arrays[i] over the nonzero constants c_i (multiplications by +-1 skipped).

  `lax` ops, not `jnp`'s: the same program, traced without a nested jit per op (these sums
  are most of the primitives a Winograd convolution traces)."""
  total = None
  for c, a in zip(coefficients, arrays):
    if c == 0:
      continue
    term = a if c == 1 else jax.lax.neg(a) if c == -1 else jax.lax.mul(a, a.dtype.type(c))
    total = term if total is None else jax.lax.add(total, term)
  return total


def _transform_2d(matrix: np.ndarray, a) -> jax.Array:
  """`matrix @ a @ matrix^T` over the two leading axes of `a` (`[n, n, ...]` -> `[k, k, ...]`
  for a `[k, n]` matrix), as constant-coefficient sums: first along axis 0, then axis 1.

  Each slice is taken once and reused by every sum (XLA would merge repeated slices, but
  tracing them made these transforms a third of a model's training-step trace time)."""
  rows = [_combine(coefficients, _unstack(a)) for coefficients in matrix]
  return jnp.stack([jnp.stack([_combine(coefficients, parts) for coefficients in matrix])
                    for parts in map(_unstack, rows)])


def _unstack(a: jax.Array) -> list[jax.Array]:
  """The slices of `a` along its leading axis."""
  return [jax.lax.index_in_dim(a, i, keepdims=False) for i in range(a.shape[0])]


def _winograd_tiles(size: int) -> int:
  return -(-size // _TILE_OUT)


def winograd_input_tiles(x: jax.Array) -> jax.Array:
  """`B^T d B` of every 6x6 tile of the input zero-padded by 1 (and up to whole tiles).

  Args:
    x: `[B, H, W, C]` float32.
  Returns:
    `[36, B * ceil(H/4) * ceil(W/4), C]`: row 6u + v is transform coefficient (u, v); the tiles
    are row-major over (image, tile row, tile column).
  """
  b, h, w, c = x.shape
  ty, tx = _winograd_tiles(h), _winograd_tiles(w)
  xp = jnp.pad(x, ((0, 0), (1, ty * _TILE_OUT + 1 - h), (1, tx * _TILE_OUT + 1 - w), (0, 0)))
  rows = [jax.lax.slice_in_dim(xp, i, i + (ty - 1) * _TILE_OUT + 1, _TILE_OUT, axis=1)
          for i in range(_TILE_IN)]
  tiles = []
  for u in range(_TILE_IN):
    row_u = _combine(_WINOGRAD_BT[u], rows)  # [B, Ty, W + pad, C]
    cols = [jax.lax.slice_in_dim(row_u, j, j + (tx - 1) * _TILE_OUT + 1, _TILE_OUT, axis=2)
            for j in range(_TILE_IN)]
    tiles.extend(_combine(_WINOGRAD_BT[v], cols) for v in range(_TILE_IN))
  return jnp.stack(tiles).reshape(_TILE_IN**2, b * ty * tx, c)


# `G w G^T` for every channel pair at once: one product of this [36, 9] matrix (row 6u + v,
# column 3i + j: G[u, i] G[v, j]) with the kernel's 9 taps. The same time as the sums of slices
# (one memory-bound pass either way), and one primitive to trace instead of ~150.
_WINOGRAD_KERNEL_MATRIX = np.einsum('ui,vj->uvij', _WINOGRAD_G, _WINOGRAD_G).reshape(
    _TILE_IN**2, 9).astype(np.float32)


def winograd_kernel_tiles(kernel: jax.Array) -> jax.Array:
  """`G w G^T`: `[3, 3, Cin, Cout]` -> `[36, Cin, Cout]` (row 6u + v)."""
  cin, cout = kernel.shape[2:]
  return jnp.dot(_WINOGRAD_KERNEL_MATRIX, kernel.reshape(9, cin * cout),
                 precision=jax.lax.Precision.HIGHEST).reshape(_TILE_IN**2, cin, cout)


def winograd_kernel_tiles_transposed(tiles: jax.Array) -> jax.Array:
  """The transpose of `winograd_kernel_tiles` (`G^T . G`): `[36, Cin, Cout]` ->
  `[3, 3, Cin, Cout]`."""
  cin, cout = tiles.shape[1:]
  return jnp.dot(_WINOGRAD_KERNEL_MATRIX.T, tiles.reshape(_TILE_IN**2, cin * cout),
                 precision=jax.lax.Precision.HIGHEST).reshape(3, 3, cin, cout)


def winograd_output(products: jax.Array, shape: tuple[int, int, int, int]) -> jax.Array:
  """`A^T m A` of every tile, the 4x4 tiles put back in place and cropped.

  Args:
    products: `[36, B * Ty * Tx, C]` in the tile order of `winograd_input_tiles`.
    shape: the output's `(B, H, W, C)`.
  Returns:
    `[B, H, W, C]`.
  """
  b, h, w, c = shape
  ty, tx = _winograd_tiles(h), _winograd_tiles(w)
  y = _transform_2d(_WINOGRAD_AT, products.reshape(_TILE_IN, _TILE_IN, b, ty, tx, c))
  y = y.transpose(2, 3, 0, 4, 1, 5).reshape(b, ty * _TILE_OUT, tx * _TILE_OUT, c)
  return y[:, :h, :w]


def _tile_products(tiles: jax.Array, kernel_tiles: jax.Array, contract: int) -> jax.Array:
  """The 36 per-coefficient matrix products `[N, K] @ kernel_tiles[k]` (contracting its axis
  `contract`), in float32."""
  return jax.lax.dot_general(tiles, kernel_tiles, (((2,), (contract,)), ((0,), (0,))),
                             preferred_element_type=jnp.float32)


def winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 stride-1 'SAME' NHWC/HWIO convolution by F(4x4, 3x3).

  Args:
    x: `[B, H, W, Cin]` float32.
    kernel: `[3, 3, Cin, Cout]` float32.
  Returns:
    `[B, H, W, Cout]`, within ~1e-5 (relative to the output's largest magnitude) of the
    library convolution.
  """
  products = _tile_products(winograd_input_tiles(x), winograd_kernel_tiles(kernel), 1)
  return winograd_output(products, x.shape[:3] + kernel.shape[-1:])


def winograd_conv3x3_input_grad(g: jax.Array, kernel: jax.Array) -> jax.Array:
  """Input gradient of `winograd_conv3x3`: `[B, H, W, Cout]` -> `[B, H, W, Cin]`.

  With one pixel of zero padding on every side, it is the same 'SAME' convolution of the
  cotangent with the kernel flipped in space and its channel axes swapped; the swap is the
  products' contraction over the kernel tiles' output axis, not a transpose.
  """
  products = _tile_products(winograd_input_tiles(g), winograd_kernel_tiles(kernel[::-1, ::-1]),
                            2)
  return winograd_output(products, g.shape[:3] + kernel.shape[2:3])


def winograd_conv3x3_weight_grad(x: jax.Array, g: jax.Array) -> jax.Array:
  """Weight gradient of `winograd_conv3x3` in the transformed domain: the 36 products
  `tiles_k^T @ dM_k` over the tiles, where dM is the cotangent through `A` (the transpose of
  `winograd_output`), brought back by `G^T . G` (the transpose of `winograd_kernel_tiles`).

  Args:
    x: the input `[B, H, W, Cin]` float32.
    g: the output's cotangent `[B, H, W, Cout]` float32.
  Returns:
    `[3, 3, Cin, Cout]` float32.
  """
  b, h, w, cout = g.shape
  ty, tx = _winograd_tiles(h), _winograd_tiles(w)
  gp = jnp.pad(g, ((0, 0), (0, ty * _TILE_OUT - h), (0, tx * _TILE_OUT - w), (0, 0)))
  # [4 (p), 4 (q), B, Ty, Tx, Cout]: output pixel (p, q) of every tile.
  gt = gp.reshape(b, ty, _TILE_OUT, tx, _TILE_OUT, cout).transpose(2, 4, 0, 1, 3, 5)
  dm = _transform_2d(_WINOGRAD_AT.T, gt)
  du = jax.lax.dot_general(winograd_input_tiles(x), dm.reshape(_TILE_IN**2, b * ty * tx, cout),
                           (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
  return winograd_kernel_tiles_transposed(du)


def _winograd_call_tiles(x_shape, kernel_shape, dtypes, strides, pads, lhs_dilation
                         ) -> int | None:
  """The output tiles of one call of a convolution F(4x4, 3x3) can take (float32, 3x3, stride
  1, no input dilation, one pixel of padding on every side, both channel counts at least
  `WINOGRAD_MIN_CHANNELS`), or None for any other. A symbolic batch size (a batch-polymorphic
  export) counts as one image."""
  b, h, w, cin = x_shape
  if (tuple(kernel_shape[:2]) != (3, 3) or tuple(strides) != (1, 1) or
      tuple(lhs_dilation) != (1, 1) or tuple(map(tuple, pads)) != ((1, 1), (1, 1)) or
      any(d != jnp.float32 for d in dtypes) or
      min(cin, kernel_shape[-1]) < WINOGRAD_MIN_CHANNELS):
    return None
  return (b if isinstance(b, int) else 1) * _winograd_tiles(h) * _winograd_tiles(w)


def winograd_passes(x_shape, kernel_shape, dtypes, strides, pads, lhs_dilation
                    ) -> tuple[bool, bool, bool]:
  """Which passes of a convolution (forward, input gradient, weight gradient) go through
  F(4x4, 3x3) on CPU, by the bounds above: only float32 3x3 convolutions with stride 1, no
  input dilation and one pixel of padding on every side qualify. A symbolic batch size (a
  batch-polymorphic export) counts as one image."""
  tiles = _winograd_call_tiles(x_shape, kernel_shape, dtypes, strides, pads, lhs_dilation)
  if tiles is None:
    return False, False, False
  widest = max(kernel_shape[-2:])
  conv = (WINOGRAD_CONV_CHANNELS[0] <= widest <= WINOGRAD_CONV_CHANNELS[1] and
          WINOGRAD_CONV_TILES[0] <= tiles <= WINOGRAD_CONV_TILES[1])
  return conv, conv, tiles >= WINOGRAD_WEIGHT_GRAD_MIN_TILES


def winograd_inference_forward(x_shape, kernel_shape, dtypes, strides, pads,
                               lhs_dilation) -> bool:
  """Whether the inference forward (a call outside differentiation) of a convolution goes
  through F(4x4, 3x3) on CPU: the convolutions `winograd_passes` qualifies, with the wider
  bounds `WINOGRAD_INFERENCE_CONV_CHANNELS` and `WINOGRAD_INFERENCE_CONV_TILES` (tiles per
  call), where the call's tiles times the images sharing its kernel tiles
  (`images_sharing_kernel_tiles`, 1 outside it) reach `WINOGRAD_INFERENCE_MIN_SHARED_TILES`.
  It includes every forward `winograd_passes` gives."""
  tiles = _winograd_call_tiles(x_shape, kernel_shape, dtypes, strides, pads, lhs_dilation)
  channels, tile_counts = WINOGRAD_INFERENCE_CONV_CHANNELS, WINOGRAD_INFERENCE_CONV_TILES
  return (tiles is not None and channels[0] <= max(kernel_shape[-2:]) <= channels[1] and
          tile_counts[0] <= tiles <= tile_counts[1] and
          tiles * _IMAGES_SHARING_KERNEL_TILES.get() >= WINOGRAD_INFERENCE_MIN_SHARED_TILES)


def _conv_library(x, kernel, strides, pads, lhs_dilation=(1, 1)):
  return jax.lax.conv_general_dilated(x, kernel, strides, pads, lhs_dilation=lhs_dilation,
                                      dimension_numbers=_NHWC_HWIO)


class ConvPlan(NamedTuple):
  """How the CPU path computes each pass of one convolution (`conv_general_dilated`):
  'library' (`lax.conv_general_dilated` and its transposes), 'winograd' (F(4x4, 3x3)) or
  'products' (`conv_tap_products` and its transpose); the forward also 'phases'
  (`input_dilated_conv_phases`); the weight gradient also 'dots'
  (`conv_weight_grad_dots` and its dilated form). `forward` is the inference forward,
  `train_forward` the forward of a differentiated call (the custom VJP's forward rule)."""
  forward: str
  train_forward: str
  input_grad: str
  weight_grad: str


LIBRARY_PLAN = ConvPlan('library', 'library', 'library', 'library')


def _conv_forward(how, x, kernel, strides, pads, lhs_dilation):
  """The forward convolution as `ConvPlan`'s `how` says (not 'products')."""
  if how == 'winograd':
    return winograd_conv3x3(x, kernel)
  if how == 'phases':
    return input_dilated_conv_phases(x, kernel, lhs_dilation, pads)
  return _conv_library(x, kernel, strides, pads, lhs_dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_cpu(x, kernel, strides, pads, lhs_dilation, plan):
  return _conv_forward(plan.forward, x, kernel, strides, pads, lhs_dilation)


def _conv_cpu_fwd(x, kernel, strides, pads, lhs_dilation, plan):
  if plan.train_forward == 'products':
    y = conv_tap_products(x, kernel, strides, pads)
  else:
    y = _conv_forward(plan.train_forward, x, kernel, strides, pads, lhs_dilation)
  return y, (x, kernel)


def _conv_cpu_bwd(strides, pads, lhs_dilation, plan, residuals, g):
  x, kernel = residuals
  if plan.input_grad == 'winograd':
    dx = winograd_conv3x3_input_grad(g, kernel)
  elif plan.input_grad == 'products':
    dx = conv_input_grad_tap_products(g, kernel, strides, pads, x.shape)
  else:  # linear in g: XLA's transposed convolution, as autodiff would emit it
    (dx,) = jax.linear_transpose(
        lambda a: _conv_library(a, kernel, strides, pads, lhs_dilation), x)(g)
  if plan.weight_grad == 'winograd':
    dw = winograd_conv3x3_weight_grad(x, g)
  elif plan.weight_grad == 'library':
    (dw,) = jax.linear_transpose(
        lambda b: _conv_library(x, b, strides, pads, lhs_dilation), kernel)(g)
  elif lhs_dilation == (1, 1):
    dw = conv_weight_grad_dots(x, g, kernel.shape[:2], strides, pads)
  else:  # only with window strides 1 (conv_general_dilated checks)
    dw = dilated_conv_weight_grad_dots(x, g, kernel.shape[:2], lhs_dilation, pads)
  return dx.astype(x.dtype), dw.astype(kernel.dtype)


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def conv_plan(x_shape, kernel_shape, dtypes, strides: tuple[int, int],
              pads: tuple[tuple[int, int], ...], lhs_dilation: tuple[int, int]) -> ConvPlan:
  """The CPU path's plan for a 2-D NHWC/HWIO convolution without kernel dilation or groups
  (input dilation only with window strides 1 and explicit padding):
  - inference forward by F(4x4, 3x3) where `winograd_inference_forward` says so; training
    forward and input gradient where `winograd_passes` says so;
  - the forward of an input-dilated convolution (a transposed one) by phases
    (`input_dilated_conv_phases`), in inference and training: against XLA:CPU's own, 1.2-2x
    faster at ResNet V2's upsampling shapes from 32 x 32 inputs, 0.9-1.2x from 16 x 16 ones,
    1.01-1.02x on the whole model (docs/benchmarks.md, "Hot paths");
  - else, in training, forward and input gradient as tap products (`conv_tap_products`) for
    a 3x3-or-larger stride-1 kernel with at least `TRAIN_PRODUCTS_MIN_CHANNEL_PAIRS` Cin x Cout
    pairs on at most `TRAIN_PRODUCTS_MAX_PIXELS` output pixels per call, and for a 1x1 kernel
    with at least `TRAIN_PRODUCTS_MIN_POINTWISE_FLOPS` of weight gradient per image (the
    forward of a strided one only from `TRAIN_PRODUCTS_MIN_CHANNEL_PAIRS` on); else the
    library's;
  - weight gradient by F(4x4, 3x3) where `winograd_passes` says so; else from
    `conv_weight_grad_dots` for a 1x1 kernel with a weight gradient of at least
    `POINTWISE_DOTS_MIN_WEIGHT_GRAD_FLOPS` per image (one product), and for any kernel with
    at least `DOTS_MIN_OUTPUT_PIXELS` output pixels per image (approximately, by ceil(H / stride) *
    ceil(W / stride)) or a weight gradient of at least `DOTS_MIN_WEIGHT_GRAD_FLOPS` per image,
    except the stems of `LIBRARY_STEM_MIN_KERNEL` and `LIBRARY_STEM_MAX_OUTPUT_CHANNELS`;
    with an input dilation (a transposed convolution) always from
    `dilated_conv_weight_grad_dots`, since XLA:CPU's own runs as a plain loop there; else the
    library's.
  A symbolic batch size (a batch-polymorphic export) counts as one image."""
  dilated = tuple(lhs_dilation) != (1, 1)
  out_pixels = -(-x_shape[1] // strides[0]) * -(-x_shape[2] // strides[1])
  weight_grad_flops = 2.0 * out_pixels * math.prod(kernel_shape)
  winograd_forward, input_grad, weight_grad = winograd_passes(
      x_shape, kernel_shape, dtypes, strides, pads, lhs_dilation)
  pointwise = tuple(kernel_shape[:2]) == (1, 1)
  library_stem = (kernel_shape[2] <= IM2COL_MAX_INPUT_CHANNELS and not dilated and
                  min(kernel_shape[:2]) >= LIBRARY_STEM_MIN_KERNEL and
                  kernel_shape[3] <= LIBRARY_STEM_MAX_OUTPUT_CHANNELS)
  dots = not library_stem and (
      dilated or out_pixels >= DOTS_MIN_OUTPUT_PIXELS or
      weight_grad_flops >= DOTS_MIN_WEIGHT_GRAD_FLOPS or
      (pointwise and weight_grad_flops >= POINTWISE_DOTS_MIN_WEIGHT_GRAD_FLOPS))
  images = x_shape[0] if isinstance(x_shape[0], int) else 1
  stride_1 = tuple(strides) == (1, 1)
  many_pairs = kernel_shape[2] * kernel_shape[3] >= TRAIN_PRODUCTS_MIN_CHANNEL_PAIRS
  big_kernel = (not pointwise and stride_1 and not dilated and many_pairs and
                images * out_pixels <= TRAIN_PRODUCTS_MAX_PIXELS)
  pointwise_products = (pointwise and not dilated and
                        weight_grad_flops >= TRAIN_PRODUCTS_MIN_POINTWISE_FLOPS)
  products_forward = big_kernel or (pointwise_products and (stride_1 or many_pairs))
  other = 'phases' if dilated else 'library'
  inference_winograd = winograd_inference_forward(x_shape, kernel_shape, dtypes, strides, pads,
                                                  lhs_dilation)
  return ConvPlan(
      forward='winograd' if inference_winograd else other,
      train_forward=('products' if products_forward else
                     'winograd' if winograd_forward else other),
      input_grad=('winograd' if input_grad else
                  'products' if big_kernel or pointwise_products else 'library'),
      weight_grad='winograd' if weight_grad else 'dots' if dots else 'library')


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         precision=None, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` for `nn.Conv(conv_general_dilated=...)`. On CPU, a 2-D
  NHWC/HWIO convolution without kernel dilation or groups gets the passes of `conv_plan`. A
  plan with every pass the library's, any other convolution, and every other platform get the
  library call unchanged."""
  library = functools.partial(
      jax.lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      precision=precision, **kwargs)
  dilation = tuple(int(d) for d in (lhs_dilation or (1, 1)))
  strides = tuple(int(s) for s in window_strides)
  plain = (lhs.ndim == 4 and feature_group_count == 1 and not kwargs and precision is None
           and all(d == 1 for d in (rhs_dilation or (1,))) and
           jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           == _NHWC_HWIO)
  if dilation != (1, 1):
    plain = plain and strides == (1, 1) and not isinstance(padding, str)
  if not plain:
    return library(lhs, rhs)
  if isinstance(padding, str):
    pads = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  plan = conv_plan(lhs.shape, rhs.shape, (lhs.dtype, rhs.dtype), strides, pads, dilation)
  if plan == LIBRARY_PLAN:
    return library(lhs, rhs)
  return jax.lax.platform_dependent(
      lhs, rhs, cpu=lambda a, b: _conv_cpu(a, b, strides, pads, dilation, plan),
      default=library)


def conv_transpose_same_pads(kernel: int, stride: int) -> tuple[int, int]:
  """(low, high) padding of the dilated input that makes a stride-`stride` transposed
  convolution 'SAME' (output = input x stride), as `lax.conv_transpose` pads it: k + s - 2 in
  all, k - 1 low when s > k - 1, else half of it rounded up."""
  total = kernel + stride - 2
  low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
  return low, total - low


class _ConvWithBias(nn.Module):
  """What `ConvTranspose2D` and `Conv` share: Flax's parameters (`kernel`, `bias`), their
  initializers and dtypes, and the bias `conv_then_batch_norm` reads."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  use_bias: bool = True
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Any] = nn.initializers.zeros_init()
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def _parameters(self, x, kernel_shape):
    """(x, kernel, bias or None) in the compute dtype; creates the parameters (kernel first)."""
    kernel = self.param('kernel', self.kernel_init, kernel_shape, self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    return nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)

  def bias_parameter(self) -> jax.Array | None:
    """The bias `[features]` (None without one); the module must have been called."""
    return self.variables['params']['bias'] if self.use_bias else None


class ConvTranspose2D(_ConvWithBias):
  """Flax's `nn.ConvTranspose(features, kernel_size, strides, padding='SAME',
  transpose_kernel=True)` (Keras' Conv2DTranspose: kernel `[kh, kw, out, in]`, bias `[out]`,
  the same parameter names and shapes), its convolution through `conv_general_dilated` so
  that its weight gradient is products on CPU. tests/test_layers.py checks outputs and
  gradients against `nn.ConvTranspose`.

  Input `[B, H, W, Cin]` -> `[B, H * sh, W * sw, features]`.
  """

  @nn.compact
  def __call__(self, x, add_bias: bool = True):
    """`add_bias=False` leaves the bias out of the output (for `conv_then_batch_norm`)."""
    kh, kw = self.kernel_size
    x, kernel, bias = self._parameters(x, (kh, kw, self.features, x.shape[-1]))
    # transpose_kernel: the kernel flipped in space, its two channel axes swapped.
    rhs = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
    pads = (conv_transpose_same_pads(kh, self.strides[0]),
            conv_transpose_same_pads(kw, self.strides[1]))
    y = conv_general_dilated(x, rhs, (1, 1), pads, lhs_dilation=tuple(self.strides),
                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y if bias is None or not add_bias else y + bias


class Conv(_ConvWithBias):
  """Flax's `nn.Conv(features, kernel_size, strides, padding, use_bias, kernel_init,
  bias_init, dtype, param_dtype, conv_general_dilated=conv_general_dilated)` for 2-D NHWC
  inputs (the same parameter names, shapes and initial values), with one more call argument:
  `add_bias=False` leaves the bias out of the output, which `conv_then_batch_norm` hands to
  the batch norm instead. tests/test_layers.py checks it against `nn.Conv`.

  Input `[B, H, W, Cin]` -> `[B, H', W', features]`.
  """
  padding: str | Sequence[tuple[int, int]] = 'SAME'

  @nn.compact
  def __call__(self, x, add_bias: bool = True):
    x, kernel, bias = self._parameters(
        x, tuple(self.kernel_size) + (x.shape[-1], self.features))
    y = conv_general_dilated(x, kernel, tuple(self.strides), self.padding,
                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y if bias is None or not add_bias else y + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                     fast_variance: bool):
  """Training-mode batch norm over every axis but the last, as `nn.BatchNorm` computes it.

  Args:
    x: `[..., C]`, any float dtype (the statistics and the output are float32).
    scale, bias: `[C]` float32.
    epsilon: added to the variance.
    fast_variance: the variance as E[x^2] - E[x]^2 (clipped at 0) instead of
      E[(x - E[x])^2] (`nn.BatchNorm`'s `use_fast_variance`).
  Returns:
    (y `[..., C]` float32, mean `[C]`, variance `[C]`). The statistics are for the running
    averages: their cotangents are dropped (no gradient flows through a running average).
  """
  y, mean, var, _, _ = _batch_norm_train_forward(x, scale, bias, epsilon, fast_variance)
  return y, mean, var


def _batch_norm_train_forward(x, scale, bias, epsilon, fast_variance):
  # The operations in `nn.BatchNorm`'s order, so that the values are its values.
  x = x.astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  centred = x - mean
  if fast_variance:
    var = jnp.maximum(0.0, jnp.mean(x * x, axes) - mean * mean)
  else:
    var = jnp.mean(centred * centred, axes)
  inv = jax.lax.rsqrt(var + epsilon)
  y = centred * (inv * scale) + bias
  return y, mean, var, inv, centred


def _batch_norm_train_fwd(x, scale, bias, epsilon, fast_variance):
  y, mean, var, inv, centred = _batch_norm_train_forward(x, scale, bias, epsilon, fast_variance)
  # The centred input is the residual, not x: XLA:CPU's library reductions read materialized
  # operands, so the variance's pass has it in memory already, and the backward's sum of
  # g * (x - mean) reads it as it is instead of a normalized copy written for it.
  return (y, mean, var), (centred, inv, scale, jnp.zeros((0,), x.dtype))


def _batch_norm_train_bwd(epsilon, fast_variance, residuals, cotangents):
  del epsilon, fast_variance
  centred, inv, scale, x_dtype = residuals
  g = cotangents[0].astype(jnp.float32)
  axes = tuple(range(centred.ndim - 1))
  n = centred.size // centred.shape[-1]
  # One pass over (g, x - mean) for both sums, one for dx: the textbook gradient of
  # normalizing by the batch's own mean and variance, with x_hat = (x - mean) * inv.
  d_bias = jnp.sum(g, axes)
  g_centred = jnp.sum(g * centred, axes)
  d_scale = g_centred * inv
  dx = (scale * inv / n) * (n * g - d_bias - centred * (inv * inv * g_centred))
  return dx.astype(x_dtype.dtype), d_scale, d_bias


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.BatchNorm):
  """`nn.BatchNorm` (the same variables, names and values) whose training pass takes its
  gradient from `batch_norm_train`'s written-out VJP: one pass over the centred input and the
  output cotangent for the two parameter sums, one for the input gradient. Autodiff of
  `nn.BatchNorm` gave XLA:CPU more passes: the training step ran 1.03-1.06x faster with this
  for MobileNetV2 FPN 512, 1.03-1.04x for ResNet50 V2 512, 1.02x for the demo, 1.01x for
  ResNet50 V1 FPN 512 (docs/benchmarks.md, "Hot paths"). Inference, and the cases
  `batch_norm_train` does not cover (a mask, an `axis_name`, another feature axis, no scale or
  no bias), are `nn.BatchNorm` itself. tests/test_layers.py checks values and gradients
  against it.

  `input_bias` (`[C]`, or None): a per-channel constant that the caller left out of `x` (the
  bias of the convolution before, `conv_then_batch_norm`). The batch statistics remove any
  such constant, so the training output is that of `x + input_bias` without the pass that
  adds it; the running mean is that of `x + input_bias`. Elsewhere it is added to `x`.
  """

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None,
               input_bias=None):
    running = nn.merge_param('use_running_average', self.use_running_average,
                             use_running_average)
    if (running or mask is not None or self.axis_name is not None
        or self.axis not in (-1, x.ndim - 1) or not (self.use_scale and self.use_bias)
        or not self.force_float32_reductions):
      if input_bias is not None:
        x = x + input_bias.astype(x.dtype)
      return super().__call__(x, use_running_average, mask=mask)
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32),
                            features)
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param('scale', self.scale_init, features, self.param_dtype)
    bias = self.param('bias', self.bias_init, features, self.param_dtype)
    y, mean, var = batch_norm_train(x, scale.astype(jnp.float32), bias.astype(jnp.float32),
                                    self.epsilon, self.use_fast_variance)
    if input_bias is not None:
      mean = mean + input_bias.astype(jnp.float32)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(self.dtype or jnp.result_type(x, scale))


def conv_then_batch_norm(conv: nn.Module, batch_norm: BatchNorm, x: jax.Array,
                         train: bool) -> jax.Array:
  """`batch_norm(conv(x))` for a `batch_norm` built with `use_running_average=not train` and
  a `conv` that takes `add_bias` and has `bias_parameter()` (`Conv`, `ConvTranspose2D`,
  MobileNetV2 FPN's `SeparableConv`). In training the convolution's bias is not added to its
  output but handed to the batch norm (`BatchNorm`'s `input_bias`), which removes it with the
  batch mean anyway: one pass over the activations less per layer (the ResNet50 V1 FPN 512
  training step at batch 2, 1933 -> 1841 ms; docs/benchmarks.md). Its gradient is then
  exactly zero, as it is mathematically; autodiff through the add gave rounding noise."""
  if not train:
    return batch_norm(conv(x))
  return batch_norm(conv(x, add_bias=False), input_bias=conv.bias_parameter())
