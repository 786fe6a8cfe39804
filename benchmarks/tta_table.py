r"""COCO AP of one trained checkpoint under each test-time augmentation, on any COCO-format set.

  python benchmarks/tta_table.py --workdir runs/demo --config experiments/demo.py \
      [--val_annotations A.json --val_images DIR] [--modes none,flip,multiscale,flip_multiscale] \
      [--out runs/tta_table.md]

Without --val_annotations it evaluates the experiment's own val split; with them, the
checkpoint is evaluated on that COCO-format set through the `coco_json` source (a held-out set:
its category ids must be the run's). `--heldout_seed N` first generates the embedded synthetic
generator's set with seed N (never the demo's seed 0, so none of its images was seen in
training) under --heldout_dir and evaluates on its val split.

Each mode is one `python -m centernet_jax.main --mode eval` process (what a user runs) on one
scratch copy of the workdir, made once (every evaluation rewrites its eval files), timed from
start to end; the table gives AP, AP50, AP75, AR100 and that wall time, with the machine kind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from machine import machine_kind

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ('none', 'flip', 'multiscale', 'flip_multiscale')
COLUMNS = ('AP', 'AP50', 'AP75', 'AR100')


def generate_heldout(config: str, seed: int, out_dir: str, num_val: int) -> tuple[str, str]:
  """The synthetic generator's set with `seed`; returns its (val annotations, val images)."""
  if seed == 0:
    raise ValueError('--heldout_seed=0 is the demo\'s own training seed: pick another')
  cmd = [sys.executable, '-m', 'centernet_jax.data.synthetic', '--config', config,
         '--out_dir', out_dir, f'--config.dataset.synthetic_seed={seed}',
         '--config.dataset.synthetic_num_train=1', f'--config.dataset.synthetic_num_val={num_val}']
  subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
  return (os.path.join(out_dir, 'annotations', 'instances_val.json'),
          os.path.join(out_dir, 'val'))


def evaluate(workdir: str, config: str, mode: str, overrides: list[str]) -> dict[str, float]:
  """AP and friends of `main --mode eval` with `eval.tta=mode` in `workdir`, plus its wall time."""
  cmd = [sys.executable, '-m', 'centernet_jax.main', '--config', config, '--workdir', workdir,
         '--mode', 'eval', f'--config.eval.tta={mode}', '--config.eval.image_summaries=False',
         *overrides]
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if proc.returncode != 0:
    raise RuntimeError(f'eval with tta={mode} failed:\n{proc.stderr[-3000:]}')
  with open(os.path.join(workdir, 'eval_metrics.json')) as f:
    metrics = json.load(f)
  return {**{k: float(metrics[k]) for k in COLUMNS}, 'step': int(metrics['step']),
          'seconds': seconds}


def table(rows: dict[str, dict[str, float]], header: str) -> str:
  lines = [header, '', '| `eval.tta` | ' + ' | '.join(COLUMNS) + ' | eval wall s |',
           '|---|' + '---|' * (len(COLUMNS) + 1)]
  for mode, r in rows.items():
    lines.append(f'| `{mode}` | ' + ' | '.join(f'{r[k]:.4f}' for k in COLUMNS) +
                 f' | {r["seconds"]:.0f} |')
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--config', required=True, help='the run\'s experiment file')
  parser.add_argument('--val_annotations', default='')
  parser.add_argument('--val_images', default='')
  parser.add_argument('--heldout_seed', type=int, default=None)
  parser.add_argument('--heldout_num_val', type=int, default=500)
  parser.add_argument('--heldout_dir', default=os.path.join(REPO, 'data_cache', 'tta_heldout'))
  parser.add_argument('--modes', default=','.join(MODES))
  parser.add_argument('--out', default=os.path.join(REPO, 'runs', 'tta_table.md'))
  args = parser.parse_args()
  modes = [m for m in args.modes.split(',') if m]
  unknown = sorted(set(modes) - set(MODES))
  if unknown:
    parser.error(f'--modes: unknown {unknown}; one of {MODES}')
  if args.heldout_seed is not None and args.val_annotations:
    parser.error('--heldout_seed generates the set: give it or --val_annotations, not both')
  if bool(args.val_annotations) != bool(args.val_images):
    parser.error('--val_annotations and --val_images go together')
  if not os.path.isdir(os.path.join(args.workdir, 'checkpoints')):
    parser.error(f'--workdir {args.workdir}: no checkpoints/ folder (train it first)')

  annotations, images = args.val_annotations, args.val_images
  if args.heldout_seed is not None:
    annotations, images = generate_heldout(args.config, args.heldout_seed, args.heldout_dir,
                                           args.heldout_num_val)
  overrides = []
  where = 'the experiment\'s own val split'
  if annotations:
    overrides = ['--config.dataset.source=coco_json',
                 f'--config.dataset.val_annotations={os.path.abspath(annotations)}',
                 f'--config.dataset.val_images={os.path.abspath(images)}']
    where = f'{annotations}'
  rows = {}
  # One scratch copy for all modes: each evaluation rewrites the workdir's eval files, which
  # are read before the next one starts; the user's workdir is left as it was.
  with tempfile.TemporaryDirectory() as scratch:
    copy = os.path.join(scratch, 'run')
    shutil.copytree(args.workdir, copy,
                    ignore=shutil.ignore_patterns('events.out.tfevents*', 'detections'))
    for mode in modes:
      rows[mode] = evaluate(copy, args.config, mode, overrides)
      print(f'{mode}: ' + ', '.join(f'{k}={v:.4f}' for k, v in rows[mode].items()), flush=True)
  step = {r['step'] for r in rows.values()}
  header = (f'TTA on {where}: checkpoint step {", ".join(map(str, sorted(step)))} of '
            f'{args.workdir} ({args.config}); {machine_kind()}.\n'
            f'Command: `python {" ".join(sys.argv)}`')
  text = table(rows, header)
  print(text)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    f.write(text)


if __name__ == '__main__':
  main()
