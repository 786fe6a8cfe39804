"""ResNet v2 (Keras-application flavour) with the TF2 OD API CenterNet upsampling stack.

This is the `resnet_v2_{50,101}` CenterNet feature extractor of the TF2 Object Detection API
(zoo rows: CenterNet Resnet50 V2 512x512, boxes and keypoints).

Backbone (`tf.keras.applications.ResNet50V2/101V2`, pre-activation):
  * stem: zero pad 3, 7x7/2 conv with bias, zero pad 1, 3x3/2 max pool (no BN/ReLU: v2);
  * block (`convS_blockB`): preact BN -> ReLU; main path 1x1 (no bias) -> BN -> ReLU ->
    zero pad 1 + 'VALID' 3x3 with the block's stride (no bias) -> BN -> ReLU -> 1x1 (x4, bias);
    shortcut: a 1x1 conv with bias on the pre-activation (`_0_conv`, first block of every
    stage), else the input itself, subsampled by a 1x1/2 max pool when strided;
  * the stride sits on the LAST block of stages conv2..conv4 (conv5 has none), so the
    output (`conv5_block3_out`) has stride 32;
  * backbone BN epsilon 1.001e-5, Keras momentum 0.99.
  The extractor taps `conv5_block3_out` (the residual sum) BEFORE the application's `post_bn`
  / `post_relu`, so `post_bn` is not used. Its (unused) variables are in the zoo checkpoint
  and in the research parameter table; set `create_post_bn=True` to create them here too
  (they never change and do not affect the output).

Upsampling (3 stages, F = 256, 128, 64):
  Conv3x3(F, bias, 'SAME') -> BN -> ReLU -> Conv2DTranspose(F, 3x3, stride 2, 'SAME', bias)
  -> BN -> ReLU; BN epsilon 1e-3, momentum 0.99 (Keras defaults). Output: 64 channels at
  stride 4, one feature output.

Conv2DTranspose: `layers.ConvTranspose2D`, which computes what Flax's
`nn.ConvTranspose(transpose_kernel=True, padding='SAME')` computes (`lax.conv_transpose(...,
'SAME', transpose_kernel=True)` on a `(kh, kw, out, in)` kernel: exactly the Keras layout and
semantics, research note 1.3), so TF kernels copy unchanged; its own convolution call gives
it the CPU weight gradient of `layers.conv_general_dilated`.

Module names follow the Keras layer names (`conv1_conv`, `conv2_block1_preact_bn`, ...), so the
TF checkpoint converter maps `_base_model/layer_with_weights-N` through
`keras_weighted_layer_order` and `_feature_extractor_model/layer_with_weights-K` (K = 1..12)
through `UPSAMPLE_CHECKPOINT_ORDER`. Kernels are Glorot-uniform (Keras default).

Input: raw 0..255 RGB, normalized by `normalize_input` (x / 127.5 - 1) before the backbone.
"""

from typing import Any, Dict, List, Tuple

import flax.linen as nn
import jax.numpy as jnp

from centernet_jax.models import layers
from centernet_jax.models import tf_checkpoint_paths as tfp

BACKBONE_BN_EPSILON = 1.001e-5
UPSAMPLE_BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Keras semantics: moving = m * moving + (1 - m) * batch (same as Flax).

