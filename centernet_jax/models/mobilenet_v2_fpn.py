"""MobileNetV2 + the TF2 OD API CenterNet FPN (`mobilenet_v2_fpn` / `mobilenet_v2_fpn_sep_conv`).

Zoo rows: CenterNet MobileNetV2 FPN 512x512 (boxes, `_sep_conv` FPN) and the keypoint variant.

Backbone: the OD API wrapper around `tf.keras.applications.MobileNetV2(include_top=False)`:
  * TF 'SAME' padding for every conv and depthwise conv, including `Conv1` and the stride-2
    depthwise convs (asymmetric: the extra pixel goes at the end; lax 'SAME' is identical);
  * ReLU6 activations; no conv has a bias; BN epsilon 1e-3, Keras momentum 0.9997;
  * kernels are truncated-normal(0.09) (the OD API override; the zoo initialises the backbone
    from the Keras ImageNet weights, which a checkpoint converter loads);
  * inverted residual blocks (expansion t, channels c, repeats n, first stride s):
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1), then `Conv_1` 1x1 to 1280 + BN + ReLU6 (`out_relu`).
  * `width_multiplier` is the MobileNet alpha (`depth_multiplier`, 1.0 in the zoo): block
    channels `make_divisible(int(c * alpha), 8)`, `Conv_1` 1280 unless alpha < 1 (OD API rule).

FPN (channels fixed whatever alpha is):
  t = Conv1x1(64, bias)(out_relu)
  for (tap, lateral, out) in [(block_9_add, 64, 32), (block_5_add, 32, 24),
                              (block_2_add, 24, 24)]:
    t = up2_nearest(t) + Conv1x1(lateral, bias)(tap)
    t = ReLU(BN(Conv3x3(out)(t)))
  The 3x3 is a Keras `SeparableConv2D` (depthwise 3x3 without bias, then pointwise 1x1 with
  the single bias, nothing in between) when `use_separable_conv` (the zoo's `_sep_conv`), else a
  plain conv with bias. FPN layers are Keras defaults: Glorot-uniform kernels, BN epsilon 1e-3,
  momentum 0.99, plain ReLU. Output: 24 channels at stride 4, one feature output.

Module names: the backbone lives under `mobilenet_v2/` with the Keras layer names (`Conv1`,
`bn_Conv1`, `expanded_conv_depthwise`, `block_1_expand`, ..., `Conv_1_bn`), listed in the
checkpoint's `_base_model/layer_with_weights-N` order by `keras_weighted_layer_order`; the FPN
modules are listed in `_feature_extractor_model/layer_with_weights-K` (K = 1..10) order by
`FPN_CHECKPOINT_ORDER`. A separable conv has `depthwise` (Flax kernel [3, 3, 1, C]; TF
`depthwise_kernel` [3, 3, C, 1]) and `pointwise` (`pointwise_kernel` and the `bias`).

Input: raw 0..255 RGB, normalized by `normalize_input` (x / 127.5 - 1) before the backbone.
"""

from typing import Any, List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from centernet_jax.models import layers

from centernet_jax.models import tf_checkpoint_paths as tfp

BACKBONE_BN_EPSILON = 1e-3
BACKBONE_BN_MOMENTUM = 0.9997  # OD API `mobilenet_v2(default_batchnorm_momentum=0.9997)`.
FPN_BN_EPSILON = 1e-3
FPN_BN_MOMENTUM = 0.99
BACKBONE_KERNEL_STDDEV = 0.09

# (expansion, channels, repeats, first stride) per group; block ids run 0..16.
INVERTED_RESIDUAL_SETTINGS: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1))
FIRST_BLOCK_FILTERS = 32
LAST_BLOCK_FILTERS = 1280

