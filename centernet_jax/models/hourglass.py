"""Hourglass-104, the TF2 OD API CenterNet `hourglass_104` feature extractor.

Zoo rows: CenterNet HourGlass104 512x512 / 1024x1024 (boxes and keypoints).

Structure (`HourglassNetwork(channel_dims=[128, 256, 256, 384, 384, 384, 512],
blocks_per_stage=[2, 2, 2, 2, 2, 4], num_stages=5, num_hourglasses=2)`):
  * ConvBlock(k, C, stride, relu): symmetric zero pad k // 2 (k > 1), 'VALID' conv without
    bias, BN, optional ReLU. Symmetric padding differs from TF 'SAME' at stride 2, so the pads
    are explicit.
  * ResidualBlock(C, stride, skip): ConvBlock(3, C, stride) -> conv 3x3 (stride 1, pad 1) -> BN,
    plus identity or a 1x1 strided conv + BN (`skip`), then ReLU of the sum.
  * stem (`downsample_input`): ConvBlock(7, 128, 2) -> ResidualBlock(256, 2, skip): stride 4.
  * EncoderDecoderBlock (recursive, 5 levels): skip branch `encoder_block1` (n blocks at C_k),
    down branch `encoder_block2` (strided block to C_{k+1} + n - 1 blocks), `inner_block` (the
    next level, or 4 blocks at 512 channels innermost), `decoder_block` (n - 1 blocks at
    C_{k+1} + one to C_k), nearest 2x upsample, add.
  * two stacks; after each, `output_conv_i` = ConvBlock(3, 256) is a feature output; between
    them x = intermediate_residual(ReLU(intermediate_conv1(x) + intermediate_conv2(out_0))).
  * every BN: epsilon 1e-5, Keras momentum 0.1 (moving = 0.1 * moving + 0.9 * batch; Flax's
    `momentum` has the same meaning). Kernels are Glorot-uniform (Keras default).

Returns two 256-channel stride-4 maps, so CenterNet builds two head sets (intermediate
supervision; inference uses the last). The input side must be a multiple of 128 (stride 4 and
five 2x levels).

Module names mirror the checkpoint object paths under `model/_feature_extractor/_network/`:
a TF segment pair `<list>/<i>` becomes the Flax module `<list>_<i>` (see `flax_module_path`),
TF `gamma/beta/moving_mean/moving_variance` are Flax `scale/bias/mean/var`.

Input: raw 0..255 RGB, normalized by `normalize_input` (BGR, CenterNet COCO mean/std x 255).
"""

import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from centernet_jax.models import layers
from centernet_jax.models import tf_checkpoint_paths as tfp

# The zoo config's `channel_means` / `channel_stds` (BGR order, `bgr_ordering: true`).
CHANNEL_MEANS_BGR = (104.01362025, 114.03422265, 119.9165958)
CHANNEL_STDS_BGR = (73.6027665, 69.89082075, 70.9150767)

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.1  # Keras semantics, identical to Flax's.

# depth -> (channel_dims, blocks_per_stage, num_stages, num_hourglasses).
HOURGLASS_CONFIGS: Dict[int, Tuple[Tuple[int, ...], Tuple[int, ...], int, int]] = {
    104: ((128, 256, 256, 384, 384, 384, 512), (2, 2, 2, 2, 2, 4), 5, 2),
}


def normalize_input(images: jnp.ndarray) -> jnp.ndarray:
  """Raw 0..255 RGB -> BGR, minus the BGR means, divided by the BGR stds (float32)."""
  x = jnp.asarray(images, jnp.float32)[..., ::-1]
  return ((x - jnp.asarray(CHANNEL_MEANS_BGR, jnp.float32)) /
          jnp.asarray(CHANNEL_STDS_BGR, jnp.float32))


def scaled_channels(channels: int, width_multiplier: float) -> int:
  """`channels * width_multiplier`, rounded, at least 8; exactly `channels` at 1.0."""
  if width_multiplier == 1.0:
    return channels
  return max(8, int(round(channels * width_multiplier)))


def flax_module_path(tf_object_path: str) -> Tuple[str, ...]:
  """Checkpoint object path (below `_network/`) -> Flax module path.

  'hourglass_network/0/inner_block/0/decoder_block/1/skip/conv' ->
  ('hourglass_network_0', 'inner_block_0', 'decoder_block_1', 'skip', 'conv').
  """
  out: List[str] = []
  for segment in tf_object_path.strip('/').split('/'):
    if re.fullmatch(r'\d+', segment) and out:
      out[-1] = f'{out[-1]}_{segment}'
    else:
      out.append(segment)
  return tuple(out)


