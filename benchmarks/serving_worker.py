r"""A SavedModel client worker of benchmarks/serving.py; TensorFlow only, so the same file runs
in the project env (our export) and in the OD API reference env (theirs, TF 2.15, Python 3.11).

  python benchmarks/serving_worker.py --images IMAGES.npz --threads N \
      --saved_model b1=DIR [--saved_model b8=DIR]

Each SavedModel is loaded with `tf.saved_model.load` and called as the OD API's tutorial calls
an exported detector: `signatures['serving_default'](input_tensor=uint8 [n, H, W, 3])`, every
output fetched to numpy. `images` in IMAGES.npz is uint8 [8, H, W, 3]. Requests (one per stdin
line, answered with one JSON line {'what', 'ms'} on stdout, after one {'ready': ...} line once
every request ran once: tracing and XLA compilation happen there):
  b1    the batch-1 model called once per image, on each of the 8 images in turn (ms in all)
  b8    with a `b8` model: one call on the 8 images; without one (the OD API exporter's
        signature is [1, None, None, 3]): the batch-1 model on each image in turn, as `b1`
  quit
`pin_threads` and `serve` are the protocol's two halves that benchmarks/serving_ours.py shares.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

BATCH = 8  # images per `b8` request, and images in IMAGES.npz


def pin_threads(threads: int) -> str:
  """Gives TF `threads` intra-op and `threads` inter-op threads and, when that is fewer than
  the machine's cores, binds this process to cores 0..threads-1 (JAX's XLA:CPU client has no
  thread setting: it sizes its pool from the cores the process may use). Must run before TF
  executes its first op. Returns what it did, for the table's header."""
  if threads < 1:
    raise ValueError(f'--threads={threads}: must be >= 1')
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  tf.config.set_visible_devices([], 'GPU')  # a CPU benchmark
  cores = os.cpu_count() or threads
  if threads < cores:
    os.sched_setaffinity(0, range(threads))
    return f'bound to cores 0-{threads - 1}' if threads > 1 else 'bound to core 0'
  return f'all {cores} cores'


def serve(runs: dict, info: dict) -> None:
  """Runs every request once (warm-up), prints {'ready': True, **info}, then answers timing
  requests from stdin until 'quit' (one JSON line each: wall ms of one `runs[what]()`)."""
  t0 = time.perf_counter()
  for fn in runs.values():
    fn()
  print(json.dumps(dict(info, ready=True, warmup_s=time.perf_counter() - t0)), flush=True)
  for line in sys.stdin:
    what = line.strip()
    if what == 'quit':
      break
    if what not in runs:
      raise ValueError(f'unknown request {what!r}; this worker serves {sorted(runs)}')
    t0 = time.perf_counter()
    runs[what]()
    print(json.dumps({'what': what, 'ms': (time.perf_counter() - t0) * 1e3}), flush=True)


def load_images(path: str) -> np.ndarray:
  """uint8 [BATCH, H, W, 3] from IMAGES.npz (written by benchmarks/serving.py)."""
  images = np.load(path)['images']
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != BATCH:
    raise ValueError(f'{path}: images {images.dtype} {images.shape}, expected uint8 '
                     f'[{BATCH}, H, W, 3]')
  return images


def signature_caller(saved_model_dir: str):
  """`uint8 [n, H, W, 3] numpy -> {output name: numpy}` through `serving_default`."""
  fn = tf.saved_model.load(saved_model_dir).signatures['serving_default']

  def call(images):
    return {k: v.numpy() for k, v in fn(input_tensor=tf.constant(images)).items()}

  return call


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', required=True)
  parser.add_argument('--threads', type=int, required=True)
  parser.add_argument('--saved_model', action='append', required=True,
                      help='b1=DIR (required) or b8=DIR')
  args = parser.parse_args()
  dirs = dict(s.split('=', 1) for s in args.saved_model)
  if 'b1' not in dirs or set(dirs) - {'b1', 'b8'}:
    parser.error(f'--saved_model: need b1=DIR and at most b8=DIR, got {sorted(dirs)}')
  pinned = pin_threads(args.threads)
  images = load_images(args.images)
  b1 = signature_caller(dirs['b1'])

  def one_by_one():
    for i in range(BATCH):
      b1(images[i:i + 1])

  runs = {'b1': one_by_one}
  if 'b8' in dirs:
    b8 = signature_caller(dirs['b8'])
    runs['b8'] = lambda: b8(images)
  else:
    runs['b8'] = one_by_one
  serve(runs, {'tf_version': tf.__version__, 'threads': pinned,
               'b8_is_8_batch1_calls': 'b8' not in dirs})


if __name__ == '__main__':
  main()
