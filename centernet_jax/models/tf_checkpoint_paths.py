"""The TF2 OD API checkpoint vocabulary that each backbone's layer map uses (the generic
conversion machinery is centernet_jax/tf_checkpoint.py, which reads these maps through the
`models.BACKBONES` registry).

A backbone file provides `tf_layer_map(model_config, params, *, classification=False)`
returning `LayerMapResult`: (layer map {Flax module path: (TF object path, layer kind)}, the
Flax path prefix that the 'classification' init type restores, extra skips {TF object path
prefix: why that checkpoint variable is deliberately not converted}). Layer kinds:
'conv', 'conv_transpose', 'depthwise', 'pointwise' (the halves of a Keras SeparableConv2D),
'bn'. Object paths (research note tf_od_api_centernet.md, section 6):
  * Keras-application backbones: `BASE_MODEL/layer_with_weights-N`, the N-th layer owning
    weights in `model.layers` order (`CLASSIFICATION_ROOT/layer_with_weights-N` in an ImageNet
    'classification' checkpoint);
  * the FPN / upsampling layers: `FE_MODEL/layer_with_weights-K` (K = 0 is the nested
    backbone itself, so the new layers start at 1).
"""

from typing import Dict, NamedTuple, Sequence, Tuple

FEATURE_EXTRACTOR = 'model/_feature_extractor'
BASE_MODEL = 'model/_feature_extractor/_base_model'
FE_MODEL = 'model/_feature_extractor/_feature_extractor_model'
CLASSIFICATION_ROOT = 'feature_extractor'

FlaxPath = Tuple[str, ...]
LayerMap = Dict[FlaxPath, Tuple[str, str]]


class LayerMapResult(NamedTuple):
  layers: LayerMap
  classification_scope: FlaxPath  # the Flax prefix a 'classification' checkpoint fills
  extra_skips: Dict[str, str]  # TF object path prefix -> why it is not converted


class CheckpointMismatchError(ValueError):
  """The checkpoint and the model disagree (unused variable, unfilled parameter, shape)."""


def keras_layers(flax_prefix: tuple[str, ...], order: Sequence[str], base: str) -> LayerMap:
  """`flax_prefix + (name,)` -> (`<base>/layer_with_weights-N`, kind) for the Keras model whose
  weighted layers are `order` (checkpoints number them in that order; docs/odapi_reference.md,
  section 3.4)."""
  return {flax_prefix + (name,): (f'{base}/layer_with_weights-{n}', bn_or_conv(name))
          for n, name in enumerate(order)}


def bn_or_conv(keras_layer_name: str) -> str:
  """'bn' for a Keras BatchNormalization layer name (`*_bn`, `*/bn`), else 'conv'."""
  return 'bn' if keras_layer_name.endswith('_bn') or keras_layer_name.endswith('/bn') else 'conv'


def classifier_skip(num_backbone_layers: int) -> Dict[str, str]:
  """The ImageNet classifier (one Dense layer after the backbone's weighted layers) of a
  Keras-application 'classification' checkpoint: a documented skip."""
  return {f'{CLASSIFICATION_ROOT}/layer_with_weights-{num_backbone_layers}':
          'the ImageNet classifier (predictions) of the classification checkpoint'}
