r"""Hyperparameter sweeps: expand an experiment's `get_sweep()` into runs, launch, tabulate.

  python -m launch.sweep --config experiments/x.py --workdir runs/sweep_x [--dry_run]
  python -m launch.sweep --config experiments/x.py --workdir gs://B/sweeps/x \
      --launcher tpu_vm --name my-tpu --zone us-central2-b --accelerator_type v4-32
  python -m launch.sweep --config experiments/x.py --workdir /shared/sweeps/x \
      --launcher slurm --nodes 1 --gpus_per_node 8 --partition gpu
  python -m launch.sweep --config experiments/x.py --workdir runs/sweep_x --collect_only

The experiment file defines `get_sweep()` returning a list of override dicts (build it with
`launch.sweep_utils`). Each point becomes a run named after its overrides (a readable slug plus
a hash of the overrides, stable across invocations) with workdir ROOT/<name>. A run whose
`eval_metrics.json` step has reached the config's `num_train_steps` (after its overrides) is
skipped; any other run is (re)launched, and `centernet_jax.main` resumes it from its last
checkpoint. `local` runs the points one after another here; `tpu_vm` runs them one after
another on an existing slice (`launch.tpu_vm create setup` first); `slurm` and `k8s` submit one
job per point. Arguments this tool does not know go to the launcher; `--config.x=y` applies to
every run (under the sweep's own overrides).

Finally every run's `eval_metrics.json` and overrides are collected into ROOT/results.csv and
ROOT/results.md, sorted by `--metric` (descending), and the Markdown table is printed.
`--collect_only` does only that. ROOT/sweep.json records every run ever launched from ROOT, so
the table keeps runs that a later edit of `get_sweep()` dropped.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import hashlib
import inspect
import io
import json
import pathlib
import re
import sys
from typing import Any, Mapping, Sequence

from centernet_jax import experiments
from centernet_jax import plots
from launch import common

LAUNCHERS = ('local', 'tpu_vm', 'slurm', 'k8s')
# The order of COCO box metrics in the table (others follow alphabetically).
METRIC_ORDER = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm',
                'ARl')


# ---------------------------------------------------------------------------------------------
# Files: local paths or gs:// through etils.epath.


def _path(p: str):
  if '://' in str(p):
    from etils import epath  # pylint: disable=g-import-not-at-top
    return epath.Path(p)
  return pathlib.Path(p)


def join(root: str, name: str) -> str:
  return f'{str(root).rstrip("/")}/{name}'


def read_json(path: str) -> Any | None:
  """The parsed file, or None if it does not exist."""
  p = _path(path)
  if not p.exists():
    return None
  return json.loads(p.read_text())


def write_text(path: str, text: str) -> None:
  p = _path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_text(text)


# ---------------------------------------------------------------------------------------------
# Experiment file and naming.


def load_experiment(config: str):
  """Imports an experiment file (`path.py` or `path.py:arg`); returns (module, arg)."""
  path, arg = experiments.split_spec(config)
  if str(common.REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(common.REPO_ROOT))  # experiments import `tests.tiny`, `launch`, ...
  return experiments.load_module(path), arg


def _call(fn, arg):
  params = inspect.signature(fn).parameters
  return fn(arg) if arg is not None and params else fn()


def sweep_points(module, arg=None) -> list[dict[str, Any]]:
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'{module.__file__} has no get_sweep()')
  points = _call(module.get_sweep, arg)
  if not isinstance(points, (list, tuple)) or not all(isinstance(p, Mapping) for p in points):
    raise TypeError('get_sweep() must return a list of override dicts')
  return [dict(p) for p in points]


def _canonical(overrides: Mapping[str, Any]) -> dict[str, str]:
  return {k: common.format_value(v) for k, v in sorted(overrides.items())}


def override_hash(overrides: Mapping[str, Any]) -> str:
  """8 hex digits of a SHA-1 over the sorted, formatted overrides (key order does not matter)."""
  text = json.dumps(_canonical(overrides), sort_keys=True)
  return hashlib.sha1(text.encode()).hexdigest()[:8]


def run_name(overrides: Mapping[str, Any], max_slug: int = 80,
             shown: Sequence[str] | None = None) -> str:
  """A filesystem-safe, stable run name from the overrides.

  `{'optimizer.learning_rate': 1e-3, 'batch_size': 16}` ->
  `batch_size=16,learning_rate=0.001-73451e91`.

  Keys are shortened to their last part unless two would clash; characters outside
  `[A-Za-z0-9._=,+-]` become `_`; the slug is cut at `max_slug` characters; the hash (over
  all the overrides) keeps names unique and stable. `shown`: the keys to spell out in the slug
  (the others count in the hash only); None: all of them.
  """
  if not overrides:
    return 'default'
  canonical = _canonical(overrides)
  if shown is not None:
    canonical = {k: v for k, v in canonical.items() if k in shown} or canonical
  leaves = [k.rsplit('.', 1)[-1] for k in canonical]
  parts = []
  for (key, value), leaf in zip(canonical.items(), leaves):
    parts.append(f'{leaf if leaves.count(leaf) == 1 else key}={value}')
  slug = re.sub(r'[^A-Za-z0-9._=,+-]+', '_', ','.join(parts)).strip('_.')[:max_slug]
  return f'{slug}-{override_hash(overrides)}'


@dataclasses.dataclass
class Run:
  name: str
  overrides: dict[str, Any]
  workdir: str


def varying_keys(points: Sequence[Mapping[str, Any]]) -> list[str]:
  """The override keys whose value is not the same in every point (all keys for one point)."""
  if len(points) < 2:
    return sorted({k for p in points for k in p})
  canon = [_canonical(p) for p in points]
  keys = sorted({k for c in canon for k in c})
  return [k for k in keys if len({c.get(k) for c in canon}) > 1]


def expand(points: Sequence[Mapping[str, Any]], root: str,
           recorded: Mapping[str, Mapping[str, Any]] | None = None) -> list[Run]:
  """One Run per sweep point, in order; duplicate points are an error.

  Names spell out the fields that vary across the points (the others only count in the
  hash). `recorded` ({name: overrides}, ROOT/sweep.json's runs): a point recorded there keeps
  its name, so editing the sweep never renames (and so never restarts) an existing run.
  """
  by_overrides = {json.dumps(_canonical(o), sort_keys=True): name
                  for name, o in (recorded or {}).items()}
  shown = varying_keys(points)
  runs, seen = [], {}
  for i, point in enumerate(points):
    name = (by_overrides.get(json.dumps(_canonical(point), sort_keys=True))
            or run_name(point, shown=shown))
    if name in seen:
      raise ValueError(f'sweep points {seen[name]} and {i} are the same run ({name})')
    seen[name] = i
    runs.append(Run(name, dict(point), join(root, name)))
  return runs


# ---------------------------------------------------------------------------------------------
# Configs, status, results.


def apply_overrides(config, overrides: Mapping[str, Any]):
  """Sets dotted fields on a ConfigDict (checking that they exist); returns the config."""
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(f'override {key}: the config has no field {leaf!r} there')
    node[leaf] = _coerce(key, node[leaf], value)
  return config


def _coerce(key: str, current: Any, value: Any) -> Any:
  """The value in the field's type: sweep values are Python values, command-line ones text."""
  if isinstance(value, str) and not isinstance(current, str) and current is not None:
    try:
      if isinstance(current, bool):
        if value.lower() not in ('true', 'false', '1', '0'):
          raise ValueError(value)
        return value.lower() in ('true', '1')
      if isinstance(current, (int, float)):
        return type(current)(value)
      return ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
      raise ValueError(f'override {key}={value!r}: not a {type(current).__name__}') from e
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    return tuple(value)
  return value


def target_steps(module, arg, overrides: Mapping[str, Any],
                 cli_overrides: Mapping[str, Any] | None = None) -> int:
  """`num_train_steps` of the experiment's config with the run's overrides applied."""
  config = _call(module.get_config, arg)
  apply_overrides(config, {**(cli_overrides or {}), **overrides})
  return int(config.num_train_steps)


def run_status(workdir: str, num_train_steps: int) -> tuple[str, dict[str, Any] | None]:
  """('finished' | 'partial' | 'new', the eval metrics or None).

  Finished: the last evaluation (`eval_metrics.json`) is at num_train_steps or later.
  Partial: the workdir exists (it has checkpoints or an earlier evaluation): re-running resumes.
  """
  metrics = read_json(join(workdir, 'eval_metrics.json'))
  if metrics is not None and int(metrics.get('step', -1)) >= num_train_steps:
    return 'finished', metrics
  if metrics is not None or _path(workdir).exists():
    return 'partial', metrics
  return 'new', None


def _cli_overrides(args_overrides: Sequence[str]) -> dict[str, str]:
  out = {}
  for item in args_overrides:
    key, _, value = item[len('--config.'):].partition('=')
    out[key] = value
  return out


def _is_per_class(key: str) -> bool:
  """evaluate.py's per-class / per-joint entries (PER_CLASS_PREFIX, PER_JOINT_PREFIX): one
  column per class would bury the table; they stay in each run's eval_per_class.md."""
  return key.startswith('per_class/') or key.startswith('keypoints/per_joint/')


def _metric_columns(rows: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
  present = {k for row in rows for k in row.get('metrics', {})
              if k != 'step' and not _is_per_class(k)}
  ordered = [m for m in METRIC_ORDER if m in present]
  ordered += sorted(present - set(ordered))
  if metric in ordered:
    ordered.remove(metric)
    ordered.insert(0, metric)
  return ordered


def sort_rows(rows: Sequence[Mapping[str, Any]], metric: str) -> list[Mapping[str, Any]]:
  """Descending by metric; rows without it (or with NaN) last, in their original order."""
  def key(item):
    index, row = item
    value = row.get('metrics', {}).get(metric)
    ok = isinstance(value, (int, float)) and value == value
    return (0, -value, index) if ok else (1, 0, index)
  return [row for _, row in sorted(enumerate(rows), key=key)]


def results_tables(rows: Sequence[Mapping[str, Any]], metric: str) -> tuple[str, str]:
  """(CSV text, Markdown text) of the runs, sorted by metric descending."""
  override_keys: list[str] = []  # in sweep order, whatever the sorting
  for row in rows:
    for key in row['overrides']:
      if key not in override_keys:
        override_keys.append(key)
  rows = sort_rows(rows, metric)
  metric_keys = _metric_columns(rows, metric)

  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(['name', 'status', 'step', *override_keys, *metric_keys, 'workdir'])
  for row in rows:
    m = row.get('metrics') or {}
    writer.writerow([row['name'], row['status'], m.get('step', ''),
                     *[common.format_value(row['overrides'][k]) if k in row['overrides'] else ''
                       for k in override_keys],
                     *[m.get(k, '') for k in metric_keys], row['workdir']])

  def cell(value: Any) -> str:
    if isinstance(value, float):
      text = f'{value:.4f}'
    else:
      text = '' if value is None else str(value)
    return text.replace('|', '\\|')

  header = ['#', 'name', 'status', 'step', *override_keys, *metric_keys]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(['---'] * len(header)) + '|']
  for i, row in enumerate(rows, 1):
    m = row.get('metrics') or {}
    cells = [str(i), row['name'], row['status'], cell(m.get('step')),
             *[cell(common.format_value(row['overrides'][k])) if k in row['overrides'] else ''
               for k in override_keys],
             *[cell(m.get(k)) for k in metric_keys]]
    lines.append('| ' + ' | '.join(cells) + ' |')
  title = f'Sorted by {metric} (descending); {len(rows)} run(s).'
  return buf.getvalue(), title + '\n\n' + '\n'.join(lines) + '\n'


def collect(runs: Sequence[Run], module, arg, root: str, metric: str,
            cli_overrides: Mapping[str, Any] | None = None, write: bool = True,
            out=None) -> list[dict[str, Any]]:
  """Reads every run's metrics, writes ROOT/results.csv and .md, prints the table."""
  out = out or sys.stdout
  rows = []
  for run in runs:
    try:
      steps = target_steps(module, arg, run.overrides, cli_overrides)
    except (KeyError, ValueError, TypeError):  # a run recorded by an older get_sweep()
      steps = None
    status, metrics = run_status(run.workdir, steps if steps is not None else float('inf'))
    if steps is None and metrics:
      status = 'unknown'
    rows.append({'name': run.name, 'overrides': run.overrides, 'workdir': run.workdir,
                 'status': status, 'metrics': metrics or {}})
  csv_text, md_text = results_tables(rows, metric)
  if write:
    write_text(join(root, 'results.csv'), csv_text)
    write_text(join(root, 'results.md'), md_text)
  out.write(md_text)
  if write:
    out.write(f'(written to {join(root, "results.csv")} and {join(root, "results.md")})\n')
    write_plot(rows, root, metric, out)
  out.flush()
  return rows


def read_history(workdir: str) -> list[dict[str, Any]]:
  """The run's evaluations in order (eval_metrics_history.jsonl; [] when it has none)."""
  path = _path(join(workdir, 'eval_metrics_history.jsonl'))
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_plot(rows: Sequence[Mapping[str, Any]], root: str, metric: str, out) -> None:
  """ROOT/results.png: `metric` against each varied field and against the training step.
  A plotting failure is reported and skipped: the table above is the result."""
  try:
    fields = varying_keys([row['overrides'] for row in rows])
    histories = {row['name']: read_history(row['workdir']) for row in rows}
    _path(join(root, 'results.png')).write_bytes(
        plots.sweep_png(rows, metric, fields, histories))
    out.write(f'(plot: {join(root, "results.png")})\n')
  except Exception as e:  # pylint: disable=broad-except
    out.write(f'(no plot: {type(e).__name__}: {e})\n')


def record_runs(root: str, config: str, runs: Sequence[Run]) -> None:
  """Merges the runs into ROOT/sweep.json ({name: overrides})."""
  path = join(root, 'sweep.json')
  data = read_json(path) or {'config': config, 'runs': {}}
  for run in runs:
    data['runs'][run.name] = {k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in run.overrides.items()}
  write_text(path, json.dumps(data, indent=2, sort_keys=True) + '\n')


def known_runs(root: str, runs: Sequence[Run]) -> list[Run]:
  """The sweep's runs plus those in ROOT/sweep.json that it no longer produces."""
  data = read_json(join(root, 'sweep.json')) or {'runs': {}}
  names = {r.name for r in runs}
  extra = [Run(name, dict(overrides), join(root, name))
           for name, overrides in data['runs'].items() if name not in names]
  return list(runs) + extra


# ---------------------------------------------------------------------------------------------
# Launching.


def _k8s_name(root: str, run: Run) -> str:
  base = re.sub(r'[^a-z0-9-]+', '-', str(root).rstrip('/').rsplit('/', 1)[-1].lower()).strip('-')
  base = (base or 'sweep')[:24].strip('-')
  if not base[0].isalpha():
    base = 's' + base
  return f'{base}-{override_hash(run.overrides)}'


def launch_run(run: Run, args: argparse.Namespace, launcher_args: Sequence[str],
               runner: common.Runner) -> int:
  """Starts (local, tpu_vm: runs to the end) or submits (slurm, k8s) one run."""
  overrides = [*args.overrides, *common.override_args(run.overrides)]
  dry = ['--dry_run'] if args.dry_run else []
  if args.launcher == 'local':
    command = common.train_command(args.config, run.workdir, overrides, python=sys.executable)
    log = None if args.dry_run or '://' in args.workdir else join(args.workdir,
                                                                 f'_logs/{run.name}.log')
    return runner.run(command, log_path=log, check=False)
  if args.launcher == 'tpu_vm':
    from launch import tpu_vm  # pylint: disable=g-import-not-at-top
    return tpu_vm.main([*launcher_args, 'run', '--config', args.config, '--workdir',
                        run.workdir, '--run_name', run.name, *overrides, *dry], out=runner.out)
  if args.launcher == 'slurm':
    from launch import slurm  # pylint: disable=g-import-not-at-top
    job_name = re.sub(r'[^A-Za-z0-9_.+-]+', '_', run.name)
    return slurm.main([*launcher_args, '--config', args.config, '--workdir', run.workdir,
                       '--job_name', job_name, *overrides, *dry], out=runner.out)
  if args.launcher == 'k8s':
    from launch import k8s  # pylint: disable=g-import-not-at-top
    return k8s.main([*launcher_args, '--config', args.config, '--workdir', run.workdir,
                     '--name', _k8s_name(args.workdir, run), *overrides, *dry], out=runner.out)
  raise ValueError(f'unknown launcher {args.launcher!r}')


def make_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m launch.sweep', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', required=True,
                 help='Experiment file with get_config() and get_sweep().')
  p.add_argument('--workdir', required=True, help='ROOT: run i goes to ROOT/<name of run i>.')
  p.add_argument('--launcher', choices=LAUNCHERS, default='local')
  p.add_argument('--metric', default='AP', help='Sort the results by this metric (descending).')
  p.add_argument('--only', default=None, help='Regex: launch only runs whose name matches.')
  p.add_argument('--rerun_finished', action='store_true',
                 help='Launch finished runs too (main then only re-evaluates if needed).')
  p.add_argument('--collect_only', action='store_true', help='Only write the results table.')
  p.add_argument('--dry_run', action='store_true', help='Print the plan and commands only.')
  return p


