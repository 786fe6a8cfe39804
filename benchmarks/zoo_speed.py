r"""Speed of every TF2-zoo CenterNet row at its full resolution, beside the zoo's speed column.

  python benchmarks/zoo_speed.py [--rows ROW,ROW|all] [--batch 2] [--repeats 5] \
      [--dtypes float32,bfloat16] [--no_train] [--row_timeout 3600] [--out table.md] \
      [--results_json results.json]

For each row (its experiment file `experiments/<archive name>.py`, on whatever JAX backend is
present) and each compute dtype (`model.dtype`; params stay float32):
  * forward latency at batch 1: the jitted model + decoder (`evaluate.make_predict_fn`: boxes,
    100 detections, and the joints for keypoint rows) on a zero S x S image, after one
    warm-up call, median (and minimum) of `--repeats` calls (host preprocessing, i.e. image
    decoding and resizing, is not included);
  * training step time per image: the jitted `train.make_train_step` (targets, loss, gradients,
    Adam update) on one device at `--batch` images with 10 boxes each (batch 1 when that step
    would not fit in the RAM, on CPU), after one warm-up call, median (and minimum) of
    `--repeats` steps, divided by the batch.
Compile times are reported too, and the training step's memory (XLA's estimate: arguments,
outputs, temporaries); on CPU a step needing more than 90% of the available RAM runs at batch
1 instead, or not at all.
Each row runs in its own subprocess with a `--row_timeout`, so a row that is too slow or runs
out of memory is listed with the reason instead of stopping the others.

The zoo's "Speed (ms)" column gives no hardware or method (docs/odapi_reference.md,
section 10: probably a batch-1 end-to-end SavedModel call on an unspecified GPU); compare rows
relative to each other, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from centernet_jax import zoo_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _published_ap(row: zoo_table.PublishedRow) -> str:
  """The zoo's COCO mAP column as it prints it: box, box/keypoint, or keypoint only."""
  if row.box_ap is None:
    return f'{row.keypoint_ap} (kpts)'
  return f'{row.box_ap}' + ('' if row.keypoint_ap is None else f'/{row.keypoint_ap}')


# (archive name, zoo speed ms, zoo COCO mAP as published): zoo_table.PUBLISHED, the one copy.
ZOO_ROWS = tuple((r.name, r.ms, _published_ap(r)) for r in zoo_table.PUBLISHED)
ZOO = {name: (speed, ap) for name, speed, ap in ZOO_ROWS}
MAX_DETECTIONS = 100
BOXES_PER_IMAGE = 10


def experiment_path(row: str) -> str:
  return os.path.join(REPO, 'experiments', row + '.py')


def load_config(row: str):
  from centernet_jax import experiments  # pylint: disable=g-import-not-at-top
  return experiments.load_config(experiment_path(row))


def _timed_ms(fn, repeats: int) -> tuple[float, float, float]:
  """(first call seconds, median and minimum of `repeats` further calls in ms)."""
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append((time.perf_counter() - t0) * 1e3)
  return first, statistics.median(times), min(times)


def _keypoint_spec(config):
  """COCO person's keypoint task for a keypoint row (`keypoints.enabled`), else None."""
  kcfg = config.keypoints
  if not kcfg.enabled:
    return None
  from centernet_jax import keypoint_spec as kps  # pylint: disable=g-import-not-at-top
  return kps.spec_from_category(kps.coco_person_category(), 0, kcfg)  # person: channel 0