# Tapped block ids (their `_add` outputs) for the FPN levels c2, c3, c4; c5 is `out_relu`.
TAP_BLOCKS = {2: 2, 3: 5, 4: 9}
FPN_TOP_CHANNELS = 64
# (level, lateral channels, 3x3 output channels), top-down.
FPN_LEVELS = ((4, 64, 32), (3, 32, 24), (2, 24, 24))

# FPN module names in `_feature_extractor_model/layer_with_weights-K` order, K = 1..10.
FPN_CHECKPOINT_ORDER = (
    'fpn_top_conv',
    'fpn_c4_lateral_conv', 'fpn_c4_conv', 'fpn_c4_bn',
    'fpn_c3_lateral_conv', 'fpn_c3_conv', 'fpn_c3_bn',
    'fpn_c2_lateral_conv', 'fpn_c2_conv', 'fpn_c2_bn',
)


def normalize_input(images: jnp.ndarray) -> jnp.ndarray:
  """Keras mobilenet_v2 preprocess_input ('tf' mode) on raw 0..255 RGB: x / 127.5 - 1."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def make_divisible(v: float, divisor: int = 8) -> int:
  """MobileNet channel rounding: nearest multiple of `divisor`, never 10% below `v`."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


def _block_specs(alpha: float) -> List[Tuple[int, int, int, int]]:
  """(block id, expansion, output channels, stride) for blocks 0..16."""
  specs = []
  for expansion, channels, repeats, stride in INVERTED_RESIDUAL_SETTINGS:
    out = make_divisible(int(channels * alpha), 8)
    for r in range(repeats):
      specs.append((len(specs), expansion, out, stride if r == 0 else 1))
  return specs


def _block_prefix(block_id: int) -> str:
  return 'expanded_conv_' if block_id == 0 else f'block_{block_id}_'


def last_block_filters(alpha: float) -> int:
  """`Conv_1` width: 1280, scaled only when alpha < 1 (the OD API override)."""
  return make_divisible(LAST_BLOCK_FILTERS * alpha, 8) if alpha < 1.0 else LAST_BLOCK_FILTERS


def keras_weighted_layer_order() -> List[str]:
  """Backbone layer names in Keras `[l for l in model.layers if l.weights]` order, i.e. the
  checkpoint's `_base_model/layer_with_weights-N` order (N = 0..103)."""
  names = ['Conv1', 'bn_Conv1']
  for block_id, expansion, _, _ in _block_specs(1.0):
    p = _block_prefix(block_id)
    if expansion != 1:
      names += [f'{p}expand', f'{p}expand_BN']
    names += [f'{p}depthwise', f'{p}depthwise_BN', f'{p}project', f'{p}project_BN']
  return names + ['Conv_1', 'Conv_1_bn']


