r"""The predict function on XLA:CPU: the whole batch in one pass vs the images one at a time.

  python benchmarks/predict_loop.py [--rows r50v1fpn,mnv2fpn] [--batch 8] [--repeats 5]

`predict.make_predict_fn` runs the images of a batch one at a time on CPU
(`predict.images_in_turn`, a `lax.map` inside the one jitted program). This times that against
`images_in_turn_on_cpu=False` (the batched network + decoder, as on GPU/TPU): each row's zoo
experiment at full size (90 classes, 100 detections, random weights), both compiled with the
predict function's compiler options, outputs checked equal, then timed round after round in
turn (A B A B); medians in ms per batch.
"""

import argparse
import os
import sys

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=wrong-import-position
from centernet_jax import predict
from interleaved import (ROWS, every_round, medians, predict_inputs, row_config, row_model,
                         time_in_turn)
from machine import machine_kind


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', default='r50v1fpn,mnv2fpn')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  print(f'Machine: {machine_kind()}; JAX {jax.__version__} on {jax.default_backend()}; batch '
        f'{args.batch}; {args.repeats} interleaved rounds\n')
  print('| row | batched ms | images in turn ms | batched / in turn | batched all (ms) '
        '| in turn all (ms) |')
  print('|---|---|---|---|---|---|')
  for row in args.rows.split(','):
    model, variables, size = row_model(row_config(ROWS[row]))
    inputs = predict_inputs(size, args.batch)
    fns = {name: predict.make_predict_fn(model, input_size=size, max_detections=100,
                                         images_in_turn_on_cpu=in_turn)
           for name, in_turn in (('batched', False), ('in turn', True))}
    outs = [jax.device_get(f(variables, inputs)) for f in fns.values()]
    for key in ('boxes', 'scores'):
      np.testing.assert_allclose(outs[0][key], outs[1][key], rtol=1e-4, atol=1e-4, err_msg=key)
    times = time_in_turn(fns, (variables, inputs), args.repeats)
    b, t = medians(times).values()
    print(f'| {row} | {b:.0f} | {t:.0f} | {b / t:.2f}x | {every_round(times["batched"])} | '
          f'{every_round(times["in turn"])} |', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
