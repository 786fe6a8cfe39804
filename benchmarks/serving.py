r"""Serving speed against the TF2 OD API's exported model: same CPU, same images, one run.

  python benchmarks/serving.py [--variants r50v1fpn,mnv2fpn] [--rounds 5] [--threads N] \
      [--sides saved_model,odapi,predictor] [--out runs/bench_serving.md]

(`make bench-serving` runs it after building the OD API env; docs/serving.md has the method
and the results.)

For each variant (at 512, 90 classes, random weights) it prepares, under `--out_dir/<variant>`:
  workdir/           our run at random weights (benchmarks/serving_ours.py write_workdir);
  ours_b1/, ours_b8/ `python -m centernet_jax.export --format saved_model --batch 1` / `8`;
  odapi/saved_model  the OD API's own export of the same architecture and input size
                     (parity/odapi_export.py: exporter_lib_v2's DetectionFromImageModule, in
                     the reference env, tools/odapi_env.sh); its signature is
                     [1, None, None, 3]: batch 1 only;
  images.npz         8 different 480x640 uint8 RGB images (deterministic, `--seed`).
Then one long-lived worker process per side, each given the same TF intra-op and inter-op
thread count (`--threads`, default every core; fewer binds every worker to the same first
cores):
  saved_model  ours: tf.saved_model.load + signatures['serving_default'] (serving_worker.py);
  odapi        the OD API's, through the very same client code in its own env;
  predictor    our in-process `inference.Predictor.from_workdir` at batch_size 1 and 8
               (serving_ours.py predictor).
Both TensorFlow sides start with `performance.tf_cpu_serving_environment()` (XLA's heap option
and glibc's malloc settings; `--serving_env defaults` leaves the environment as it is), as
docs/serving.md tells our users to serve on a CPU; the Predictor sets up its own process.
Each round asks every side in turn for one timed request (A B C A B C ...): `b1` = the 8
images one call each, `b8` = the 8 images in one call (the OD API side: 8 sequential batch-1
calls, labelled so). Reported: batch 1 ms per image and batch 8 images/s, medians over
`--rounds`, and the ratios against the OD API (batch 1: OD API ms / ours, batch 8: ours
images/s / OD API's; above 1 we are faster). Wall time of the whole request, outputs fetched to
numpy, after one warm-up request per side.

`--tiny` (input 64, narrow models, 48x64 images; our sides only) checks the machinery on a
CPU in seconds (run by hand; no test runs it); it measures nothing worth reporting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from machine import machine_kind
from vs_odapi import Worker, odapi_python

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from centernet_jax import performance  # pylint: disable=wrong-import-position
VARIANTS = ('r50v1fpn', 'mnv2fpn')  # serving_ours.EXPERIMENTS, parity/odapi_build.VARIANTS
SIDES = ('saved_model', 'odapi', 'predictor')
NUM_IMAGES = 8  # serving_worker.BATCH
IMAGE_HW = (480, 640)  # COCO-sized, landscape (height, width) pixels
TINY_IMAGE_HW = (48, 64)
SIDE_LABELS = {
    'saved_model': 'ours, SavedModel (`--batch 1` / `--batch 8` exports)',
    'odapi': 'OD API, SavedModel (exporter_lib_v2; batch-1 signature: its batch 8 = 8 '
             'sequential batch-1 calls)',
    'predictor': 'ours, in-process `Predictor` (batch_size 1 / 8)',
}


def make_images(height: int, width: int, seed: int) -> np.ndarray:
  """uint8 [NUM_IMAGES, height, width, 3]: each a smooth random picture (a 12x16 random grid
  upsampled bicubically) plus pixel noise, different per image, the same for a given seed."""
  out = []
  for i in range(NUM_IMAGES):
    rng = np.random.default_rng(seed + i)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.float32)
    out.append(np.clip(smooth + rng.normal(0.0, 8.0, smooth.shape), 0, 255).astype(np.uint8))
  return np.stack(out)


def run_step(name: str, cmd: list[str], log_path: str, timeout_s: float,
             cwd: str = REPO) -> str:
  """Runs one preparation command; returns its stdout, or raises naming the log."""
  with open(log_path, 'w') as log:
    try:
      proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=log, text=True,
                            timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
      raise TimeoutError(f'{name}: no result in {timeout_s} s; see {log_path}') from e
    log.write(proc.stdout)
  if proc.returncode != 0:
    raise RuntimeError(f'{name} failed (status {proc.returncode}); see {log_path}')
  return proc.stdout


def prepare(variant: str, case: str, args, odapi_py: list[str] | None) -> dict:
  """Writes the case (see the module docstring); returns its paths and input size."""
  if os.path.isdir(case):
    shutil.rmtree(case)  # never measure a stale export
  os.makedirs(case)
  paths = {'workdir': os.path.join(case, 'workdir'), 'images': os.path.join(case, 'images.npz'),
           'ours_b1': os.path.join(case, 'ours_b1'), 'ours_b8': os.path.join(case, 'ours_b8'),
           'odapi': os.path.join(case, 'odapi')}
  h, w = TINY_IMAGE_HW if args.tiny else IMAGE_HW
  np.savez(paths['images'], images=make_images(h, w, args.seed))
  print(f'[{variant}] writing our workdir at random weights ...', flush=True)
  out = run_step('write_workdir', [sys.executable, os.path.join(HERE, 'serving_ours.py'),
                                   'write_workdir', '--variant', variant, '--workdir',
                                   paths['workdir']] + (['--tiny'] if args.tiny else []),
                 os.path.join(case, 'write_workdir.log'), args.timeout_s)
  paths['input_size'] = int(out.strip().splitlines()[-1])
  if 'saved_model' in args.sides:
    for b in (1, NUM_IMAGES):
      print(f'[{variant}] exporting our SavedModel at batch {b} ...', flush=True)
      run_step(f'export --batch {b}', [
          sys.executable, '-m', 'centernet_jax.export', '--workdir', paths['workdir'],
          '--output', paths[f'ours_b{b}'], '--format', 'saved_model', '--batch', str(b)],
               os.path.join(case, f'export_b{b}.log'), args.timeout_s)
  if odapi_py is not None:
    print(f'[{variant}] exporting the OD API model with its exporter ...', flush=True)
    run_step('OD API export', odapi_py + [
        os.path.join(REPO, 'parity', 'odapi_export.py'), '--variant', variant, '--out',
        paths['odapi'], '--input_size', str(paths['input_size']), '--seed', str(args.seed)],
             os.path.join(case, 'odapi_export.log'), args.timeout_s,
             cwd=os.path.join(REPO, 'parity'))
  return paths


def worker_env(side: str, serving_env: str) -> dict[str, str] | None:
  """The process environment of a side's worker: with `--serving_env tuned` (the default) both
  TensorFlow sides (ours and the OD API's SavedModel) start with
  `performance.tf_cpu_serving_environment()`, as docs/serving.md tells our users to serve, so
  both get the same malloc settings; the Predictor sets up its own process (host_memory.py)."""
  if side == 'predictor' or serving_env == 'defaults':
    return None
  env = dict(os.environ)
  for key, value in performance.tf_cpu_serving_environment().items():
    env[key] = f'{env[key]} {value}' if env.get(key) and key == 'XLA_FLAGS' else value
  return env


def worker_command(side: str, paths: dict, threads: int, odapi_py: list[str] | None
                   ) -> list[str]:
  common = ['--images', paths['images'], '--threads', str(threads)]
  client = os.path.join(HERE, 'serving_worker.py')
  if side == 'saved_model':
    return [sys.executable, client] + common + [
        '--saved_model', f'b1={paths["ours_b1"]}', '--saved_model', f'b8={paths["ours_b8"]}']
  if side == 'odapi':
    return odapi_py + [client] + common + [
        '--saved_model', f'b1={os.path.join(paths["odapi"], "saved_model")}']
  return [sys.executable, os.path.join(HERE, 'serving_ours.py'), 'predictor', '--workdir',
          paths['workdir']] + common


def run_variant(variant: str, args, odapi_py: list[str] | None) -> dict:
  case = os.path.join(args.out_dir, variant)
  paths = prepare(variant, case, args, odapi_py)
  workers: dict[str, Worker] = {}
  try:
    for side in args.sides:
      print(f'[{variant}] starting the {side} worker (load + warm-up) ...', flush=True)
      workers[side] = Worker(side, worker_command(side, paths, args.threads, odapi_py),
                             os.path.join(case, f'{side}.log'), args.timeout_s,
                             env=worker_env(side, args.serving_env))
    times = {side: {'b1': [], 'b8': []} for side in args.sides}  # ms per request
    for r in range(args.rounds):
      for what in ('b1', 'b8'):
        for side in args.sides:  # A B C A B C ...: the sides back to back
          times[side][what].append(workers[side].measure(what))
      print(f'[{variant}] round {r + 1}/{args.rounds}: ' + ', '.join(
          f'{side} b1 {times[side]["b1"][-1] / NUM_IMAGES:.0f} ms/image, b8 '
          f'{NUM_IMAGES * 1e3 / times[side]["b8"][-1]:.1f} images/s' for side in args.sides),
            flush=True)
    return {'variant': variant, 'input_size': paths['input_size'], 'times_ms': times,
            'info': {side: w.info for side, w in workers.items()}}
  finally:
    for w in workers.values():
      w.close()


def summarize(result: dict) -> dict:
  """Per side: batch-1 ms per image and batch-8 images/s (medians; every round too) and the
  ratios against the OD API side when it ran."""
  out = {}
  for side, t in result['times_ms'].items():
    b1 = [ms / NUM_IMAGES for ms in t['b1']]
    b8 = [NUM_IMAGES * 1e3 / ms for ms in t['b8']]
    out[side] = {'b1_ms_per_image': statistics.median(b1),
                 'b8_images_per_s': statistics.median(b8), 'b1_rounds': b1, 'b8_rounds': b8}
  if 'odapi' in out:
    theirs = out['odapi']
    for side, s in out.items():
      if side == 'odapi':
        continue  # the reference of the ratios
      s['b1_speedup'] = theirs['b1_ms_per_image'] / s['b1_ms_per_image']
      s['b8_throughput_ratio'] = s['b8_images_per_s'] / theirs['b8_images_per_s']
  return out


def goal(s: dict) -> str:
  """docs/serving.md's goal: faster at batch 1 and >= 2x the OD API's batch-8 throughput."""
  if 'b1_speedup' not in s:
    return 'no OD API side'
  missed = ([] if s['b1_speedup'] > 1 else ['batch 1']) + (
      [] if s['b8_throughput_ratio'] >= 2 else ['batch 8'])
  return 'met' if not missed else 'not met: ' + ', '.join(missed)


def table(results: list[dict]) -> str:
  lines = ['| variant | side | batch 1: ms per image | OD API / this | batch 8: images/s | '
           'this / OD API | goal | batch 1 every round (ms per image) | batch 8 every round '
           '(images/s) |', '|---|---|---|---|---|---|---|---|---|']
  for res in results:
    if 'error' in res:
      lines.append(f'| {res["variant"]} | failed: {res["error"]} | | | | | | | |')
      continue
    for side, s in summarize(res).items():
      ratio1 = f'**{s["b1_speedup"]:.2f}x**' if 'b1_speedup' in s else '-'
      ratio8 = f'**{s["b8_throughput_ratio"]:.2f}x**' if 'b8_throughput_ratio' in s else '-'
      verdict = 'reference' if side == 'odapi' else goal(s)
      lines.append(
          f'| {res["variant"]} | {SIDE_LABELS[side]} | {s["b1_ms_per_image"]:.1f} | {ratio1} | '
          f'{s["b8_images_per_s"]:.2f} | {ratio8} | {verdict} | '
          f'{", ".join(f"{x:.1f}" for x in s["b1_rounds"])} | '
          f'{", ".join(f"{x:.2f}" for x in s["b8_rounds"])} |')
  return '\n'.join(lines)


def header(results: list[dict], args, kind: str, started: str) -> str:
  info = {}
  for res in results:
    for side, i in res.get('info', {}).items():
      info.setdefault(side, i)
  versions = '; '.join(
      f'{side}: ' + ', '.join(f'{k.split("_")[0].upper()} {v}' for k, v in i.items()
                              if k.endswith('_version'))
      for side, i in info.items())
  pinned = next((i['threads'] for i in info.values() if 'threads' in i), '?')
  h, w = TINY_IMAGE_HW if args.tiny else IMAGE_HW
  return (f'Machine: {kind} (at the start). Started {started}. TF intra-op and inter-op '
          f'threads: {args.threads} on every side (workers {pinned}). {args.rounds} '
          f'interleaved rounds (one request per side in turn), medians; {NUM_IMAGES} '
          f'different {h}x{w} uint8 RGB images (seed {args.seed}), 90 classes, random '
          f'weights{", TINY models (a machinery check, not a measurement)" if args.tiny else ""}'
          f'. Versions: {versions or "?"}. Command: `python benchmarks/serving.py --variants '
          f'{",".join(args.variants)} --rounds {args.rounds} --threads {args.threads} --sides '
          f'{",".join(args.sides)} --serving_env {args.serving_env}'
          f'{" --tiny" if args.tiny else ""}`. TensorFlow sides\' environment: '
          + ('performance.tf_cpu_serving_environment() on both' if args.serving_env == 'tuned'
             else 'as started'))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--sides', default=','.join(SIDES))
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--threads', type=int, default=os.cpu_count(),
                      help='TF intra-op = inter-op threads of every side (default: every core)')
  parser.add_argument('--seed', type=int, default=0, help='images and OD API weights')
  parser.add_argument('--serving_env', default='tuned', choices=('tuned', 'defaults'),
                      help='tuned: both TensorFlow sides start with '
                           'performance.tf_cpu_serving_environment(); defaults: as started')
  parser.add_argument('--tiny', action='store_true',
                      help='input 64, narrow models, 48x64 images: a check of the machinery')
  parser.add_argument('--out_dir', default=os.path.join(REPO, 'runs', 'bench_serving'))
  parser.add_argument('--out', default=os.path.join(REPO, 'runs', 'bench_serving.md'))
  parser.add_argument('--timeout_s', type=float, default=1800.0,
                      help='per preparation step, per worker start-up and per request')
  args = parser.parse_args()
  args.variants = [v for v in args.variants.split(',') if v]
  args.sides = [s for s in args.sides.split(',') if s]
  for name, values, known in (('--variants', args.variants, VARIANTS),
                              ('--sides', args.sides, SIDES)):
    unknown = sorted(set(values) - set(known))
    if unknown or not values:
      parser.error(f'{name}: unknown or none {unknown}; choose from {",".join(known)}')
  args.sides = [s for s in SIDES if s in args.sides]  # the fixed interleaving order
  if args.rounds < 1:
    parser.error('--rounds must be >= 1')
  if args.threads < 1:
    parser.error('--threads must be >= 1')
  if args.tiny and 'odapi' in args.sides:
    parser.error('--tiny narrows our models only: run it with --sides saved_model,predictor')
  os.environ['JAX_PLATFORMS'] = 'cpu'  # a CPU benchmark, whatever else the machine has
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  out_dir = os.path.abspath(args.out_dir)
  args.out_dir = out_dir
  os.makedirs(out_dir, exist_ok=True)
  odapi_py = odapi_python() if 'odapi' in args.sides else None
  kind = machine_kind()
  started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
  results = []
  for v in args.variants:
    try:
      results.append(run_variant(v, args, odapi_py))
    except (RuntimeError, TimeoutError, OSError, ValueError) as e:
      print(f'[{v}] failed: {e}', flush=True)
      results.append({'variant': v, 'error': str(e)})
  text = header(results, args, kind, started) + '\n\n' + table(results) + '\n'
  print('\n' + text)
  with open(args.out, 'w') as f:
    f.write(text)
  with open(os.path.splitext(args.out)[0] + '.json', 'w') as f:
    json.dump({'machine': kind, 'started': started, 'threads': args.threads,
               'rounds': args.rounds, 'tiny': args.tiny,
               'results': [dict(r, summary=summarize(r)) if 'error' not in r else r
                           for r in results]}, f, indent=1)
  return 1 if any('error' in r for r in results) else 0


if __name__ == '__main__':
  sys.exit(main())
