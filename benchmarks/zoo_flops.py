r"""GFLOP per image of every TF2-zoo CenterNet row, from XLA's cost analysis (no compile).

  python benchmarks/zoo_flops.py [--rows ROW,ROW|all] [--batch 2] [--out table.md]

For each row (experiments/<archive name>.py, at its full input size) it lowers, without
compiling or running anything, the two programs that `benchmarks/zoo_speed.py` times:
  * inference: the jitted network + decoder (`predict.make_predict_fn`) at batch 1;
  * training: the jitted `train_step.make_train_step` (targets, loss, gradients, Adam update)
    at `--batch` images with 10 boxes each, divided by the batch;
and prints XLA's FLOP count of each (`Lowered.cost_analysis`: a multiply-add counts 2) in
GFLOP per image. These are the numerators of MFU (`train/mfu` in every run's log).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=g-import-not-at-top,wrong-import-position
import zoo_speed  # the zoo rows, their configs and the dummy training batch
from centernet_jax import models
from centernet_jax import optimizer as optimizer_lib
from centernet_jax import predict as predict_lib
from centernet_jax import train_step


def _gflop(lowered) -> float:
  analysis = lowered.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0)) / 1e9


def row_gflop(row: str, batch: int) -> dict:
  """{'size', 'params', 'infer', 'train'} of one zoo row: GFLOP per image (params in M)."""
  config = zoo_speed.load_config(row)
  size = int(config.input.size)
  num_classes = int(config.model.num_classes) or 90
  spec = zoo_speed._keypoint_spec(config)  # pylint: disable=protected-access
  kp_args = () if spec is None else (spec,)
  model = models.build_model(config.model, num_classes, *kp_args)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3), jnp.float32), train=False))
  kw = {} if spec is None else {
      'keypoint_params': predict_lib.keypoint_decode_params(spec, config)}
  predict = predict_lib.make_predict_fn(
      model, input_size=size, max_detections=zoo_speed.MAX_DETECTIONS, **kw)
  sizes = jax.ShapeDtypeStruct((1, 2), jnp.float32)
  inputs = {'image': jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
            'true_size': sizes, 'original_size': sizes}
  infer = _gflop(predict.lower(variables, inputs))
  tx, schedule = optimizer_lib.make_optimizer(config)
  state = jax.eval_shape(lambda v: train_step.TrainState(
      step=jnp.zeros((), jnp.int32), params=v['params'],
      batch_stats=v.get('batch_stats', {}), opt_state=tx.init(v['params'])), variables)
  data = zoo_speed._train_batch(config, batch, size, num_classes, spec)  # pylint: disable=protected-access
  data = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), data)
  step = jax.jit(train_step.make_train_step(model, tx, schedule, config, num_classes, *kp_args))
  train = _gflop(step.lower(state, data)) / batch
  params = sum(x.size for x in jax.tree.leaves(variables['params'])) / 1e6
  return {'size': size, 'params': params, 'infer': infer, 'train': train}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', default='all')
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  rows = [r for r, _, _ in zoo_speed.ZOO_ROWS] if args.rows == 'all' else args.rows.split(',')
  lines = [f'GFLOP per image, XLA cost analysis of the lowered programs (training at batch '
           f'{args.batch}, 10 boxes per image)', '',
           '| row | input | params (M) | inference GFLOP/img | training GFLOP/img |',
           '|---|---|---|---|---|']
  for row in rows:
    start = time.time()
    r = row_gflop(row, args.batch)
    lines.append(f"| {row} | {r['size']} | {r['params']:.1f} | {r['infer']:.1f} | "
                 f"{r['train']:.1f} |")
    print(lines[-1], f'({time.time() - start:.0f} s)', flush=True)
  table = '\n'.join(lines) + '\n'
  print(table)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(table)


if __name__ == '__main__':
  main()