def main(argv: Sequence[str] | None = None, out=None) -> int:
  parser = make_parser()
  args, unknown = parser.parse_known_args(argv)
  args.overrides, launcher_args = common.split_overrides(unknown)
  if launcher_args and args.launcher == 'local':
    parser.error(f'unrecognized arguments: {" ".join(launcher_args)}')
  out = out or sys.stdout
  runner = common.Runner(dry_run=args.dry_run, out=out)

  module, arg = load_experiment(args.config)
  recorded = (read_json(join(args.workdir, 'sweep.json')) or {}).get('runs', {})
  runs = expand(sweep_points(module, arg), args.workdir, recorded)
  cli_overrides = _cli_overrides(args.overrides)
  # Validates every point against the config before anything starts (typos fail here).
  steps = {run.name: target_steps(module, arg, run.overrides, cli_overrides) for run in runs}

  if args.collect_only:
    collect(known_runs(args.workdir, runs), module, arg, args.workdir, args.metric,
            cli_overrides, out=out)
    return 0

  selected = [r for r in runs if not args.only or re.search(args.only, r.name)]
  plan = []
  for run in selected:
    try:
      status, _ = run_status(run.workdir, steps[run.name])
    except Exception as e:  # pylint: disable=broad-except
      # E.g. no GCS credentials on this machine: launch anyway; main resumes or finishes fast.
      runner.comment(f'cannot read {run.workdir} ({type(e).__name__}); treating it as unfinished')
      status = 'unknown'
    plan.append((run, status))
  runner.comment(f'sweep {args.config}: {len(runs)} run(s), {len(selected)} selected, '
                 f'launcher {args.launcher}')
  for run, status in plan:
    action = 'skip' if status == 'finished' and not args.rerun_finished else {
        'partial': 'resume', 'new': 'start'}.get(status, 'launch')
    runner.comment(f'  {action:6s} {run.name}  ({steps[run.name]} steps) -> {run.workdir}')
  if not args.dry_run:
    record_runs(args.workdir, args.config, selected)

  failed = []
  for i, (run, status) in enumerate(plan, 1):
    if status == 'finished' and not args.rerun_finished:
      continue
    runner.comment(f'[{i}/{len(plan)}] {run.name}')
    try:
      code = launch_run(run, args, launcher_args, runner)
    except SystemExit as e:  # a launcher's argparse error: stop, it would repeat for every run
      return int(e.code or 2)
    if code:
      runner.comment(f'{run.name} failed with exit status {code}')
      failed.append(run.name)

  if not args.dry_run:
    collect(known_runs(args.workdir, runs), module, arg, args.workdir, args.metric,
            cli_overrides, out=out)
  if failed:
    runner.comment(f'{len(failed)} run(s) failed: {", ".join(failed)}')
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
