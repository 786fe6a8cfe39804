r"""Compares two training runs: the latest checkpoint of each workdir, leaf by leaf, and their
`eval_metrics.json`. For checking that a run on N processes / devices equals one on another
count (docs/scaling.md, "Same result on any device count").

  python tools/compare_runs.py runs/demo_2x2 runs/demo_1x4

Prints, per part of the train state (params, batch_stats, opt_state, step), the largest
absolute difference, the largest difference relative to that leaf's largest magnitude, and the
leaf where it occurs; then every eval metric side by side. Exit status 1 when the two states do
not have the same structure and shapes.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from centernet_jax import checkpointing
from centernet_jax import file_io


def latest_state(workdir: str):
  """(step, the saved train state as a nested dict of numpy arrays) of `workdir`."""
  manager = checkpointing.make_manager(workdir, read_only=True)
  step = manager.latest_step()
  if step is None:
    raise SystemExit(f'{workdir}: no checkpoint under {checkpointing.checkpoint_dir(workdir)}')
  path = checkpointing.checkpoint_dir(workdir) / str(step) / checkpointing.STATE
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    # The saved shardings name the writer's devices; read everything onto one device here.
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, 'item_metadata', metadata)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          getattr(tree, 'tree', tree))
    state = checkpointer.restore(path, target)
  manager.close()
  return step, jax.tree.map(np.asarray, state)


def leaf_differences(a, b) -> dict[str, tuple[float, float, str]]:
  """Top-level key -> (max |a - b|, max |a - b| / max |a| of the leaf, worst leaf path)."""
  out = {}
  for part in sorted(set(a) | set(b)):
    if part not in a or part not in b:
      raise ValueError(f'{part!r} is in only one of the two states')
    flat_a = jax.tree_util.tree_flatten_with_path(a[part])[0]
    flat_b = dict(jax.tree_util.tree_flatten_with_path(b[part])[0])
    if len(flat_a) != len(flat_b):
      raise ValueError(f'{part}: {len(flat_a)} vs {len(flat_b)} leaves')
    max_abs, max_rel, worst_leaf = 0.0, 0.0, ''
    for path, x in flat_a:
      y = flat_b.get(path)
      name = jax.tree_util.keystr(path)
      if y is None or np.shape(x) != np.shape(y):
        raise ValueError(f'{part}{name}: shape {np.shape(x)} vs '
                         f'{None if y is None else np.shape(y)}')
      x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
      diff = float(np.max(np.abs(x - y))) if x.size else 0.0
      scale = float(np.max(np.abs(x))) if x.size else 0.0
      rel = diff / scale if scale > 0 else diff
      max_abs = max(max_abs, diff)
      if rel > max_rel:
        max_rel, worst_leaf = rel, name
    out[part] = (max_abs, max_rel, worst_leaf)
  return out


def _metrics(workdir: str) -> dict:
  path = file_io.join(workdir, 'eval_metrics.json')
  return file_io.read_json(path) if file_io.exists(path) else {}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('workdir_a')
  p.add_argument('workdir_b')
  args = p.parse_args(argv)
  step_a, state_a = latest_state(args.workdir_a)
  step_b, state_b = latest_state(args.workdir_b)
  print(f'A: {args.workdir_a} (step {step_a})\nB: {args.workdir_b} (step {step_b})\n')
  try:
    diffs = leaf_differences(state_a, state_b)
  except ValueError as e:
    print(f'different structure: {e}')
    return 1
  print('| state part | max abs diff | max rel diff (to the leaf max) | at |')
  print('|---|---|---|---|')
  for part, (diff, rel, where) in diffs.items():
    print(f'| {part} | {diff:.3g} | {rel:.3g} | `{where}` |')
  metrics_a, metrics_b = _metrics(args.workdir_a), _metrics(args.workdir_b)
  if metrics_a or metrics_b:
    print('\n| metric | A | B | diff |\n|---|---|---|---|')
    for k in sorted(set(metrics_a) | set(metrics_b)):
      va, vb = metrics_a.get(k), metrics_b.get(k)
      d = (f'{abs(va - vb):.3g}' if isinstance(va, (int, float)) and
           isinstance(vb, (int, float)) else '')
      print(f'| {k} | {va} | {vb} | {d} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
