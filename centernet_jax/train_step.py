"""The training step: targets, losses, gradients and the optimizer update, as one pure
function of (state, batch) to be jitted over a mesh by the caller (train.py, benchmarks).

Only jax, flax and optax are needed here, so the step can be built and measured on a machine
that has no TensorFlow or orbax (benchmarks/device_suite.py).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from centernet_jax import colour_augment
from centernet_jax import losses
from centernet_jax import targets as targets_lib

TRAIN_KEYS = ('image', 'boxes', 'classes', 'box_mask', 'true_size', 'colour_params',
              'colour_windows')
KEYPOINT_TRAIN_KEYS = ('keypoints', 'keypoint_mask')


def train_keys(keypoint_spec=None) -> tuple[str, ...]:
  """The batch keys the train step reads (`TRAIN_KEYS`, plus the keypoints when enabled)."""
  return TRAIN_KEYS + (KEYPOINT_TRAIN_KEYS if keypoint_spec is not None else ())


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of optimizer updates done
  params: Any
  batch_stats: Any
  opt_state: Any


OUTPUT_STRIDE = 4  # every backbone's: input pixels per output map cell


def output_size(input_size: int) -> tuple[int, int]:
  """(height, width) of the output maps of a square `input_size` input."""
  return input_size // OUTPUT_STRIDE, input_size // OUTPUT_STRIDE


def create_train_state(rng: jax.Array, model, tx: optax.GradientTransformation,
                       input_size: int) -> TrainState:
  variables = model.init(rng, jnp.zeros((1, input_size, input_size, 3), jnp.float32),
                         train=False)
  return train_state_from_variables(variables, tx)


def train_state_from_variables(variables, tx: optax.GradientTransformation,
                               step: int = 0) -> TrainState:
  """A TrainState at `step` holding `variables` ({'params'[, 'batch_stats']}) and a fresh
  optimizer state."""
  params = variables['params']
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params))


def step_images(batch: dict[str, jax.Array], config: ml_collections.ConfigDict) -> jax.Array:
  """The images the train step feeds the model: float32 [B, S, S, 3] raw 0..255, the batch's
  uint8 canvas with the colour ops of `config.input.augmentations` applied
  (colour_augment.py). inspect_data shows training images through this function too."""
  return colour_augment.apply(
      jnp.asarray(batch['image'], jnp.float32), batch['colour_params'], batch['colour_windows'],
      colour_augment.device_ops(config.input.augmentations))


def step_targets(batch: dict[str, jax.Array], config: ml_collections.ConfigDict,
                 num_classes: int, keypoint_spec=None):
  """The train step's targets from a batch's padded boxes (and keypoints), on device:
  (`targets.build_targets` dict, `targets.build_keypoint_targets` dict or None).
  Everything that shows what the step learns from (image summaries, inspect_data) calls this."""
  out_size = output_size(config.input.size)
  targets = targets_lib.build_targets(
      batch['boxes'], batch['classes'], batch['box_mask'], output_size=out_size,
      num_classes=num_classes, min_overlap=config.targets.min_overlap,
      radius_variant=config.targets.radius_variant)
  kp_targets = None
  if keypoint_spec is not None:
    kp_targets = targets_lib.build_keypoint_targets(
        batch['boxes'], batch['classes'], batch['box_mask'], batch['keypoints'],
        batch['keypoint_mask'], out_size, keypoint_channel=keypoint_spec.channel,
        std_devs=keypoint_spec.std_devs, min_overlap=config.targets.min_overlap,
        radius_variant=config.targets.radius_variant,
        peak_radius=int(config.keypoints.offset_peak_radius))
  return targets, kp_targets


def make_train_step(model, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    config: ml_collections.ConfigDict, num_classes: int, keypoint_spec=None):
  """Returns the (state, batch) -> (state, metrics) step, to be jitted by the caller.

  The batch holds the global arrays of `train_keys(keypoint_spec)` (see docs/conventions.md).
  Targets are built here, on device, from the padded boxes (and keypoints: with a
  `keypoint_spec` the keypoint task's targets and losses are added).
  """
  input_size = config.input.size
  out_size = output_size(input_size)
  kp_config = config.keypoints

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    images = step_images(batch, config)
    targets, kp_targets = step_targets(batch, config, num_classes, keypoint_spec)
    valid = targets_lib.valid_output_mask(batch['true_size'], input_size, out_size)

    def loss_fn(params):
      outputs, new_vars = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
          mutable=['batch_stats'])
      total, components = losses.centernet_loss(outputs, targets, config.loss, valid)
      if kp_targets is not None:
        kp_total, kp_components = losses.keypoint_loss(
            outputs, kp_targets, task_name=keypoint_spec.task_name, keypoint_config=kp_config,
            focal_alpha=config.loss.focal_alpha, focal_beta=config.loss.focal_beta,
            valid_mask=valid)
        total = total + kp_total
        components = {**components, **kp_components}
      return total, (components, new_vars['batch_stats'])

    (loss, (components, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'loss': loss, 'grad_norm': safe_global_norm(grads),
               'learning_rate': schedule(state.step), 'num_boxes': targets['num_boxes'],
               **{f'loss/{k}': v for k, v in components.items()}}
    if kp_targets is not None:
      metrics['num_keypoints'] = kp_targets['num_keypoints']
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics

  return train_step


def safe_global_norm(tree) -> jax.Array:
  """`optax.global_norm` without float32 overflow: the squares are taken after dividing by
  the largest magnitude (randomly initialised deep nets with BatchNorm over tiny maps, e.g. the
  Hourglass-104 at input 128, reach gradients of ~1e21, whose square is inf in float32)."""
  leaves = [jnp.asarray(x, jnp.float32) for x in jax.tree.leaves(tree)]
  if not leaves:
    return jnp.float32(0.0)
  scale = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in leaves]))
  safe = jnp.where(scale > 0, scale, 1.0)
  total = sum(jnp.sum(jnp.square(x / safe)) for x in leaves)
  return jnp.where(scale > 0, safe * jnp.sqrt(total), 0.0)
