"""ResNet v1 (Keras-application flavour) with the TF2 OD API CenterNet FPN on top.

This is the `resnet_v1_{18,34,50,101}_fpn` CenterNet feature extractor of the TF2 Object
Detection API (zoo rows: ResNet50 v1 FPN and ResNet101 v1 FPN, 512x512).

Backbone ("Keras v1", `tf.keras.applications.ResNet50/101`):
  * stem: zero pad 3, 7x7/2 conv (with bias), BN, ReLU, zero pad 1, 3x3/2 max pool;
  * bottleneck blocks (depth 50/101/152): 1x1 (carries the stride) -> 3x3 'SAME' -> 1x1 (x4),
    a 1x1 projection shortcut (`_0_conv`, same stride) in the first block of every stage;
  * basic blocks (depth 18/34): 3x3 (carries the stride; explicit symmetric 1 px pad when the
    stride is 2) -> 3x3 'SAME', a 1x1 projection shortcut when the shape changes;
  * every conv has a bias; BN epsilon 1.001e-5, Keras momentum 0.99.

FPN (not a standard FPN: channels shrink at every level, there is no P6):
  t = Conv1x1(256)(C5)
  for (C, lateral, out) in [(C4, 256, 128), (C3, 128, 64), (C2, 64, 64)]:
    t = up2_nearest(t) + Conv1x1(lateral)(C)
    t = ReLU(BN(Conv3x3(out, 'SAME')(t)))
  All FPN convs have bias; FPN BNs use epsilon 1e-3, momentum 0.99.
  Output: one 64-channel feature map at stride 4.

`width_multiplier` scales every backbone and FPN channel count (`scaled_channels`); 1.0 is
exactly the zoo architecture (24,809,920 trainable params for ResNet-50, 43,828,160 for 101).

Module names follow the Keras layer names (`conv1_conv`, `conv2_block1_1_conv`, ...), so the
TF checkpoint converter can map `layer_with_weights-N` through `keras_weighted_layer_order`
and `FPN_CHECKPOINT_ORDER`.

Input: raw 0..255 RGB, normalized by `normalize_input` (Keras 'caffe' mode) before the backbone.
"""

from typing import Any, Dict, List, Tuple

import flax.linen as nn
import jax.numpy as jnp

from centernet_jax.models import layers
from centernet_jax.models import tf_checkpoint_paths as tfp

# Keras 'caffe' preprocess_input means, in BGR order.
CAFFE_MEANS_BGR = (103.939, 116.779, 123.68)

BACKBONE_BN_EPSILON = 1.001e-5
FPN_BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Keras semantics: moving = m * moving + (1 - m) * batch (same as Flax).

# depth -> (block type, blocks per stage conv2..conv5).
DEPTH_CONFIG: Dict[int, Tuple[str, Tuple[int, int, int, int]]] = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}
STAGE_FILTERS = (64, 128, 256, 512)  # bottleneck outputs are 4x these.

# FPN levels after the top 1x1 conv: (tapped stage, lateral channels, 3x3 output channels).
FPN_TOP_CHANNELS = 256
FPN_LEVELS = ((4, 256, 128), (3, 128, 64), (2, 64, 64))

# FPN module names in the order of the checkpoint's
# `_feature_extractor_model/layer_with_weights-K`, K = 1..10.
FPN_CHECKPOINT_ORDER = (
    'fpn_top_conv',
    'fpn_c4_lateral_conv', 'fpn_c4_conv', 'fpn_c4_bn',
    'fpn_c3_lateral_conv', 'fpn_c3_conv', 'fpn_c3_bn',
    'fpn_c2_lateral_conv', 'fpn_c2_conv', 'fpn_c2_bn',
)


def normalize_input(images: jnp.ndarray) -> jnp.ndarray:
  """Keras 'caffe' preprocess_input on raw 0..255 RGB: RGB->BGR, minus BGR means, no scaling.

  Returns float32 whatever the input dtype.
  """
  x = jnp.asarray(images, jnp.float32)[..., ::-1]
  return x - jnp.asarray(CAFFE_MEANS_BGR, jnp.float32)


def scaled_channels(channels: int, width_multiplier: float) -> int:
  """`channels * width_multiplier`, rounded, at least 8; exactly `channels` at 1.0."""
  if width_multiplier == 1.0:
    return channels
  return max(8, int(round(channels * width_multiplier)))


