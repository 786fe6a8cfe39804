r"""The predict function with its temporaries in kept heaps against one block mapped afresh at
every call (glibc's defaults, the code before), side by side in one run.

  python benchmarks/inference_heaps.py [--rows r50v1fpn,mnv2fpn] [--batches 1,8] [--repeats 7]

Per row, two long-lived worker processes of this script:
  one block    the predict function compiled with `performance.CPU_COMPILER_OPTIONS` less
               `performance.INFERENCE_HEAP_OPTIONS` (XLA:CPU's temporaries in one
               allocation), glibc's malloc as it starts;
  heaps kept   as `main --mode eval`, `detect` and `inference.Predictor` run now: the options
               as they are (temporaries in blocks of at most `performance.INFERENCE_HEAP_BYTES`)
               and `host_memory.keep_freed_inference_memory()`.
Each builds the zoo row at full size (random He-normal weights, 90 classes), compiles the
jitted `predict.make_predict_fn` (network + decoder, 100 detections) at each batch size, then
answers one timed request at a time, the two workers in turn (A B A B), with the 0.5 s pause
of benchmarks/vs_odapi.py before each; the detections are fetched. Each worker also reports,
per batch size, the median page faults and kernel (system) CPU ms of its calls
(`getrusage`, collected around each timed call). Medians and every round, ms per call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

from machine import machine_kind
from vs_odapi import SETTLE_S, Worker, answer_requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import interleaved  # pylint: disable=wrong-import-position

SETTINGS = ('one block', 'heaps kept')


def worker(row: str, setting: str, batches: list[int]) -> None:
  """Builds the row under `setting`, compiles each batch size, then serves timed requests."""
  import jax  # pylint: disable=g-import-not-at-top
  from centernet_jax import host_memory, performance, predict  # pylint: disable=g-import-not-at-top

  options = dict(performance.CPU_COMPILER_OPTIONS)
  if setting == 'heaps kept':
    if not host_memory.keep_freed_inference_memory():
      raise SystemExit('inference_heaps: the setting is glibc\'s; this is not glibc')
  else:
    for key in performance.INFERENCE_HEAP_OPTIONS:
      options.pop(key)
  config = interleaved.row_config(interleaved.ROWS[row])
  model, variables, size = interleaved.row_model(config)
  fn = predict.make_predict_fn(model, input_size=size, max_detections=100, top_level=False)
  runs, usage = {}, {}
  for b in batches:
    inputs = interleaved.predict_inputs(size, b)
    compiled = jax.jit(fn).lower(variables, inputs).compile(compiler_options=options)
    usage[b] = []

    def once(compiled=compiled, inputs=inputs, b=b):
      r0 = resource.getrusage(resource.RUSAGE_SELF)
      jax.device_get(compiled(variables, inputs))
      r1 = resource.getrusage(resource.RUSAGE_SELF)
      usage[b].append((r1.ru_minflt - r0.ru_minflt, (r1.ru_stime - r0.ru_stime) * 1e3))
    once()
    usage[b].clear()
    runs[f'predict{b}'] = once

  def report():
    print('usage ' + json.dumps({b: [round(statistics.median(u[0] for u in usage[b])),
                          round(statistics.median(u[1] for u in usage[b]), 1)]
                      for b in batches if usage[b]}), file=sys.stderr, flush=True)
  runs['usage'] = report
  print(json.dumps({'ready': True, 'setting': setting}), flush=True)
  answer_requests(runs)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', default='r50v1fpn,mnv2fpn')
  parser.add_argument('--batches', default='1,8')
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--out_dir', default=os.path.join(REPO, 'runs', 'inference_heaps'))
  parser.add_argument('--worker', default='', help=argparse.SUPPRESS)
  parser.add_argument('--setting', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  batches = [int(b) for b in args.batches.split(',') if b]
  if not batches or min(batches) < 1:
    parser.error(f'--batches {args.batches!r}: batch sizes >= 1')
  if args.worker:
    worker(args.worker, args.setting, batches)
    return 0
  rows = [r for r in args.rows.split(',') if r]
  unknown = sorted(set(rows) - set(interleaved.ROWS))
  if unknown:
    parser.error(f'--rows: unknown {unknown} (one of {", ".join(interleaved.ROWS)})')
  os.makedirs(args.out_dir, exist_ok=True)
  kind = machine_kind()
  lines = []
  for row in rows:
    workers = {}
    try:
      for setting in SETTINGS:
        print(f'[{row}] starting the worker: {setting} ...', flush=True)
        log = os.path.join(args.out_dir, f'{row}.{setting.replace(" ", "_")}.log')
        workers[setting] = Worker(
            setting, [sys.executable, os.path.abspath(__file__), '--worker', row, '--setting',
                      setting, '--batches', args.batches], log, 1800.0)
      times = {b: {s: [] for s in SETTINGS} for b in batches}
      for r in range(args.repeats):
        for b in batches:
          for s, w in workers.items():
            time.sleep(SETTLE_S)
            times[b][s].append(w.measure(f'predict{b}'))
        print(f'[{row}] round {r + 1}/{args.repeats}: ' + ', '.join(
            f'batch {b} {s} {times[b][s][-1]:.0f} ms' for b in batches for s in SETTINGS),
              flush=True)
      for w in workers.values():
        w.ask('usage')
    finally:
      for w in workers.values():
        w.close()
    usage = {}
    for s in SETTINGS:
      with open(os.path.join(args.out_dir, f'{row}.{s.replace(" ", "_")}.log')) as f:
        reports = [json.loads(line[len('usage '):]) for line in f if line.startswith('usage ')]
      usage[s] = reports[-1] if reports else {}
    for b in batches:
      a, k = times[b]['one block'], times[b]['heaps kept']
      fa, sa = usage['one block'].get(str(b), ['-', '-'])
      fk, sk = usage['heaps kept'].get(str(b), ['-', '-'])
      lines.append(f'| {row} | {b} | {statistics.median(a):.0f} | {statistics.median(k):.0f} | '
                   f'**{statistics.median(a) / statistics.median(k):.2f}x** | {fa} / {fk} | '
                   f'{sa} / {sk} | {interleaved.every_round(a)} | {interleaved.every_round(k)} |')
  print(f'\nMachine: {kind}; {args.repeats} interleaved rounds; `python '
        f'benchmarks/inference_heaps.py --rows {",".join(rows)} --batches {args.batches} '
        f'--repeats {args.repeats}`\n')
  print('| row | batch | one block ms | heaps kept ms | one block / kept | page faults per call '
        '(one block / kept) | kernel CPU ms per call | one block, every round | kept, every '
        'round |\n|---|---|---|---|---|---|---|---|---|')
  print('\n'.join(lines))
  return 0


if __name__ == '__main__':
  sys.exit(main())