def _bytes_needed(compiled):
  """Arguments + outputs + temporaries of a compiled executable (None if unknown)."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
               m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def _host_bytes_available():
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _train_batch(config, batch: int, size: int, num_classes: int, spec=None):
  """Dummy training batch of the train step's keys (boxes spread over the image; with a
  keypoint spec, every joint labelled inside its box)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from centernet_jax import colour_augment, train  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  m = int(config.dataset.max_boxes)
  n = min(BOXES_PER_IMAGE, m)
  yx = rng.uniform(0.05, 0.7, (batch, n, 2))
  hw = rng.uniform(0.05, 0.25, (batch, n, 2))
  boxes = np.zeros((batch, m, 4), np.float32)
  boxes[:, :n] = np.concatenate([yx, yx + hw], -1)
  classes = np.zeros((batch, m), np.int32)
  classes[:, :n] = rng.integers(0, num_classes, (batch, n))
  box_mask = np.zeros((batch, m), np.float32)
  box_mask[:, :n] = 1.0
  known = {
      'image': rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32),
      'boxes': boxes, 'classes': classes, 'box_mask': box_mask,
      'true_size': np.full((batch, 2), size, np.int32),
      **colour_augment.identity_batch(config.input.augmentations, batch),
  }
  keys = train.train_keys(spec) if hasattr(train, 'train_keys') else train.TRAIN_KEYS
  if spec is not None:
    j = spec.num_keypoints
    frac = rng.uniform(0.0, 1.0, (batch, m, j, 2))
    known['keypoints'] = (boxes[:, :, None, :2] +
                          frac * (boxes[:, :, None, 2:] - boxes[:, :, None, :2])).astype(
                              np.float32)
    known['keypoint_mask'] = np.repeat(box_mask[:, :, None], j, axis=2)
  missing = [k for k in keys if k not in known]
  if missing:
    raise NotImplementedError(f'no dummy data for training batch keys {missing}')
  return {k: known[k] for k in keys}