def _bn(train: bool, dtype: Any, momentum: float, name: str) -> layers.BatchNorm:
  return layers.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=BN_EPSILON,
                          dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False, name=name)


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
  """A k x k convolution after a symmetric zero padding of k // 2, as the convolution's own
  padding: the values of pad + 'VALID', and at stride 1 the padding F(4x4, 3x3) takes
  (`layers.winograd_passes`)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)),
                 use_bias=False, kernel_init=nn.initializers.glorot_uniform(), dtype=dtype,
                 param_dtype=jnp.float32, conv_general_dilated=layers.conv_general_dilated,
                 name=name)


class ConvBlock(nn.Module):
  """Conv k x k with a symmetric zero padding of k // 2 (no bias) -> BN -> optional ReLU."""
  features: int
  kernel: int = 3
  stride: int = 1
  relu: bool = True
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _conv(self.features, self.kernel, self.stride, self.dtype, 'conv')(x)
    x = _bn(train, self.dtype, self.bn_momentum, 'norm')(x)
    return nn.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
  """ConvBlock(3, stride) -> conv 3x3 -> BN, + (identity | 1x1 strided ConvBlock), ReLU."""
  features: int
  stride: int = 1
  skip_conv: bool = False
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = ConvBlock(self.features, 3, self.stride, relu=True, dtype=self.dtype,
                  bn_momentum=self.bn_momentum, name='conv_block')(x, train)
    y = _conv(self.features, 3, 1, self.dtype, 'conv')(y)
    y = _bn(train, self.dtype, self.bn_momentum, 'norm')(y)
    if self.skip_conv:
      x = ConvBlock(self.features, 1, self.stride, relu=False, dtype=self.dtype,
                    bn_momentum=self.bn_momentum, name='skip')(x, train)
    return layers.block_output(nn.relu(y + x))


def _repeated_residual_blocks(x, out_channels: int, num_blocks: int, initial_stride: int,
                              residual_channels: int, name: str, train: bool, dtype: Any,
                              bn_momentum: float):
  """`num_blocks - 1` blocks at `residual_channels` (the first carries `initial_stride`, with a
  skip conv when strided), then one stride-1 block to `out_channels` (skip conv if the channel
  count changes). Modules are named `<name>_<j>`."""
  for j in range(num_blocks - 1):
    stride = initial_stride if j == 0 else 1
    x = ResidualBlock(residual_channels, stride, skip_conv=stride > 1, dtype=dtype,
                      bn_momentum=bn_momentum, name=f'{name}_{j}')(x, train)
  return ResidualBlock(out_channels, 1, skip_conv=residual_channels != out_channels,
                       dtype=dtype, bn_momentum=bn_momentum,
                       name=f'{name}_{num_blocks - 1}')(x, train)


class EncoderDecoderBlock(nn.Module):
  """One hourglass level (recursive). `channel_dims[0]` is this level's width,
  `channel_dims[1]` the downsampled one; `blocks_per_stage[0]` blocks per branch here."""
  num_stages: int
  channel_dims: Sequence[int]
  blocks_per_stage: Sequence[int]
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    c, c_down = self.channel_dims[0], self.channel_dims[1]
    n = self.blocks_per_stage[0]
    kw = dict(train=train, dtype=self.dtype, bn_momentum=self.bn_momentum)
    skip = _repeated_residual_blocks(x, c, n, 1, c, 'encoder_block1', **kw)
    down = _repeated_residual_blocks(x, c_down, n, 2, c_down, 'encoder_block2', **kw)
    if self.num_stages > 1:
      inner = EncoderDecoderBlock(self.num_stages - 1, tuple(self.channel_dims[1:]),
                                  tuple(self.blocks_per_stage[1:]), dtype=self.dtype,
                                  bn_momentum=self.bn_momentum, name='inner_block_0')(down, train)
    else:
      inner = _repeated_residual_blocks(down, c_down, self.blocks_per_stage[1], 1, c_down,
                                        'inner_block', **kw)
    decoded = _repeated_residual_blocks(inner, c, n, 1, c_down, 'decoder_block', **kw)
    return skip + layers.upsample_nearest_2x(decoded)


class DownsampleInput(nn.Module):
  """The stem: ConvBlock(7, initial, stride 2) -> ResidualBlock(residual, stride 2, skip)."""
  initial_channels: int
  residual_channels: int
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = ConvBlock(self.initial_channels, 7, 2, relu=True, dtype=self.dtype,
                  bn_momentum=self.bn_momentum, name='conv_block')(x, train)
    return ResidualBlock(self.residual_channels, 2, skip_conv=True, dtype=self.dtype,
                         bn_momentum=self.bn_momentum, name='residual_block')(x, train)


