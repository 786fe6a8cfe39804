"""Helpers shared by the tests: model checks (tests/test_models*.py), the environment of
the processes tests start, and object-center logit maps that exercise each stage of the
decoder's top-k. Tiny run configs and data sets are tests/tiny.py."""

import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from centernet_jax import model_variables

DATA = pathlib.Path(__file__).parent / 'data'


def subprocess_env(**overrides: str) -> dict[str, str]:
  """The environment for a process a test starts: this one's (its compilation cache included),
  on CPU, with its XLA flags less the simulated device count: the child sees one device, as a
  user's process does, unless `overrides` say otherwise."""
  flags = re.sub(r'--xla_force_host_platform_device_count=\S+', '', os.environ.get('XLA_FLAGS', ''))
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': ' '.join(flags.split()), **overrides}


def count(tree) -> int:
  """Number of scalar values in a tree of arrays or ShapeDtypeStructs."""
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def shapes(module, size: int):
  """`module.init`'s variables as ShapeDtypeStructs for one `size` x `size` RGB input."""
  return jax.eval_shape(
      lambda: module.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))


def filled(abstract, seed: int = 0):
  """Concrete variables for `abstract` without compiling `init` (slow on CPU for the full-size
  backbones): normal kernels of variance 1 / fan-in, BN scale / variance 1, the rest 0."""
  return model_variables.fill_variables(abstract, seed=seed, kernel_gain=1.0)


def reference_shapes(name: str) -> list[tuple[str, tuple[int, ...]]]:
  """(variable path, shape) rows of an OD API checkpoint listing tests/data/<name> (lines
  'path [d0,d1,...]'; '#' comments)."""
  rows = []
  for line in (DATA / name).read_text().splitlines():
    if line and not line.startswith('#'):
      path, shape = line.split(' ')
      rows.append((path, tuple(int(d) for d in shape.strip('[]').split(',') if d)))
  return rows


def reference_layers(name: str) -> dict[tuple[str, int], dict[str, tuple[int, ...]]]:
  """{(sub-model, N): {variable: shape}} of a listing of `<sub-model>/layer_with_weights-N/
  <variable>` rows (a Keras-application backbone and its FPN / upsampling layers)."""
  layers = {}
  for path, shape in reference_shapes(name):
    m = re.fullmatch(r'(\w+)/layer_with_weights-(\d+)/(\w+)', path)
    if m is None:
      raise ValueError(f'tests/data/{name}: row {path!r} is not '
                       '<sub-model>/layer_with_weights-N/<variable>')
    layers.setdefault((m.group(1), int(m.group(2))), {})[m.group(3)] = shape
  return layers


def broad_maxima(b: int, h: int, w: int, c: int, seed: int) -> np.ndarray:
  """Smooth float32 logits `[b, h, w, c]`, one broad maximum per class: the highest scores
  are its slopes (`decoder.top_k_peaks` falls back to the whole map)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  logits = np.full((b, h, w, c), -6.0, np.float32)
  for i in range(b):
    for j in range(c):
      cy, cx = rng.uniform(0, h), rng.uniform(0, w)
      logits[i, :, :, j] += 10 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 12.0 ** 2))
  return logits


def smooth_noise(b: int, h: int, w: int, c: int, seed: int = 7) -> np.ndarray:
  """Smooth float64 noise `[b, h, w, c]` (three 3x3 box blurs): the top scores are mostly
  slopes of many small maxima."""
  logits = np.random.default_rng(seed).normal(0.0, 1.0, (b, h, w, c))
  for _ in range(3):
    padded = np.pad(logits, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
    logits = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
  return logits