def keras_weighted_layer_order(depth: int) -> List[str]:
  """Backbone layer names in Keras `[l for l in model.layers if l.weights]` order.

  For the Keras applications (50/101/152) this is the checkpoint's
  `_base_model/layer_with_weights-N` order: the projection conv of a stage's first block comes
  after `_2_bn`, then `_3_conv`, `_0_bn`, `_3_bn` (research note 6.4). For 18/34 (no zoo
  checkpoint) the analogous topological order is given. Check shapes when converting.
  """
  block, counts = DEPTH_CONFIG[depth]
  names = ['conv1_conv', 'conv1_bn']
  for stage, count in enumerate(counts):
    for b in range(count):
      p = f'conv{stage + 2}_block{b + 1}'
      projection = (b == 0) and (block == 'bottleneck' or stage > 0)
      if block == 'bottleneck':
        if projection:
          names += [f'{p}_1_conv', f'{p}_1_bn', f'{p}_2_conv', f'{p}_2_bn',
                    f'{p}_0_conv', f'{p}_3_conv', f'{p}_0_bn', f'{p}_3_bn']
        else:
          names += [f'{p}_{i}_{k}' for i in (1, 2, 3) for k in ('conv', 'bn')]
      else:
        if projection:
          names += [f'{p}_1_conv', f'{p}_1_bn', f'{p}_0_conv', f'{p}_2_conv',
                    f'{p}_0_bn', f'{p}_2_bn']
        else:
          names += [f'{p}_{i}_{k}' for i in (1, 2) for k in ('conv', 'bn')]
  return names


def _pad(x: jnp.ndarray, p: int) -> jnp.ndarray:
  """Symmetric zero padding of H and W (Keras ZeroPadding2D)."""
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


class ResNetV1(nn.Module):
  """Keras-application ResNet v1 without top; returns [C2, C3, C4, C5] (strides 4..32).

  Attributes:
    depth: 18, 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
    width_multiplier: scales every channel count (see `scaled_channels`).
    dtype: compute dtype; params and BN statistics stay float32.
    bn_momentum: Keras-semantics BN momentum.
  """
  depth: int = 50
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM

  def _conv_bn(self, x, features: int, kernel: int, stride: int, padding, name: str,
               train: bool) -> jnp.ndarray:
    """Keras' `{name}_conv` (with bias) and `{name}_bn`."""
    conv = layers.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                       use_bias=True, dtype=self.dtype, param_dtype=jnp.float32,
                       name=f'{name}_conv')
    bn = layers.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                          epsilon=BACKBONE_BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                          use_fast_variance=False, name=f'{name}_bn')
    return layers.conv_then_batch_norm(conv, bn, x, train)

  def _bottleneck(self, x, filters: int, stride: int, projection: bool, name: str, train: bool):
    out_ch = scaled_channels(4 * filters, self.width_multiplier)
    mid_ch = scaled_channels(filters, self.width_multiplier)
    if projection:
      shortcut = self._conv_bn(x, out_ch, 1, stride, 'VALID', f'{name}_0', train)
    else:
      shortcut = x
    y = nn.relu(self._conv_bn(x, mid_ch, 1, stride, 'VALID', f'{name}_1', train))
    y = nn.relu(self._conv_bn(y, mid_ch, 3, 1, 'SAME', f'{name}_2', train))
    y = self._conv_bn(y, out_ch, 1, 1, 'VALID', f'{name}_3', train)
    return layers.block_output(nn.relu(shortcut + y))

  def _basic(self, x, filters: int, stride: int, projection: bool, name: str, train: bool):
    out_ch = scaled_channels(filters, self.width_multiplier)
    if projection:
      shortcut = self._conv_bn(x, out_ch, 1, stride, 'VALID', f'{name}_0', train)
    else:
      shortcut = x
    if stride == 1:
      y = self._conv_bn(x, out_ch, 3, 1, 'SAME', f'{name}_1', train)
    else:
      y = self._conv_bn(_pad(x, 1), out_ch, 3, stride, 'VALID', f'{name}_1', train)
    y = nn.relu(y)
    y = self._conv_bn(y, out_ch, 3, 1, 'SAME', f'{name}_2', train)
    return layers.block_output(nn.relu(shortcut + y))

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> List[jnp.ndarray]:
    if self.depth not in DEPTH_CONFIG:
      raise ValueError(f'Unsupported ResNet v1 depth {self.depth}; '
                       f'choose from {sorted(DEPTH_CONFIG)}.')
    block, counts = DEPTH_CONFIG[self.depth]
    x = jnp.asarray(x, self.dtype)
    # Stem.
    x = nn.relu(self._conv_bn(_pad(x, 3), scaled_channels(64, self.width_multiplier), 7, 2,
                              'VALID', 'conv1', train))
    # ReLU output >= 0, so zero padding before the max pool equals Keras' ZeroPadding2D + pool.
    x = layers.max_pool(_pad(x, 1), (3, 3), (2, 2))
    taps = []
    for stage, (filters, count) in enumerate(zip(STAGE_FILTERS, counts)):
      for b in range(count):
        stride = 2 if (b == 0 and stage > 0) else 1
        name = f'conv{stage + 2}_block{b + 1}'
        if block == 'bottleneck':
          # Keras stack1: the first block of every stage has a conv shortcut (even conv2).
          x = self._bottleneck(x, filters, stride, b == 0, name, train)
        else:
          projection = stride != 1 or x.shape[-1] != scaled_channels(filters,
                                                                     self.width_multiplier)
          x = self._basic(x, filters, stride, projection, name, train)
      taps.append(x)  # conv{stage+2}_block{count}_out
    return taps