# depth -> blocks per stage conv2..conv5.
DEPTH_CONFIG: Dict[int, Tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STAGE_FILTERS = (64, 128, 256, 512)  # block outputs are 4x these.
STAGE_LAST_STRIDE = (2, 2, 2, 1)  # Keras stack2 `stride1`: on the last block of the stage.

UPSAMPLE_FILTERS = (256, 128, 64)

# Upsampling module names in `_feature_extractor_model/layer_with_weights-K` order, K = 1..12.
UPSAMPLE_CHECKPOINT_ORDER = tuple(
    f'upsample{i}_{part}' for i in (1, 2, 3)
    for part in ('conv', 'conv_bn', 'deconv', 'deconv_bn'))


def normalize_input(images: jnp.ndarray) -> jnp.ndarray:
  """Keras resnet_v2 preprocess_input ('tf' mode) on raw 0..255 RGB: x / 127.5 - 1."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def scaled_channels(channels: int, width_multiplier: float) -> int:
  """`channels * width_multiplier`, rounded, at least 8; exactly `channels` at 1.0."""
  if width_multiplier == 1.0:
    return channels
  return max(8, int(round(channels * width_multiplier)))


def keras_weighted_layer_order(depth: int, include_post_bn: bool = True) -> List[str]:
  """Backbone layer names in Keras `[l for l in model.layers if l.weights]` order.

  This is the checkpoint's `_base_model/layer_with_weights-N` order (ResNet50V2: N = 0..101,
  101 = `post_bn`). In a stage's first block the projection `_0_conv` comes after `_2_bn`,
  right before `_3_conv`.
  """
  names = ['conv1_conv']
  for stage, count in enumerate(DEPTH_CONFIG[depth]):
    for b in range(count):
      p = f'conv{stage + 2}_block{b + 1}'
      names += [f'{p}_preact_bn', f'{p}_1_conv', f'{p}_1_bn', f'{p}_2_conv', f'{p}_2_bn']
      if b == 0:
        names.append(f'{p}_0_conv')
      names.append(f'{p}_3_conv')
  if include_post_bn:
    names.append('post_bn')
  return names


def _pad(x: jnp.ndarray, p: int) -> jnp.ndarray:
  """Symmetric zero padding of H and W (Keras ZeroPadding2D)."""
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


class ResNetV2(nn.Module):
  """Keras-application ResNet v2 without top; returns `conv5_block{last}_out` (stride 32).

  Attributes:
    depth: 50, 101 or 152.
    width_multiplier: scales every channel count (see `scaled_channels`).
    dtype: compute dtype; params and BN statistics stay float32.
    bn_momentum: Keras-semantics BN momentum.
    create_post_bn: also create the (unused) `post_bn` variables of the Keras application.
  """
  depth: int = 50
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM
  create_post_bn: bool = False

  def _conv(self, features: int, kernel: int, stride: int, use_bias: bool, name: str,
            padding: Any = 'VALID'):
    return nn.Conv(scaled_channels(features, self.width_multiplier), (kernel, kernel),
                   strides=(stride, stride), padding=padding, use_bias=use_bias,
                   kernel_init=nn.initializers.glorot_uniform(), dtype=self.dtype,
                   param_dtype=jnp.float32, conv_general_dilated=layers.conv_general_dilated,
                   name=name)

  def _bn(self, train: bool, name: str) -> layers.BatchNorm:
    return layers.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                            epsilon=BACKBONE_BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                            use_fast_variance=False, name=name)

  def _block(self, x, filters: int, stride: int, conv_shortcut: bool, name: str, train: bool):
    preact = nn.relu(self._bn(train, f'{name}_preact_bn')(x))
    if conv_shortcut:
      shortcut = self._conv(4 * filters, 1, stride, True, f'{name}_0_conv')(preact)
    elif stride > 1:
      shortcut = x[:, ::stride, ::stride, :]  # MaxPooling2D(1, strides=stride)
    else:
      shortcut = x
    y = self._conv(filters, 1, 1, False, f'{name}_1_conv')(preact)
    y = nn.relu(self._bn(train, f'{name}_1_bn')(y))
    # Keras' ZeroPadding2D(1) before a 'valid' convolution, as the convolution's own padding:
    # the same values, and at stride 1 the padding F(4x4, 3x3) takes (`layers.winograd_passes`).
    y = self._conv(filters, 3, stride, False, f'{name}_2_conv', padding=((1, 1), (1, 1)))(y)
    y = nn.relu(self._bn(train, f'{name}_2_bn')(y))
    y = self._conv(4 * filters, 1, 1, True, f'{name}_3_conv')(y)
    return shortcut + y

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.depth not in DEPTH_CONFIG:
      raise ValueError(f'Unsupported ResNet v2 depth {self.depth}; '
                       f'choose from {sorted(DEPTH_CONFIG)}.')
    x = jnp.asarray(x, self.dtype)
    x = self._conv(64, 7, 2, True, 'conv1_conv')(_pad(x, 3))
    # No ReLU before the pool in v2: the zero padding (not -inf) matters, as in Keras.
    x = layers.max_pool(_pad(x, 1), (3, 3), (2, 2))
    for stage, (filters, count) in enumerate(zip(STAGE_FILTERS, DEPTH_CONFIG[self.depth])):
      for b in range(count):
        stride = STAGE_LAST_STRIDE[stage] if b == count - 1 else 1
        x = self._block(x, filters, stride, b == 0, f'conv{stage + 2}_block{b + 1}', train)
    if self.create_post_bn:
      # Variables only (the zoo checkpoint has them); never updated, output unused.
      self._bn(False, 'post_bn')(x)
    return x


class ResNetV2Upsample(nn.Module):
  """ResNet v2 + 3 x (conv3x3 + BN + ReLU + deconv3x3/2 + BN + ReLU).

  Returns a one-element list [64-channel stride-4 map]. Parameters live under `resnet/` (the
  Keras `_base_model`) and `upsample*` (see `UPSAMPLE_CHECKPOINT_ORDER`).
  """
  depth: int = 50
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM
  upsample_bn_momentum: float = BN_MOMENTUM
  create_post_bn: bool = False

  def _bn(self, train: bool, name: str) -> layers.BatchNorm:
    return layers.BatchNorm(use_running_average=not train, momentum=self.upsample_bn_momentum,
                            epsilon=UPSAMPLE_BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                            use_fast_variance=False, name=name)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> List[jnp.ndarray]:
    if x.shape[1] % 32 or x.shape[2] % 32:
      raise ValueError(f'ResNet v2 needs H and W divisible by 32, got {x.shape[1:3]}.')
    x = ResNetV2(depth=self.depth, width_multiplier=self.width_multiplier, dtype=self.dtype,
                 bn_momentum=self.bn_momentum, create_post_bn=self.create_post_bn,
                 name='resnet')(x, train)
    glorot = nn.initializers.glorot_uniform()
    for i, filters in enumerate(UPSAMPLE_FILTERS, start=1):
      f = scaled_channels(filters, self.width_multiplier)
      conv = layers.Conv(f, (3, 3), padding='SAME', use_bias=True, kernel_init=glorot,
                         dtype=self.dtype, param_dtype=jnp.float32, name=f'upsample{i}_conv')
      x = nn.relu(layers.conv_then_batch_norm(conv, self._bn(train, f'upsample{i}_conv_bn'), x,
                                              train))
      # Keras Conv2DTranspose: kernel (kh, kw, out, in); see the module docstring.
      deconv = layers.ConvTranspose2D(f, (3, 3), (2, 2), use_bias=True, kernel_init=glorot,
                                      dtype=self.dtype, param_dtype=jnp.float32,
                                      name=f'upsample{i}_deconv')
      x = nn.relu(layers.conv_then_batch_norm(deconv, self._bn(train, f'upsample{i}_deconv_bn'),
                                              x, train))
    return [x]


def build(model_config, dtype: Any = jnp.float32) -> ResNetV2Upsample:
  """Builds the backbone from the `model` config section (depth, width_multiplier)."""
  return ResNetV2Upsample(depth=int(model_config.depth),
                          width_multiplier=float(model_config.width_multiplier),
                          dtype=dtype)


# ---------------------------------------------------------------------------------------------
# TF2 zoo checkpoints (converted by centernet_jax/tf_checkpoint.py).

# OD API `feature_extractor.type` -> this backbone's model config fields.
ZOO_FEATURE_EXTRACTORS = {
    'resnet_v2_50': {'depth': 50},
    'resnet_v2_101': {'depth': 101},
}


def tf_layer_map(model_config, params, *, classification: bool = False) -> tfp.LayerMapResult:
  """Keras ResNet v2 layers (`keras_weighted_layer_order`, `post_bn` included) + the OD API
  upsampling stack (conv, BN, deconv, BN) x 3 at K = 1..12 (`UPSAMPLE_CHECKPOINT_ORDER`).

  The Keras ResNet50V2 checkpoint holds `post_bn` (the extractor taps the residual sum before
  it); unless the Flax model creates it (`create_post_bn`), it is a documented skip.
  """
  depth = int(model_config.depth)  # as `build`
  order = keras_weighted_layer_order(depth, include_post_bn=True)
  base = tfp.CLASSIFICATION_ROOT if classification else tfp.BASE_MODEL
  layers = tfp.keras_layers(('backbone', 'resnet'), order, base)
  extra = {}
  if 'post_bn' not in params.get('backbone', {}).get('resnet', {}):
    extra[f'{base}/layer_with_weights-{order.index("post_bn")}'] = (
        'the unused post_bn of the Keras ResNet v2 (the extractor taps conv5_block3_out)')
  if classification:
    extra.update(tfp.classifier_skip(len(order)))
  else:
    for k, name in enumerate(UPSAMPLE_CHECKPOINT_ORDER, start=1):
      kind = 'bn' if name.endswith('_bn') else (
          'conv_transpose' if name.endswith('deconv') else 'conv')
      layers[('backbone', name)] = (f'{tfp.FE_MODEL}/layer_with_weights-{k}', kind)
  return tfp.LayerMapResult(layers, ('backbone', 'resnet'), extra)
