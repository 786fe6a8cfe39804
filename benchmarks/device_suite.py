r"""The accelerator suite: training images/s and MFU, end-to-end inference, on whatever JAX
device is present (meant for one H100/H200; `benchmarks/device_suite.sh` runs it).

  python benchmarks/device_suite.py [--tiny] [--out runs/device_suite.md] [--only NAME,...]

Rows (each in its own subprocess, so one that fails or runs out of memory is listed with
its reason and the others still run):
  train   ResNet50 V1 FPN 512: float32 and bfloat16 at batch 32 and 64; Hourglass-104 512:
          bfloat16 at batch 16. The jitted `train_step.make_train_step` (targets, losses,
          gradients, Adam) on one device with 10 boxes per image and random uint8 images,
          `--warmup` steps then `--steps` timed steps: images/s, GFLOP per image (XLA cost
          analysis), TFLOP/s and MFU against `performance.PEAK_TFLOPS` for the device kind.
  infer   ResNet50 V1 FPN, MobileNetV2 FPN, Hourglass-104 at 512, float32 weights, compute in
          `--infer_dtype`: end to end at batch 1 (a 640x480 uint8 image on the host -> resize
          and pad on the device -> network -> decoder -> detections on the host) in ms, and
          images/s at batch 32 the same way.
bfloat16 is `model.dtype=bfloat16` with the base config's other settings, so the heads compute
in float32 (`model.head_dtype`).
`--tiny` runs the same code at input 64 with narrow models and 2 timed steps: a CPU check of
the machinery (tests/test_device_suite.py), not a measurement.

Only jax, flax, optax and ml_collections are imported (not TensorFlow or orbax), so the
suite runs where only those are installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

R50 = 'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8'
MNV2 = 'centernet_mobilenetv2fpn_512x512_coco17_od'
HG104 = 'centernet_hg104_512x512_coco17_tpu-8'
# name -> (kind, experiment, dtype, batch)
ROWS = {
    'train_r50_f32_b32': ('train', R50, 'float32', 32),
    'train_r50_f32_b64': ('train', R50, 'float32', 64),
    'train_r50_bf16_b32': ('train', R50, 'bfloat16', 32),
    'train_r50_bf16_b64': ('train', R50, 'bfloat16', 64),
    'train_hg104_bf16_b16': ('train', HG104, 'bfloat16', 16),
    'infer_r50': ('infer', R50, None, 32),
    'infer_mnv2': ('infer', MNV2, None, 32),
    'infer_hg104': ('infer', HG104, None, 32),
}
BOXES = 10


def load_config(experiment: str, tiny: bool):
  """The experiment's get_config() (experiments.py imports no more than config code)."""
  from centernet_jax import experiments  # pylint: disable=g-import-not-at-top
  config = experiments.load_config(os.path.join(REPO, 'experiments', experiment + '.py'))
  if tiny:
    config.input.size = 64
    config.model.width_multiplier = 0.125 if config.model.backbone == 'hourglass' else 0.25
    config.model.head_channels = 16
  return config


