r"""Target drawing: the `lax.scan` of per-box scatter-max steps against the all-at-once
Gaussians + one scatter-max, on whatever JAX backend is present, same process, interleaved.

  python benchmarks/targets.py [--repeats 20]

Shapes: the demo's (batch 16, 24 boxes, 32x32 output, 5 classes) and COCO's at 512 (batch 2
and 16, 100 padded boxes of which 10 real, 128x128 output, 90 classes). Prints ms per call
(median) and the ratio scan / scatter (> 1: scatter is faster), and checks both agree exactly.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from centernet_jax import targets  # pylint: disable=wrong-import-position

from machine import machine_kind  # pylint: disable=wrong-import-position

CASES = {  # name: (batch, max boxes, real boxes, output side, classes)
    'demo 128': (16, 24, 8, 32, 5),
    'COCO 512, batch 2': (2, 100, 10, 128, 90),
    'COCO 512, batch 16': (16, 100, 10, 128, 90),
}


def inputs(batch, m, real, side, c, seed=0):
  rng = np.random.default_rng(seed)
  iy = np.floor(rng.uniform(0, side, (batch, m))).astype(np.float32)
  ix = np.floor(rng.uniform(0, side, (batch, m))).astype(np.float32)
  sigma = rng.uniform(0.2, 6.0, (batch, m)).astype(np.float32)
  classes = rng.integers(0, c, (batch, m)).astype(np.int32)
  weights = np.zeros((batch, m), np.float32)
  weights[:, :real] = 1.0
  return tuple(map(jnp.asarray, (iy, ix, sigma, classes, weights)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args()
  print(f'Machine: {machine_kind()}; JAX backend {jax.default_backend()}.\n')
  print('| case | scan ms | scatter ms | scan / scatter |\n|---|---|---|---|')
  for name, (batch, m, real, side, c) in CASES.items():
    kw = dict(out_h=side, out_w=side, num_classes=c)
    fns = {'scan': jax.jit(lambda *a: targets._draw_heatmap(*a, **kw)),  # pylint: disable=protected-access
           'scatter': jax.jit(lambda *a: targets._draw_heatmap_scatter(*a, **kw))}  # pylint: disable=protected-access
    x = inputs(batch, m, real, side, c)
    outs = {k: jax.block_until_ready(f(*x)) for k, f in fns.items()}
    np.testing.assert_array_equal(outs['scan'], outs['scatter'])
    times = {k: [] for k in fns}
    for _ in range(args.repeats):
      for k, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(*x))
        times[k].append((time.perf_counter() - t0) * 1e3)
    a, b = statistics.median(times['scan']), statistics.median(times['scatter'])
    print(f'| {name} | {a:.2f} | {b:.2f} | {a / b:.2f}x |')


if __name__ == '__main__':
  main()