class ResNetV1FPN(nn.Module):
  """ResNet v1 + the OD API CenterNet FPN; returns a one-element list [64-ch stride-4 map].

  Parameters live under `resnet/` (the Keras `_base_model`) and `fpn_*` (the
  `_feature_extractor_model` layers, see `FPN_CHECKPOINT_ORDER`).
  """
  depth: int = 50
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM
  fpn_bn_momentum: float = BN_MOMENTUM

  def _conv(self, features: int, kernel: int, name: str) -> layers.Conv:
    return layers.Conv(scaled_channels(features, self.width_multiplier), (kernel, kernel),
                       padding='SAME', use_bias=True, dtype=self.dtype, param_dtype=jnp.float32,
                       name=name)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> List[jnp.ndarray]:
    if x.shape[1] % 32 or x.shape[2] % 32:
      raise ValueError(f'ResNet v1 FPN needs H and W divisible by 32, got {x.shape[1:3]}.')
    c2, c3, c4, c5 = ResNetV1(depth=self.depth, width_multiplier=self.width_multiplier,
                              dtype=self.dtype, bn_momentum=self.bn_momentum,
                              name='resnet')(x, train)
    taps = {2: c2, 3: c3, 4: c4}
    t = self._conv(FPN_TOP_CHANNELS, 1, 'fpn_top_conv')(c5)
    for level, lateral_ch, out_ch in FPN_LEVELS:
      lateral = self._conv(lateral_ch, 1, f'fpn_c{level}_lateral_conv')(taps[level])
      t = layers.upsample_nearest_2x(t) + lateral
      bn = layers.BatchNorm(use_running_average=not train, momentum=self.fpn_bn_momentum,
                            epsilon=FPN_BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                            use_fast_variance=False, name=f'fpn_c{level}_bn')
      conv = self._conv(out_ch, 3, f'fpn_c{level}_conv')
      t = nn.relu(layers.conv_then_batch_norm(conv, bn, t, train))
    return [t]


def build(model_config, dtype: Any = jnp.float32) -> ResNetV1FPN:
  """Builds the backbone from the `model` config section (depth, width_multiplier)."""
  return ResNetV1FPN(depth=int(model_config.depth),
                     width_multiplier=float(model_config.width_multiplier),
                     dtype=dtype)


# ---------------------------------------------------------------------------------------------
# TF2 zoo checkpoints (converted by centernet_jax/tf_checkpoint.py).

# OD API `feature_extractor.type` -> this backbone's model config fields.
ZOO_FEATURE_EXTRACTORS = {
    'resnet_v1_18_fpn': {'depth': 18},
    'resnet_v1_34_fpn': {'depth': 34},
    'resnet_v1_50_fpn': {'depth': 50},
    'resnet_v1_101_fpn': {'depth': 101},
}


def tf_layer_map(model_config, params, *, classification: bool = False) -> tfp.LayerMapResult:
  """`backbone/resnet/<keras layer>` = `_base_model/layer_with_weights-N` in
  `keras_weighted_layer_order(depth)`; `backbone/fpn_*` = FPN layer K in `FPN_CHECKPOINT_ORDER`."""
  del params  # one layout per depth
  depth = int(model_config.depth)
  order = keras_weighted_layer_order(depth)
  base = tfp.CLASSIFICATION_ROOT if classification else tfp.BASE_MODEL
  layers = tfp.keras_layers(('backbone', 'resnet'), order, base)
  extra = {}
  if classification:
    extra = tfp.classifier_skip(len(order))
  else:
    for k, name in enumerate(FPN_CHECKPOINT_ORDER, start=1):
      layers[('backbone', name)] = (f'{tfp.FE_MODEL}/layer_with_weights-{k}',
                                    tfp.bn_or_conv(name))
  return tfp.LayerMapResult(layers, ('backbone', 'resnet'), extra)
