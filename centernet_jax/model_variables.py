"""A model's variables and train state without a checkpoint: abstract (shapes only), random
(numpy-drawn, skipping the compile of `model.init`); a TrainState around given variables is
`train_step.train_state_from_variables`.

Imports neither orbax nor TensorFlow, so benchmarks/device_suite.py can use it; restoring a
run's variables from its checkpoints is run_files.py.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from centernet_jax.train_step import TrainState, create_train_state


def _zero_images(input_size: int) -> jnp.ndarray:
  return jnp.zeros((1, input_size, input_size, 3), jnp.float32)


def abstract_variables(model, input_size: int) -> dict[str, Any]:
  """{'params', 'batch_stats'} as ShapeDtypeStructs (no computation; parameter shapes do not
  depend on `input_size` beyond the backbone's size checks)."""
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), _zero_images(input_size), train=False))
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def abstract_train_state(model, tx: optax.GradientTransformation, input_size: int) -> TrainState:
  """The TrainState as ShapeDtypeStructs (`create_train_state` under `jax.eval_shape`)."""
  return jax.eval_shape(lambda rng: create_train_state(rng, model, tx, input_size),
                        jax.random.key(0))


def fill_variables(abstract: Any, *, seed: int = 0, kernel_gain: float = 2.0,
                   heatmap_bias_init: float | None = None) -> Any:
  """Concrete values for a tree of ShapeDtypeStructs, drawn with numpy: normal kernels with
  variance `kernel_gain / fan_in` (fan-in: every kernel axis but the last), BN scale and
  moving variance 1, other leaves 0; with `heatmap_bias_init`, the centre heatmap head's last
  bias holds it (as the model's own init)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    names = [str(getattr(k, 'key', k)) for k in path]
    name = names[-1]
    if name == 'kernel':
      fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
      value = rng.normal(0.0, np.sqrt(kernel_gain / fan_in), leaf.shape)
    elif name in ('scale', 'var'):
      value = np.ones(leaf.shape)
    elif (heatmap_bias_init is not None and name == 'bias' and 'conv_1x1' in names
          and any('object_center' in n for n in names)):
      value = np.full(leaf.shape, float(heatmap_bias_init))
    else:
      value = np.zeros(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def filled_variables(model, input_size: int, seed: int = 0, kernel_gain: float = 2.0
                     ) -> dict[str, Any]:
  """The model's variables without compiling `model.init` (minutes of XLA:CPU compile for the
  full-size backbones, nearly all of it random number generation): `abstract_variables` filled
  by `fill_variables` (He-normal kernels by default, the model's heatmap bias)."""
  return fill_variables(abstract_variables(model, input_size), seed=seed,
                        kernel_gain=kernel_gain, heatmap_bias_init=model.heatmap_bias_init)
