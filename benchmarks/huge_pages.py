r"""Our training step and predict function with and without transparent huge pages for
XLA:CPU's buffers, side by side in one run.

  python benchmarks/huge_pages.py [--rows r50v1fpn,mnv2fpn] [--measures train,predict] \
      [--repeats 5]

Per row, two long-lived worker processes of this script, started with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 and =0 (glibc's default: 4 KiB pages unless the
kernel's THP mode is `always`). XLA:CPU mallocs a program's buffers at every execution (2.4 GB
of temporaries for the ResNet50 V1 FPN 512 step at batch 2). Each builds the zoo row at full size with
random He-normal weights and 90 classes and compiles:
  train    the jitted `train.make_train_step` at batch 2 (100 box slots, 3 boxes per image,
           identity colour ops), state donated, the loss fetched
  predict  the jitted `predict.make_predict_fn` (network + decoder) at batch 1, detections
           fetched
then answers one timed request at a time, the two workers in turn (A B A B), with the
0.5 s pause of benchmarks/vs_odapi.py before each. Medians and every round, ms per call.
Both workers leave glibc's other malloc settings at their defaults: unlike `main`, they do not
call `host_memory.keep_freed_memory` (this benchmark predates it, and its tunable is about the
fresh mappings that setting removes; docs/benchmarks.md, "The step's host memory").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from machine import machine_kind
from vs_odapi import SETTLE_S, Worker, answer_requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import interleaved  # pylint: disable=wrong-import-position

# glibc backs its large allocations with transparent huge pages only with this tunable (where
# the kernel's THP mode is `madvise`), read when a process starts.
SETTINGS = {'huge pages': 'glibc.malloc.hugetlb=1', '4 KiB pages': 'glibc.malloc.hugetlb=0'}


def worker(row: str, measures: list[str]) -> None:
  """Builds the row, compiles `measures`, then serves timed requests on stdin."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from centernet_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from centernet_jax import performance, predict, train  # pylint: disable=g-import-not-at-top

  config = interleaved.row_config(interleaved.ROWS[row])
  config.dataset.max_boxes = 100
  model, variables, size = interleaved.row_model(config)
  b = 2
  rng = np.random.default_rng(0)
  runs = {}
  if 'train' in measures:
    tx, schedule = optimizer_lib.make_optimizer(config)
    step = jax.jit(train.make_train_step(model, tx, schedule, config, interleaved.NUM_CLASSES),
                   donate_argnums=(0,), compiler_options=performance.train_compiler_options())
    state, batch = interleaved.train_inputs(
        config, jax.tree.map(jnp.copy, variables), tx,  # the step donates the copy
        rng.integers(0, 256, (b, size, size, 3)))
    holder = {'state': state}

    def train_once():
      holder['state'], metrics = step(holder['state'], batch)
      return jax.device_get(metrics['loss'])
    runs['train'] = train_once
  if 'predict' in measures:
    predict_fn = predict.make_predict_fn(model, input_size=size, max_detections=100)
    one = {'image': rng.integers(0, 256, (1, size, size, 3)).astype(np.float32),
           'true_size': np.full((1, 2), size, np.int32),
           'original_size': np.full((1, 2), size, np.int32)}
    runs['predict'] = lambda: jax.device_get(predict_fn(variables, one))
  for m in measures:
    runs[m]()
  print(json.dumps({'ready': True, 'tunables': os.environ.get('GLIBC_TUNABLES')}), flush=True)
  answer_requests(runs)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', default='r50v1fpn,mnv2fpn')
  parser.add_argument('--measures', default='train,predict')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--out_dir', default=os.path.join(REPO, 'runs', 'huge_pages'))
  parser.add_argument('--worker', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  measures = [m for m in args.measures.split(',') if m]
  if args.worker:
    worker(args.worker, measures)
    return 0
  unknown = sorted(set(measures) - {'train', 'predict'})
  if unknown:
    parser.error(f'--measures: unknown {unknown}')
  rows = [r for r in args.rows.split(',') if r]
  os.makedirs(args.out_dir, exist_ok=True)
  kind = machine_kind()
  lines = []
  for row in rows:
    workers = {}
    try:
      for name, tunable in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
        env['GLIBC_TUNABLES'] = tunable
        print(f'[{row}] starting the worker with {tunable} ...', flush=True)
        workers[name] = Worker(name, [sys.executable, os.path.abspath(__file__), '--worker', row,
                                      '--measures', ','.join(measures)],
                               os.path.join(args.out_dir, f'{row}.{tunable}.log'), 1800.0,
                               env=env)
      times = {m: {name: [] for name in workers} for m in measures}
      for r in range(args.repeats):
        for m in measures:
          for name, w in workers.items():
            time.sleep(SETTLE_S)
            times[m][name].append(w.measure(m))
        print(f'[{row}] round {r + 1}/{args.repeats}: ' + ', '.join(
            f'{m} {name} {times[m][name][-1]:.0f} ms' for m in measures for name in workers),
              flush=True)
    finally:
      for w in workers.values():
        w.close()
    for m in measures:
      a, b = (times[m][name] for name in SETTINGS)
      lines.append(f'| {row} | {m} | {statistics.median(a):.0f} | {statistics.median(b):.0f} | '
                   f'**{statistics.median(b) / statistics.median(a):.2f}x** | '
                   f'{interleaved.every_round(a)} | {interleaved.every_round(b)} |')
  print(f'\nMachine: {kind}; {args.repeats} interleaved rounds; train = batch 2, predict = '
        f'batch 1; `python benchmarks/huge_pages.py --rows {",".join(rows)} --measures '
        f'{",".join(measures)} --repeats {args.repeats}`\n')
  print('| row | measure | huge pages ms | 4 KiB pages ms | 4 KiB / huge | huge pages, every '
        'round | 4 KiB, every round |\n|---|---|---|---|---|---|---|')
  print('\n'.join(lines))
  return 0


if __name__ == '__main__':
  sys.exit(main())