class HourglassNetwork(nn.Module):
  """Stacked hourglass; returns `num_hourglasses` feature maps at stride 4.

  Attributes:
    depth: key of `HOURGLASS_CONFIGS` (104).
    width_multiplier: scales every channel count (`scaled_channels`); 1.0 is the zoo network.
    dtype: compute dtype; params and BN statistics stay float32.
    bn_momentum: Keras/Flax-semantics BN momentum (0.1 in the OD API).
  """
  depth: int = 104
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM

  @property
  def input_multiple(self) -> int:
    return 4 * 2 ** HOURGLASS_CONFIGS[self.depth][2]

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> List[jnp.ndarray]:
    if self.depth not in HOURGLASS_CONFIGS:
      raise ValueError(f'Unsupported hourglass depth {self.depth}; '
                       f'choose from {sorted(HOURGLASS_CONFIGS)}.')
    channel_dims, blocks, num_stages, num_hourglasses = HOURGLASS_CONFIGS[self.depth]
    m = self.input_multiple
    if x.shape[1] % m or x.shape[2] % m:
      raise ValueError(f'Hourglass-{self.depth} needs H and W divisible by {m}, '
                       f'got {x.shape[1:3]}.')
    dims = tuple(scaled_channels(c, self.width_multiplier) for c in channel_dims)
    kw = dict(dtype=self.dtype, bn_momentum=self.bn_momentum)
    x = jnp.asarray(x, self.dtype)

    # Stem (`downsample_input`): stride 4.
    x = DownsampleInput(dims[0], dims[1], name='downsample_input', **kw)(x, train)

    outputs = []
    for i in range(num_hourglasses):
      h = EncoderDecoderBlock(num_stages, dims[1:], blocks, name=f'hourglass_network_{i}',
                              **kw)(x, train)
      out = ConvBlock(dims[1], 3, 1, relu=True, name=f'output_conv_{i}', **kw)(h, train)
      outputs.append(out)
      if i < num_hourglasses - 1:
        a = ConvBlock(dims[1], 1, 1, relu=False, name=f'intermediate_conv1_{i}', **kw)(x, train)
        b = ConvBlock(dims[1], 1, 1, relu=False, name=f'intermediate_conv2_{i}', **kw)(out, train)
        x = ResidualBlock(dims[1], name=f'intermediate_residual_{i}', **kw)(nn.relu(a + b), train)
    return outputs


def build(model_config, dtype: Any = jnp.float32) -> HourglassNetwork:
  """Builds the backbone from the `model` config section (width_multiplier, and
  `backbone_kwargs.hourglass`: depth)."""
  return HourglassNetwork(width_multiplier=float(model_config.width_multiplier), dtype=dtype,
                          **dict(model_config.backbone_kwargs.hourglass))


# ---------------------------------------------------------------------------------------------
# TF2 zoo checkpoints (converted by centernet_jax/tf_checkpoint.py).

# OD API `feature_extractor.type` -> this backbone's model config fields.
ZOO_FEATURE_EXTRACTORS = {'hourglass_104': {}}
TF_NETWORK = 'model/_feature_extractor/_network'


def _leaf_modules(tree, prefix: Tuple[str, ...] = ()):
  """(module path, leaf names) of every Flax module that directly holds variables."""
  leaves = [k for k, v in tree.items() if not isinstance(v, Mapping)]
  if leaves:
    yield prefix, tuple(leaves)
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _leaf_modules(v, prefix + (str(k),))


def _tf_segments(flax_name: str) -> str:
  """Flax module name '<list>_<i>' -> TF segments '<list>/<i>' (inverse of
  `flax_module_path`)."""
  m = re.fullmatch(r'(.+)_(\d+)', flax_name)
  return f'{m.group(1)}/{m.group(2)}' if m else flax_name


def tf_layer_map(model_config, params, *, classification: bool = False) -> tfp.LayerMapResult:
  """Flax modules mirror `model/_feature_extractor/_network/<object path>`: a Flax module
  '<list>_<i>' is the TF segment pair '<list>/<i>'; modules holding `scale` are BN layers,
  the others convs."""
  del model_config
  if classification:
    raise tfp.CheckpointMismatchError(
        "The hourglass has no 'classification' (ImageNet) checkpoint; the zoo initialised it "
        "from ExtremeNet with init type 'detection'.")
  layers: tfp.LayerMap = {}
  for path, leaves in _leaf_modules(params.get('backbone', {})):
    tf_path = '/'.join([TF_NETWORK] + [_tf_segments(p) for p in path])
    layers[('backbone',) + path] = (tf_path, 'bn' if 'scale' in leaves else 'conv')
  return tfp.LayerMapResult(layers, ('backbone',), {})
