r"""Throughput of the training input pipeline, stage by stage, on 1 and on 2 CPU cores.

  python benchmarks/input_pipeline.py [--cores 1,2] [--images 400] [--size 512] \
      [--batch 16] [--out runs/input_pipeline.md]

Data: `--num_files` COCO-sized JPEGs (640x480, quality 90, smooth shapes plus sensor-like
noise, ~7 boxes each) and their COCO JSON, generated once under --data_dir.
Recipe: the base config's, i.e. the zoo's 512 one (random flip, `random_crop_image`,
`random_absolute_pad_image`, colour jitter, keep-aspect resize to 512 and pad), batch --batch.

Each core count runs in its own process pinned to that many cores (`sched_setaffinity`, set
before TensorFlow starts, with tf.data's private thread pool of the same size), and measures
images/s of cumulative pipelines, each built from the project's own functions:
  read       tf.io.read_file of the image file
  decode     + `record_table.decode_image_file` (uint8 RGB)
  augment    + the configured ops of `input.augmentations` (`augment.Augmenter`: the crop
             window, pad, flip as a view of the decoded image, the colour ops' parameters)
  resize     + the one resample of the view onto the keep-aspect, zero-padded canvas, uint8
             (`pipeline.preprocess`, the whole per-example op)
  batch      the real training dataset (`pipeline.make_train_dataset`: the source's record
             table and shuffled index, preprocess, padding to max_boxes, batching, prefetch)
             as numpy
  hand-over  + `sharding.to_global` onto the JAX device (`make_train_iterator` as training
             consumes it), waited for
The cost of a stage is the difference of the per-image times of its pipeline and the previous.
The colour ops run in the train step on the device (colour_augment.py), not here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from machine import machine_kind

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

STAGES = ('read', 'decode', 'augment', 'resize', 'batch', 'hand-over')


def make_dataset(data_dir: str, num_files: int, seed: int = 0) -> str:
  """COCO-sized JPEGs + instances JSON under data_dir (once); returns the JSON path."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  ann_path = os.path.join(data_dir, f'instances_{num_files}.json')
  if os.path.exists(ann_path):
    return ann_path
  os.makedirs(os.path.join(data_dir, 'images'), exist_ok=True)
  rng = np.random.default_rng(seed)
  h, w = 480, 640
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  images, annotations = [], []
  for i in range(num_files):
    img = np.zeros((h, w, 3), np.float32) + rng.uniform(60, 190, 3)
    img += 40 * np.sin(xx[..., None] / rng.uniform(20, 90) + rng.uniform(0, 6, 3))
    n = int(rng.integers(4, 11))
    for _ in range(n):
      bh, bw = rng.uniform(20, 250), rng.uniform(20, 300)
      y0, x0 = rng.uniform(0, h - bh), rng.uniform(0, w - bw)
      inside = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
      img[inside] = rng.uniform(0, 255, 3)
      annotations.append({'id': len(annotations) + 1, 'image_id': i + 1,
                          'category_id': int(rng.integers(1, 4)),
                          'bbox': [float(x0), float(y0), float(bw), float(bh)],
                          'area': float(bw * bh), 'iscrowd': 0})
    img += rng.normal(0, 8, img.shape)
    name = f'{i:06d}.jpg'
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
        os.path.join(data_dir, 'images', name), quality=90)
    images.append({'id': i + 1, 'file_name': name, 'height': h, 'width': w})
  categories = [{'id': k, 'name': f'class{k}'} for k in (1, 2, 3)]
  with open(ann_path, 'w') as f:
    json.dump({'images': images, 'annotations': annotations, 'categories': categories}, f)
  return ann_path