class MobileNetV2(nn.Module):
  """OD-API MobileNetV2 without top; returns {2: block_2_add, 3: block_5_add, 4: block_9_add,
  5: out_relu} (strides 4, 8, 16, 32).

  Attributes:
    alpha: width multiplier (1.0 in the zoo).
    dtype: compute dtype; params and BN statistics stay float32.
    bn_momentum: Keras-semantics BN momentum.
  """
  alpha: float = 1.0
  dtype: Any = jnp.float32
  bn_momentum: float = BACKBONE_BN_MOMENTUM

  def _conv(self, features: int, kernel: int, stride: int, name: str):
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding='SAME',
                   use_bias=False,
                   kernel_init=nn.initializers.truncated_normal(BACKBONE_KERNEL_STDDEV),
                   dtype=self.dtype, param_dtype=jnp.float32,
                   conv_general_dilated=layers.conv_general_dilated, name=name)

  def _depthwise(self, stride: int, name: str) -> layers.DepthwiseConv:
    return layers.DepthwiseConv(
        3, stride, kernel_init=nn.initializers.truncated_normal(BACKBONE_KERNEL_STDDEV),
        dtype=self.dtype, name=name)

  def _bn(self, train: bool, name: str) -> layers.BatchNorm:
    return layers.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                            epsilon=BACKBONE_BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                            use_fast_variance=False, name=name)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> dict:
    x = jnp.asarray(x, self.dtype)
    x = self._conv(make_divisible(FIRST_BLOCK_FILTERS * self.alpha, 8), 3, 2, 'Conv1')(x)
    x = jax.nn.relu6(self._bn(train, 'bn_Conv1')(x))
    taps = {}
    for block_id, expansion, out_ch, stride in _block_specs(self.alpha):
      p = _block_prefix(block_id)
      in_ch = x.shape[-1]
      y = x
      if expansion != 1:
        y = self._conv(expansion * in_ch, 1, 1, f'{p}expand')(y)
        y = jax.nn.relu6(self._bn(train, f'{p}expand_BN')(y))
      y = self._depthwise(stride, f'{p}depthwise')(y)
      y = jax.nn.relu6(self._bn(train, f'{p}depthwise_BN')(y))
      y = self._conv(out_ch, 1, 1, f'{p}project')(y)
      y = self._bn(train, f'{p}project_BN')(y)
      x = x + y if (stride == 1 and in_ch == out_ch) else y
      for level, tap_block in TAP_BLOCKS.items():
        if block_id == tap_block:
          taps[level] = x
    x = self._conv(last_block_filters(self.alpha), 1, 1, 'Conv_1')(x)
    taps[5] = jax.nn.relu6(self._bn(train, 'Conv_1_bn')(x))
    return taps


class SeparableConv(nn.Module):
  """Keras SeparableConv2D(features, k, 'same'): depthwise k x k (multiplier 1, no bias), then
  pointwise 1x1 with the layer's single bias. Glorot-uniform kernels (Keras default)."""
  features: int
  kernel: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, add_bias: bool = True) -> jnp.ndarray:
    """`add_bias=False` leaves the bias out (`layers.conv_then_batch_norm`)."""
    glorot = nn.initializers.glorot_uniform()
    x = layers.DepthwiseConv(self.kernel, 1, kernel_init=glorot, dtype=self.dtype,
                             name='depthwise')(x)
    return layers.Conv(self.features, (1, 1), use_bias=True, kernel_init=glorot,
                       dtype=self.dtype, param_dtype=jnp.float32, name='pointwise')(x, add_bias)

  def bias_parameter(self) -> jnp.ndarray:
    """The layer's bias `[features]` (the module must have been called)."""
    return self.variables['params']['pointwise']['bias']


class MobileNetV2FPN(nn.Module):
  """MobileNetV2 + the OD API CenterNet FPN; returns a one-element list [24-ch stride-4 map].

  Attributes:
    alpha: MobileNet width multiplier (the FPN widths do not scale).
    use_separable_conv: separable 3x3 FPN convs (the zoo's `mobilenet_v2_fpn_sep_conv`).
    dtype: compute dtype; params and BN statistics stay float32.
  """
  alpha: float = 1.0
  use_separable_conv: bool = True
  dtype: Any = jnp.float32
  bn_momentum: float = BACKBONE_BN_MOMENTUM
  fpn_bn_momentum: float = FPN_BN_MOMENTUM

  def _conv1x1(self, features: int, name: str) -> nn.Conv:
    return nn.Conv(features, (1, 1), use_bias=True,
                   kernel_init=nn.initializers.glorot_uniform(), dtype=self.dtype,
                   param_dtype=jnp.float32, conv_general_dilated=layers.conv_general_dilated,
                   name=name)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> List[jnp.ndarray]:
    if x.shape[1] % 32 or x.shape[2] % 32:
      raise ValueError(f'MobileNetV2 FPN needs H and W divisible by 32, got {x.shape[1:3]}.')
    taps = MobileNetV2(alpha=self.alpha, dtype=self.dtype, bn_momentum=self.bn_momentum,
                       name='mobilenet_v2')(x, train)
    t = self._conv1x1(FPN_TOP_CHANNELS, 'fpn_top_conv')(taps[5])
    for level, lateral_ch, out_ch in FPN_LEVELS:
      lateral = self._conv1x1(lateral_ch, f'fpn_c{level}_lateral_conv')(taps[level])
      t = layers.upsample_nearest_2x(t) + lateral
      if self.use_separable_conv:
        conv = SeparableConv(out_ch, 3, dtype=self.dtype, name=f'fpn_c{level}_conv')
      else:
        conv = layers.Conv(out_ch, (3, 3), padding='SAME', use_bias=True,
                           kernel_init=nn.initializers.glorot_uniform(), dtype=self.dtype,
                           param_dtype=jnp.float32, name=f'fpn_c{level}_conv')
      bn = layers.BatchNorm(use_running_average=not train, momentum=self.fpn_bn_momentum,
                            epsilon=FPN_BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                            use_fast_variance=False, name=f'fpn_c{level}_bn')
      t = nn.relu(layers.conv_then_batch_norm(conv, bn, t, train))
    return [t]


