r"""The predict function (network + decoder) compiled with JAX's default XLA options against
`performance.CPU_COMPILER_OPTIONS` (YNNPACK's dot fusions off), same process, interleaved.

  python benchmarks/compiler_options.py [--rows r50v1fpn,mnv2fpn] [--batches 1,8] [--repeats 5]

Each row is its zoo experiment at full size (90 classes, 100 detections, random He-normal
weights without compiling `model.init`), on a batch of random 0-255 images at the input size.
Both programs are compiled first; then each round times one call of each (A B A B) and the
table gives the medians, every round, and default / ours (> 1: the options are faster).
Detections must agree to 1e-3 (the options change kernels, so round-off, not results).
"""

import argparse
import os
import sys

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=wrong-import-position
from centernet_jax import performance
from centernet_jax import predict
from interleaved import (ROWS, every_round, medians, predict_inputs, row_config, row_model,
                         time_in_turn)
from machine import machine_kind


def programs(row: str, batch: int):
  """(variables, batch dict, {name: compiled predict function}) of one row."""
  model, variables, size = row_model(row_config(ROWS[row]))
  inputs = predict_inputs(size, batch)
  fn = predict.make_predict_fn(model, input_size=size, max_detections=100, top_level=False)
  lowered = fn.lower(variables, inputs)
  compiled = {'default': lowered.compile(),
              'CPU_COMPILER_OPTIONS': lowered.compile(
                  compiler_options=dict(performance.CPU_COMPILER_OPTIONS))}
  return variables, inputs, compiled


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', default='r50v1fpn,mnv2fpn')
  parser.add_argument('--batches', default='1,8')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  print(f'Machine: {machine_kind()}; JAX {jax.__version__} on {jax.default_backend()}; '
        f'{args.repeats} interleaved rounds; options: {performance.CPU_COMPILER_OPTIONS}\n')
  print('| row | batch | default ms | options ms | default / options | default all (ms) '
        '| options all (ms) |')
  print('|---|---|---|---|---|---|---|')
  for row in args.rows.split(','):
    for batch in (int(b) for b in args.batches.split(',')):
      variables, inputs, compiled = programs(row, batch)
      outs = {k: jax.device_get(f(variables, inputs)) for k, f in compiled.items()}
      a, b = outs.values()
      for key in ('boxes', 'scores'):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-3, err_msg=key)
      times = time_in_turn(compiled, (variables, inputs), args.repeats)
      d, o = medians(times).values()
      print(f'| {row} | {batch} | {d:.1f} | {o:.1f} | {d / o:.2f}x | '
            f'{every_round(times["default"])} | '
            f'{every_round(times["CPU_COMPILER_OPTIONS"])} |', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