def measure(args) -> dict:
  """Runs in the pinned worker: images/s of every cumulative stage."""
  os.sched_setaffinity(0, set(range(args.worker_cores)))
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from centernet_jax import config_base, sharding, train  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from centernet_jax.data import pipeline, sources
  from centernet_jax.data.sources import record_table  # pylint: disable=g-import-not-at-top

  tf.config.threading.set_inter_op_parallelism_threads(args.worker_cores)
  tf.config.threading.set_intra_op_parallelism_threads(args.worker_cores)
  config = config_base.base_config()
  config.dataset.source = 'coco_json'
  config.dataset.train_annotations = args.annotations
  config.dataset.train_images = os.path.join(os.path.dirname(args.annotations), 'images')
  config.input.size = args.size
  config.batch_size = args.batch
  config.dataset.num_parallel_calls = args.worker_cores
  facts = sources.resolve(config)
  dataset = sources.for_config(config).load_split(facts, 'train')
  augmenter = pipeline.make_augmenter(config, facts)
  records = dataset.records
  paths = [r.path for r in records]
  options = tf.data.Options()
  options.threading.private_threadpool_size = args.worker_cores
  options.deterministic = True

  def summary(image):
    # Stages before the resize yield images of different sizes: hand on their max and shape
    # (which need every pixel computed) instead of batching ragged images, which would cost
    # more than the stage itself.
    return tf.reduce_max(image), tf.shape(image)

  def per_example(stage):
    def fn(i):
      idx = i % len(paths)
      path = tf.gather(tf.constant(paths), idx)
      data = tf.io.read_file(path)
      if stage == 'read':
        return tf.strings.length(data)
      image = record_table.decode_image_file(path)
      if stage == 'decode':
        return summary(image)
      boxes = tf.gather(boxes_all, idx)[:7] / tf.constant([480.0, 640.0, 480.0, 640.0])
      seed = tf.stack([i, tf.constant(1, tf.int64)])
      example = {'image': image, 'boxes': boxes, 'classes': tf.zeros([7], tf.int32),
                 'image_id': 0}
      if stage == 'augment':
        out = augmenter(example, seed)
        return summary(out['source']) + (out['view_valid'], out['colour_params'])
      return pipeline.preprocess(example, config=config, augmenter=augmenter,
                                 seed=seed)['image']
    return fn

  boxes_all = tf.constant(np.stack([np.resize(r.boxes, (7, 4)) for r in records]), tf.float32)

  def rate(iterator_fn, n):
    it = iterator_fn()
    for _ in range(max(2, 32 // args.batch)):  # warm-up: tracing, thread pools, autotune
      next(it)
    t0 = time.perf_counter()
    done = 0
    while done < n:
      out = next(it)
      done += args.batch
    jax.block_until_ready(out) if isinstance(out, dict) else None
    return done / (time.perf_counter() - t0)

  results = {}
  for stage in ('read', 'decode', 'augment', 'resize'):
    def make(stage=stage):
      ds = tf.data.Dataset.range(10**9).map(per_example(stage),
                                            num_parallel_calls=args.worker_cores,
                                            deterministic=True)
      ds = ds.batch(args.batch)
      return iter(ds.prefetch(2).with_options(options).as_numpy_iterator())
    results[stage] = rate(make, args.images)
    print(f'[{args.worker_cores} cores] {stage}: {results[stage]:.1f} images/s', flush=True)
  results['batch'] = rate(
      lambda: iter(pipeline.make_train_iterator(config, facts, dataset=dataset)), args.images)
  print(f'[{args.worker_cores} cores] batch: {results["batch"]:.1f} images/s', flush=True)
  mesh = sharding.make_mesh(config.mesh)
  keys = train.train_keys()

  def handed_over():
    for b in pipeline.make_train_iterator(config, facts, dataset=dataset):
      yield sharding.to_global(b, mesh, keys)
  results['hand-over'] = rate(handed_over, args.images)
  print(f'[{args.worker_cores} cores] hand-over: {results["hand-over"]:.1f} images/s',
        flush=True)
  return results


def table(per_cores: dict[int, dict]) -> str:
  """Rows: stages; cells: images/s of the pipeline up to that stage (the stage's own ms per
  image, i.e. the difference to the previous row)."""
  cores = sorted(per_cores)
  lines = ['| stage | ' + ' | '.join(f'{c} core{"s" * (c > 1)}: images/s (stage ms/image)'
                                    for c in cores) + ' |', '|---|' + '---|' * len(cores)]
  for i, stage in enumerate(STAGES):
    cells = []
    for c in cores:
      r = per_cores[c]
      if stage not in r:
        cells.append('failed')
        continue
      prev = 1e3 / r[STAGES[i - 1]] if i else 0.0
      cells.append(f'{r[stage]:.1f} ({1e3 / r[stage] - prev:+.2f})')
    lines.append(f'| {stage} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cores', default='1,2')
  parser.add_argument('--images', type=int, default=400, help='images timed per stage')
  parser.add_argument('--num_files', type=int, default=200)
  parser.add_argument('--size', type=int, default=512)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--data_dir', default=os.path.join(REPO, 'data_cache', 'bench_coco640'))
  parser.add_argument('--out', default=os.path.join(REPO, 'runs', 'input_pipeline.md'))
  parser.add_argument('--worker_cores', type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument('--annotations', default='', help=argparse.SUPPRESS)
  parser.add_argument('--json', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker_cores:
    res = measure(args)
    with open(args.json, 'w') as f:
      json.dump(res, f)
    return 0
  cores = [int(c) for c in args.cores.split(',') if c]
  available = len(os.sched_getaffinity(0))
  if not cores or min(cores) < 1 or max(cores) > available:
    parser.error(f'--cores must be in 1..{available}, got {args.cores}')
  if args.images < args.batch or args.batch < 1:
    parser.error('--images must be >= --batch >= 1')
  ann = make_dataset(args.data_dir, args.num_files)
  per_cores = {}
  for c in cores:
    json_path = f'{args.out}.{c}cores.json'
    cmd = [sys.executable, os.path.abspath(__file__), '--worker_cores', str(c), '--annotations',
           ann, '--json', json_path, '--images', str(args.images), '--size', str(args.size),
           '--batch', str(args.batch)]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
    proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    per_cores[c] = json.load(open(json_path)) if proc.returncode == 0 else {}
  text = (f'Machine: {machine_kind()}. Training input pipeline, the zoo 512 recipe, batch '
          f'{args.batch}, 640x480 JPEGs; `python benchmarks/input_pipeline.py --cores '
          f'{args.cores} --images {args.images}`.\n\n' + table(per_cores) + '\n')
  print('\n' + text)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    f.write(text)
  return 0 if all(per_cores.values()) else 1


if __name__ == '__main__':
  sys.exit(main())