def run_train(experiment, dtype, batch, args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top,g-multiple-import
  from centernet_jax import colour_augment, model_variables, models, performance, train_step
  from centernet_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top

  config = load_config(experiment, args.tiny)
  config.model.dtype = dtype
  size, num_classes = config.input.size, 90
  model = models.build_model(config.model, num_classes)
  # Random weights without compiling model.init (speed does not depend on the values).
  variables = model_variables.filled_variables(model, size)
  tx, schedule = optimizer_lib.make_optimizer(config)
  state = train_step.train_state_from_variables(variables, tx)
  rng = np.random.default_rng(0)
  m = int(config.dataset.max_boxes)
  yx = rng.uniform(0.05, 0.7, (batch, BOXES, 2))
  boxes = np.zeros((batch, m, 4), np.float32)
  boxes[:, :BOXES] = np.concatenate([yx, yx + rng.uniform(0.05, 0.25, (batch, BOXES, 2))], -1)
  classes = np.zeros((batch, m), np.int32)
  classes[:, :BOXES] = rng.integers(0, num_classes, (batch, BOXES))
  mask = np.zeros((batch, m), np.float32)
  mask[:, :BOXES] = 1.0
  data = jax.device_put({
      'image': rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
      'boxes': boxes, 'classes': classes, 'box_mask': mask,
      'true_size': np.full((batch, 2), size, np.int32),
      **colour_augment.identity_batch(config.input.augmentations, batch)})
  step = jax.jit(train_step.make_train_step(model, tx, schedule, config, num_classes),
                 donate_argnums=(0,), compiler_options=performance.train_compiler_options())
  t0 = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - t0
  flops = performance.compiled_flops(compiled)
  for _ in range(args.warmup):
    state, metrics = compiled(state, data)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = compiled(state, data)
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - t0
  device = jax.devices()[0]
  peak = performance.peak_tflops(device, dtype, args.peak_tflops)
  tflops = flops * args.steps / elapsed / 1e12
  return {'images_per_sec': batch * args.steps / elapsed, 'step_ms': elapsed / args.steps * 1e3,
          'gflop_per_image': flops / batch / 1e9, 'tflops': tflops,
          'mfu': tflops / peak if peak else None, 'compile_s': compile_s,
          'loss': float(metrics['loss']), 'device': device.device_kind}


def run_infer(experiment, batch, args) -> dict:
  """End to end from host uint8 640x480 images: resize+pad on device, network, decoder."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from centernet_jax import model_variables, models, predict  # pylint: disable=g-import-not-at-top

  config = load_config(experiment, args.tiny)
  config.model.dtype = args.infer_dtype
  size = config.input.size
  model = models.build_model(config.model, 90)
  variables = jax.device_put(model_variables.filled_variables(model, size))
  predict_fn = predict.make_predict_fn(model, input_size=size, max_detections=100)
  h, w = (48, 64) if args.tiny else (480, 640)
  scale = size / max(h, w)
  nh, nw = round(h * scale), round(w * scale)

  @jax.jit
  def preprocess(images_u8):
    # The keep-aspect resize to the longer side and bottom/right zero pad, on the device.
    resized = jax.image.resize(images_u8.astype(jnp.float32),
                               (images_u8.shape[0], nh, nw, 3), 'bilinear')
    return jnp.pad(resized, ((0, 0), (0, size - nh), (0, size - nw), (0, 0)))

  rng = np.random.default_rng(0)

  def end_to_end(n):
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    sizes = np.tile(np.array([[nh, nw]], np.int32), (n, 1))
    batch = {'image': preprocess(jax.device_put(images)), 'true_size': sizes,
             'original_size': np.tile(np.array([[h, w]], np.int32), (n, 1))}
    return jax.device_get(predict_fn(variables, batch))

  out = {'device': jax.devices()[0].device_kind}
  for n, key in ((1, 'b1_ms'), (batch, f'b{batch}_images_per_sec')):
    t0 = time.perf_counter()
    end_to_end(n)
    out[f'compile_b{n}_s'] = time.perf_counter() - t0
    for _ in range(args.warmup):
      end_to_end(n)
    times = []
    for _ in range(args.steps):
      t0 = time.perf_counter()
      end_to_end(n)
      times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out[key] = med * 1e3 if n == 1 else n / med
  return out


def table(results: dict) -> str:
  lines = ['| row | result | note |', '|---|---|---|']
  for name, res in results.items():
    if 'error' in res:
      lines.append(f'| {name} | failed | {res["error"][:200]} |')
    elif name.startswith('train'):
      mfu = f'{100 * res["mfu"]:.1f}%' if res.get('mfu') is not None else 'n/a (peak unknown)'
      lines.append(f'| {name} | {res["images_per_sec"]:.1f} images/s, MFU {mfu} | '
                   f'{res["gflop_per_image"]:.1f} GFLOP/image, {res["tflops"]:.1f} TFLOP/s, '
                   f'step {res["step_ms"]:.1f} ms, compile {res["compile_s"]:.0f} s |')
    else:
      b = next(k for k in res if k.endswith('_images_per_sec'))
      lines.append(f'| {name} | batch 1: {res["b1_ms"]:.2f} ms; {b.split("_")[0]}: '
                   f'{res[b]:.1f} images/s | end to end from host uint8 images |')
  return '\n'.join(lines)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--tiny', action='store_true')
  parser.add_argument('--only', default='', help='comma-separated row names')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--infer_dtype', default='bfloat16')
  parser.add_argument('--peak_tflops', type=float, default=0.0,
                      help='override the device kind table')
  parser.add_argument('--row_timeout', type=float, default=240.0)
  parser.add_argument('--out', default=os.path.join(REPO, 'runs', 'device_suite.md'))
  parser.add_argument('--worker', default='', help=argparse.SUPPRESS)
  parser.add_argument('--json', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.tiny:
    args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
  if args.worker:
    kind, experiment, dtype, batch = ROWS[args.worker]
    if args.tiny:
      batch = min(batch, 2)
    res = (run_train(experiment, dtype, batch, args) if kind == 'train'
           else run_infer(experiment, batch, args))
    with open(args.json, 'w') as f:
      json.dump(res, f)
    return 0
  names = [n for n in args.only.split(',') if n] or list(ROWS)
  unknown = sorted(set(names) - set(ROWS))
  if unknown:
    parser.error(f'--only: unknown rows {unknown}; rows: {list(ROWS)}')
  results = {}
  for name in names:
    json_path = f'{args.out}.{name}.json'
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', name, '--json', json_path,
           '--steps', str(args.steps), '--warmup', str(args.warmup), '--infer_dtype',
           args.infer_dtype, '--peak_tflops', str(args.peak_tflops)] + (
               ['--tiny'] if args.tiny else [])
    t0 = time.time()
    try:
      proc = subprocess.run(cmd, cwd=REPO, timeout=args.row_timeout, check=False,
                            capture_output=True, text=True)
      if proc.returncode == 0:
        with open(json_path) as f:
          results[name] = json.load(f)
      else:
        results[name] = {'error': f'exit {proc.returncode}: ' +
                                  proc.stderr.strip().splitlines()[-1:][0]
                                  if proc.stderr.strip() else f'exit {proc.returncode}'}
    except subprocess.TimeoutExpired:
      results[name] = {'error': f'timed out after {args.row_timeout:.0f} s'}
    print(f'[{name}] {time.time() - t0:.0f} s: {results[name]}', flush=True)
  text = table(results) + '\n'
  print('\n' + text)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    f.write(text)
  with open(os.path.splitext(args.out)[0] + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  return 0 if all('error' not in r for r in results.values()) else 1


if __name__ == '__main__':
  sys.exit(main())
