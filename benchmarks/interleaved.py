"""What the A/B benchmarks share: the zoo rows they build (config, model with random weights,
inputs), a training step's inputs and the interleaved timer."""

import os
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from centernet_jax import colour_augment
from centernet_jax import experiments
from centernet_jax import model_variables
from centernet_jax import models
from centernet_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The benchmarks' class count: COCO's 90 category ids, as the zoo's models have.
NUM_CLASSES = 90

# Short names of the zoo experiments (experiments/<name>.py) the benchmarks build at full size.
ROWS = {
    'r50v1fpn': 'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8',
    'r101v1fpn': 'centernet_resnet101_v1_fpn_512x512_coco17_tpu-8',
    'r50v2': 'centernet_resnet50_v2_512x512_coco17_tpu-8',
    'mnv2fpn': 'centernet_mobilenetv2fpn_512x512_coco17_od',
    'hg104': 'centernet_hg104_512x512_coco17_tpu-8',
}


def row_config(experiment: str):
  """The config of `experiments/<experiment>.py` (a value of `ROWS`, or `demo`)."""
  return experiments.load_config(os.path.join(REPO, 'experiments', experiment + '.py'))


def row_model(config) -> tuple[Any, dict, int]:
  """(model, variables, input size S in pixels) of `config` at `NUM_CLASSES` classes, with
  random He-normal weights (`model_variables.filled_variables`, no `model.init` compiled).
  The first computation of the process: set malloc up (`host_memory.set_up`) before."""
  size = int(config.input.size)
  model = models.build_model(config.model, NUM_CLASSES)
  return model, model_variables.filled_variables(model, size), size


def predict_inputs(size: int, batch: int, seed: int = 0) -> dict[str, jax.Array]:
  """The predict function's batch: `image` float32 `[batch, S, S, 3]` random whole numbers in
  0..255, `true_size` and `original_size` int32 `[batch, 2]` all S (pixels, y-first)."""
  images = np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3))
  return {'image': jnp.asarray(images, jnp.float32),
          'true_size': jnp.full((batch, 2), size, jnp.int32),
          'original_size': jnp.full((batch, 2), size, jnp.int32)}


def train_inputs(config, variables, tx, images: np.ndarray):
  """One training step's (state, batch) for a benchmark.

  Args:
    config: the row's config (`dataset.max_boxes` box slots, `input.augmentations`).
    variables: {'params', 'batch_stats'} the state starts from.
    tx: the optax transformation of the step (its state is initialised here).
    images: integer `[B, S, S, 3]` in 0..255, the input size S.
  Returns:
    (TrainState at step 0, batch dict: uint8 images, three fixed boxes per image (normalized,
     y-first) in the first of the max_boxes slots, classes 0, 17, 61, identity colour ops).
  """
  b, size = images.shape[0], images.shape[1]
  max_boxes = int(config.dataset.max_boxes)
  boxes = np.zeros((b, max_boxes, 4), np.float32)
  boxes[:, :3] = [[0.1, 0.1, 0.5, 0.4], [0.3, 0.5, 0.9, 0.9], [0.6, 0.2, 0.8, 0.35]]
  classes = np.zeros((b, max_boxes), np.int32)
  classes[:, :3] = [0, 17, 61]
  mask = np.zeros((b, max_boxes), np.float32)
  mask[:, :3] = 1.0
  batch = {'image': images.astype(np.uint8), 'boxes': boxes, 'classes': classes,
           'box_mask': mask, 'true_size': np.full((b, 2), size, np.int32),
           **colour_augment.identity_batch(config.input.augmentations, b)}
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                           batch_stats=variables['batch_stats'],
                           opt_state=tx.init(variables['params']))
  return state, batch


def time_in_turn(fns: Mapping[str, Callable[..., Any]], args: Sequence[Any],
                 repeats: int) -> dict[str, list[float]]:
  """ms of one call of each function, round after round in turn (A B A B), outputs waited for.

  Returns:
    {name: [ms of round 1, ..., ms of round `repeats`]}.
  """
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, f in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(f(*args))
      times[k].append(1000 * (time.perf_counter() - start))
  return times


def medians(times: Mapping[str, Sequence[float]]) -> dict[str, float]:
  return {k: statistics.median(v) for k, v in times.items()}


def every_round(ms: Sequence[float]) -> str:
  return ', '.join(f'{x:.0f}' for x in ms)
