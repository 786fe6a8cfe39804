r"""Our side of benchmarks/serving.py: a variant's workdir at random weights, and the in-process
`inference.Predictor` worker.

  python benchmarks/serving_ours.py write_workdir --variant mnv2fpn --workdir DIR [--tiny]
  python benchmarks/serving_ours.py predictor --workdir DIR --images IMAGES.npz --threads N

`write_workdir`: the variant's zoo experiment file (benchmarks/device_suite.py's `load_config`;
`--tiny`: input 64 and narrow models, for the CPU check of the machinery), 90 classes with
the zoo's label map (channel = COCO id - 1), He-normal random weights without compiling
`model.init` (`model_variables.filled_variables`), written as the importer writes a workdir
(`import_tf_checkpoint.write_workdir`: step 0, side files), so `python -m centernet_jax.export`
and `Predictor.from_workdir` read it like any trained run.

`predictor`: `Predictor.from_workdir(DIR, batch_size=1)` and `batch_size=8`, serving the
requests of benchmarks/serving_worker.py on the same images: `b1` runs the 8 images through
the batch-1 predictor (8 calls), `b8` through the batch-8 one (one call); each includes the
Predictor's own host preprocessing (evaluation's resize + pad, per image) and fetching the
detections to numpy, as `python -m centernet_jax.detect` runs it.
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import jax

from centernet_jax import import_tf_checkpoint
from centernet_jax import inference
from centernet_jax import model_variables
from centernet_jax import run_files
from device_suite import load_config
from serving_worker import BATCH, load_images, pin_threads, serve

NUM_CLASSES = 90  # every box row of the zoo: COCO ids 1..90, channel = id - 1
# --variant -> the zoo row's experiment file; the names are parity/odapi_build.py's variants.
EXPERIMENTS = {
    'r50v1fpn': 'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8',
    'mnv2fpn': 'centernet_mobilenetv2fpn_512x512_coco17_od',
}


def write_random_workdir(variant: str, workdir: str, tiny: bool, seed: int = 0) -> int:
  """Writes the variant's run at random weights into `workdir`; returns its input size S
  (pixels, square)."""
  config = load_config(EXPERIMENTS[variant], tiny)
  config.model.num_classes = NUM_CLASSES
  config.dataset.label_map_mode = 'id_minus_one'
  run = run_files.RunFiles(
      config, run_files.label_map_json(import_tf_checkpoint.zoo_label_map(NUM_CLASSES)), None)
  size = int(config.input.size)
  variables = model_variables.filled_variables(run_files.build_model(run), size, seed)
  import_tf_checkpoint.write_workdir(workdir, run, variables, {
      'random_weights': {'seed': seed, 'writer': 'benchmarks/serving_ours.py',
                         'experiment': EXPERIMENTS[variant], 'tiny': tiny}})
  return size


def predictor_worker(workdir: str, images_path: str, threads: int) -> None:
  """Serves `b1` and `b8` (see the module docstring) until 'quit'."""
  pinned = pin_threads(threads)
  images = list(load_images(images_path))
  one = inference.Predictor.from_workdir(workdir, batch_size=1)
  eight = inference.Predictor.from_workdir(workdir, batch_size=BATCH)
  serve({'b1': lambda: list(one(images)), 'b8': lambda: list(eight(images))},
        {'jax_version': jax.__version__, 'threads': pinned})


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  write = sub.add_parser('write_workdir')
  write.add_argument('--variant', required=True, choices=sorted(EXPERIMENTS))
  write.add_argument('--workdir', required=True)
  write.add_argument('--tiny', action='store_true')
  serve_args = sub.add_parser('predictor')
  serve_args.add_argument('--workdir', required=True)
  serve_args.add_argument('--images', required=True)
  serve_args.add_argument('--threads', type=int, required=True)
  args = parser.parse_args()
  if args.command == 'write_workdir':
    print(write_random_workdir(args.variant, args.workdir, args.tiny))
  else:
    predictor_worker(args.workdir, args.images, args.threads)
  return 0


if __name__ == '__main__':
  sys.exit(main())