def measure_row(row: str, dtypes, batch: int, repeats: int, do_train: bool,
                json_path: str = '') -> dict:
  """Runs in the worker process: every measurement of one row (saved to `json_path` after
  each one, so a row killed by the timeout still reports what it finished)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from centernet_jax import evaluate  # pylint: disable=g-import-not-at-top
  from centernet_jax import model_variables  # pylint: disable=g-import-not-at-top
  from centernet_jax import models  # pylint: disable=g-import-not-at-top
  from centernet_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from centernet_jax import train  # pylint: disable=g-import-not-at-top

  config = load_config(row)
  size = int(config.input.size)
  num_classes = int(config.model.num_classes) or 90
  spec = _keypoint_spec(config)
  out = {'row': row, 'size': size, 'backbone': config.model.backbone, 'batch': batch,
         'num_classes': num_classes, 'keypoints': spec.num_keypoints if spec else 0,
         'results': {}}
  kp_args = () if spec is None else (spec,)  # box rows: the box-only call signatures

  def save():
    if json_path:
      with open(json_path, 'w') as f:
        json.dump(out, f)

  for dtype in dtypes:
    config.model.dtype = dtype
    model = models.build_model(config.model, num_classes, *kp_args)
    t0 = time.perf_counter()
    # Random weights without compiling model.init (speed does not depend on the values).
    variables = model_variables.filled_variables(model, size)
    res = {'init_s': time.perf_counter() - t0}
    out['params'] = int(sum(x.size for x in jax.tree.leaves(variables['params'])))

    kw = {} if spec is None else {
        'keypoint_params': evaluate.keypoint_decode_params(spec, config)}
    predict = evaluate.make_predict_fn(model, input_size=size, max_detections=MAX_DETECTIONS,
                                       **kw)  # jitted model + decoder
    sizes = jnp.full((1, 2), size, jnp.float32)
    inputs = {'image': jnp.zeros((1, size, size, 3), jnp.float32), 'true_size': sizes,
              'original_size': sizes}
    out['results'][dtype] = res
    res['fwd_compile_s'], res['fwd_ms'], res['fwd_min_ms'] = _timed_ms(
        lambda: predict(variables, inputs), repeats)
    save()
    print(f'[{row}] {dtype} forward b1: {res["fwd_ms"]:.1f} ms '
          f'(compile {res["fwd_compile_s"]:.1f} s)', flush=True)

    if do_train:
      try:
        tx, schedule = optimizer_lib.make_optimizer(config)
        state = train.train_state_from_variables(variables, tx)
        step_fn = train.make_train_step(model, tx, schedule, config, num_classes, *kp_args)
        available = _host_bytes_available() if jax.default_backend() == 'cpu' else None
        b = batch
        while True:  # on CPU: the largest of (batch, 1) whose step fits in 90% of the RAM
          data = jax.device_put(_train_batch(config, b, size, num_classes, spec))
          t0 = time.perf_counter()
          step = jax.jit(step_fn).lower(state, data).compile()
          res['train_compile_s'] = time.perf_counter() - t0
          need = _bytes_needed(step)
          res['train_gib'] = need / 2**30 if need else None
          if not (need and available and need > 0.9 * available):
            break
          if b == 1:
            raise MemoryError(f'not run: the step needs ~{need / 2**30:.0f} GiB at batch 1, '
                              f'{available / 2**30:.0f} GiB of RAM available')
          print(f'[{row}] {dtype} train b{b}: needs ~{need / 2**30:.0f} GiB of '
                f'{available / 2**30:.0f} GiB available; batch 1 instead', flush=True)
          b = 1
        res['train_batch'] = b
        holder = {'state': state}

        def run_step():
          holder['state'], metrics = step(holder['state'], data)
          return metrics['loss']

        _, step_ms, step_min_ms = _timed_ms(run_step, repeats)  # first call: the warm-up
        res['train_ms_per_image'] = step_ms / b
        res['train_min_ms_per_image'] = step_min_ms / b
        print(f'[{row}] {dtype} train b{b}: {step_ms:.1f} ms/step, '
              f'{step_ms / b:.1f} ms/image (compile {res["train_compile_s"]:.1f} s)',
              flush=True)
      except (NotImplementedError, MemoryError) as e:
        res['train_error'] = str(e)
        print(f'[{row}] {dtype} train: {e}', flush=True)
      save()
    # Free this dtype's buffers and executables before the next one (the RAM check above).
    variables = predict = state = step = holder = data = None  # noqa: F841
    jax.clear_caches()
    gc.collect()
  return out


def run_rows(rows, dtypes, batch, repeats, do_train, row_timeout):
  """Each row in a subprocess (timeout, memory) -> list of result dicts."""
  results = []
  for row in rows:
    if not os.path.exists(experiment_path(row)):
      results.append({'row': row, 'error': 'no experiment file'})
      print(f'[{row}] skipped: no experiment file', flush=True)
      continue
    with tempfile.NamedTemporaryFile(suffix='.json', delete=False) as f:
      json_path = f.name
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', '--rows', row,
           '--dtypes', ','.join(dtypes), '--batch', str(batch), '--repeats', str(repeats),
           '--json', json_path] + ([] if do_train else ['--no_train'])
    t0 = time.time()
    try:
      proc = subprocess.run(cmd, cwd=REPO, timeout=row_timeout, check=False)
      if proc.returncode == 0:
        with open(json_path) as f:
          results.append(json.load(f))
      else:
        partial = _partial(json_path)
        reason = ('killed (out of memory?)' if proc.returncode < 0
                  else f'exit status {proc.returncode}')
        results.append({**partial, 'row': row, 'error': reason})
    except subprocess.TimeoutExpired:
      results.append({**_partial(json_path), 'row': row,
                      'error': f'timed out after {row_timeout} s'})
    finally:
      results[-1]['wall_s'] = time.time() - t0
      if os.path.exists(json_path):
        os.remove(json_path)
  return results


def _partial(json_path):
  try:
    with open(json_path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def machine_line() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  devices = ', '.join(sorted({d.device_kind for d in jax.devices()}))
  return (f'{platform.machine()}, `nproc` = {os.cpu_count()}, CPU "{cpu}", '
          f'{platform.system()} {platform.release()}; jax {jax.__version__} '
          f'(backend {jax.default_backend()}: {devices})')


def _fmt(value, spec='.1f'):
  return '–' if value is None else format(value, spec)


def _cell(res, median_key, min_key):
  """'median (min)' ms, or '–'."""
  if res.get(median_key) is None:
    return '–'
  return f'{_fmt(res[median_key])} ({_fmt(res.get(min_key))})'


def markdown(results, dtypes, batch) -> str:
  """The results table; times are 'median (minimum)' in ms."""
  lines = [
      '| zoo row | input | zoo speed ms | zoo AP | params | ' +
      ' | '.join(f'fwd b1 {d} ms' for d in dtypes) + ' | ' +
      ' | '.join(f'train {d} ms/img' for d in dtypes) + ' | train batch | compile fwd/train s '
      f'({dtypes[0]}) | note |',
      '|' + '---|' * (8 + 2 * len(dtypes)),
  ]
  for r in results:
    row = r['row']
    speed, ap = ZOO.get(row, (None, ''))
    res = r.get('results', {})
    fwd = [_cell(res.get(d, {}), 'fwd_ms', 'fwd_min_ms') for d in dtypes]
    trn = [_cell(res.get(d, {}), 'train_ms_per_image', 'train_min_ms_per_image')
           for d in dtypes]
    batches = sorted({res[d]['train_batch'] for d in dtypes if res.get(d, {}).get('train_batch')})
    first = res.get(dtypes[0], {})
    compile_s = (f"{_fmt(first.get('fwd_compile_s'), '.0f')} / "
                 f"{_fmt(first.get('train_compile_s'), '.0f')}")
    notes = [r['error']] if r.get('error') else []
    gib = [f"{d} {res[d]['train_gib']:.1f}" for d in dtypes if res.get(d, {}).get('train_gib')]
    if gib:
      notes.append('train step memory GiB: ' + ', '.join(gib))
    notes += [f"{d}: {res[d]['train_error']}" for d in dtypes if res.get(d, {}).get(
        'train_error')]
    params = f"{r['params'] / 1e6:.1f}M" if r.get('params') else '–'
    size = r.get('size')
    lines.append(f"| `{row}` | {size or '–'} | {speed if speed is not None else '–'} | {ap} | "
                 f"{params} | " + ' | '.join(fwd) + ' | ' + ' | '.join(trn) +
                 f" | {', '.join(map(str, batches)) or '–'} | {compile_s} | "
                 f"{'; '.join(notes)} |")
  return '\n'.join(lines) + '\n'


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--rows', default='all',
                 help='comma-separated archive names (or unique substrings), or "all"')
  p.add_argument('--batch', type=int, default=2, help='training batch (per step, one device)')
  p.add_argument('--repeats', type=int, default=5, help='timed calls after the warm-up')
  p.add_argument('--dtypes', default='float32,bfloat16')
  p.add_argument('--no_train', action='store_true', help='forward latency only')
  p.add_argument('--row_timeout', type=float, default=3600.0, help='seconds per row')
  p.add_argument('--out', default='', help='Markdown file to write the table to')
  p.add_argument('--results_json', default='', help='JSON file for the raw results')
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--json', default='', help=argparse.SUPPRESS)
  args = p.parse_args()
  dtypes = [d for d in args.dtypes.split(',') if d]
  if args.rows == 'all':
    rows = [name for name, _, _ in ZOO_ROWS]
  else:
    rows = []
    for want in args.rows.split(','):
      hits = [name for name, _, _ in ZOO_ROWS if want == name] or [
          name for name, _, _ in ZOO_ROWS if want in name]
      if len(hits) != 1:
        p.error(f'--rows {want!r} matches {hits or "no zoo row"}')
      rows.append(hits[0])

  if args.worker:
    sys.path.insert(0, REPO)
    measure_row(rows[0], dtypes, args.batch, args.repeats, not args.no_train, args.json)
    return

  results = run_rows(rows, dtypes, args.batch, args.repeats, not args.no_train,
                     args.row_timeout)
  command = 'python ' + ' '.join([os.path.relpath(os.path.abspath(__file__), REPO)] +
                                 sys.argv[1:])
  table = markdown(results, dtypes, args.batch)
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  header = (f'Machine: {machine_line()}.\nCommand: `{command}`. Times in ms: median (minimum) '
            f'of {args.repeats} calls after 1 warm-up; forward at batch 1; train per image at '
            f'batch {args.batch} (1 where that step does not fit in RAM). Load average at the '
            f'end: {load}.\n\n')
  print('\n' + header + table)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(header + table)
  if args.results_json:
    with open(args.results_json, 'w') as f:
      json.dump({'machine': machine_line(), 'command': command, 'results': results}, f,
                indent=1)


if __name__ == '__main__':
  main()