def build(model_config, dtype: Any = jnp.float32) -> MobileNetV2FPN:
  """Builds the backbone from the `model` config section (width_multiplier = MobileNet alpha,
  and `backbone_kwargs.mobilenet_v2_fpn`: use_separable_conv)."""
  return MobileNetV2FPN(alpha=float(model_config.width_multiplier), dtype=dtype,
                        **dict(model_config.backbone_kwargs.mobilenet_v2_fpn))


# ---------------------------------------------------------------------------------------------
# TF2 zoo checkpoints (converted by centernet_jax/tf_checkpoint.py).

# OD API `feature_extractor.type` (`mobilenet_v2_fpn` with `use_separable_conv: true` is read
# as 'mobilenet_v2_fpn_sep_conv') -> this backbone's model config fields.
ZOO_FEATURE_EXTRACTORS = {
    'mobilenet_v2_fpn': {'backbone_kwargs.mobilenet_v2_fpn.use_separable_conv': False},
    'mobilenet_v2_fpn_sep_conv': {'backbone_kwargs.mobilenet_v2_fpn.use_separable_conv': True},
}


def tf_layer_map(model_config, params, *, classification: bool = False) -> tfp.LayerMapResult:
  """The OD API MobileNetV2 (Keras application layers) + FPN (K = 1..10; a separable 3x3 is
  one TF layer split into Flax `depthwise` + `pointwise`)."""
  del model_config, params  # one layout for every alpha and both FPN conv types
  order = keras_weighted_layer_order()
  base = tfp.CLASSIFICATION_ROOT if classification else tfp.BASE_MODEL
  layers: tfp.LayerMap = {}
  for n, name in enumerate(order):
    if name.endswith('BN') or name.endswith('_bn') or name.startswith('bn_'):
      kind = 'bn'
    elif name.endswith('depthwise'):
      kind = 'depthwise'
    else:
      kind = 'conv'
    layers[('backbone', 'mobilenet_v2', name)] = (f'{base}/layer_with_weights-{n}', kind)
  extra = {}
  if classification:
    extra = tfp.classifier_skip(len(order))
  else:
    for k, name in enumerate(FPN_CHECKPOINT_ORDER, start=1):
      tf_path = f'{tfp.FE_MODEL}/layer_with_weights-{k}'
      if name.endswith('_bn'):
        layers[('backbone', name)] = (tf_path, 'bn')
      else:
        layers[('backbone', name)] = (tf_path, 'conv')  # 1x1 convs, plain 3x3 convs
        layers[('backbone', name, 'depthwise')] = (tf_path, 'depthwise')  # SeparableConv2D
        layers[('backbone', name, 'pointwise')] = (tf_path, 'pointwise')
  return tfp.LayerMapResult(layers, ('backbone', 'mobilenet_v2'), extra)
