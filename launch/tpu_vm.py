r"""Cloud TPU VM launcher: create a slice, install the code on every host, train, delete.

  python -m launch.tpu_vm all --name cn-r50 --zone us-central2-b --accelerator_type v4-32 \
      --queued --spot --config experiments/demo.py --workdir gs://BUCKET/runs/cn-r50 \
      --env TFDS_DATA_DIR=gs://BUCKET/tfds --config.batch_size=128 [--delete] [--dry_run]

Actions (one or more, in this order): `create` (a queued resource, waited for until ACTIVE, or
a plain `tpu-vm create`), `setup` (copy the code to every host as a tarball, or `git clone` it
there, and install it with `jax[tpu]` into a Python 3.12 venv), `run` (the same train command
on every host through `ssh --worker=all` with CENTERNET_JAX_DISTRIBUTED=1: TPU VMs are
auto-detected by `jax.distributed.initialize()`), `logs` (each host's log of a run), `delete`;
`all` = create, setup, run (and delete with `--delete`).

Output of `run`/`logs` is streamed with a `[wN]` prefix per host and kept in `--log_dir`
(`all.log` and `worker_N.log`); each host also keeps `~/centernet_logs/<run_name>.log`.
Re-running `run` with the same `--workdir` resumes the training from its last checkpoint.
`--dry_run` prints every command and runs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import shlex
import sys
import tempfile
import time
from typing import Mapping, Sequence

from launch import common

# Runtime (software) versions for JAX on each TPU generation (Cloud TPU runtime page).
RUNTIME_VERSIONS = {
    'v2': 'tpu-ubuntu2204-base',
    'v3': 'tpu-ubuntu2204-base',
    'v4': 'tpu-ubuntu2204-base',
    'v5litepod': 'v2-alpha-tpuv5-lite',
    'v5e': 'v2-alpha-tpuv5-lite',
    'v5p': 'v2-alpha-tpuv5',
    'v6e': 'v2-alpha-tpuv6e',
}
ACTIONS = ('create', 'setup', 'run', 'logs', 'delete', 'all')
METADATA_WORKER = ('http://metadata.google.internal/computeMetadata/v1/instance/attributes/'
                   'agent-worker-number')
EXCLUDES = ('.git', '.venv', 'runs', 'data_cache', '__pycache__', '*.egg-info', '.pytest_cache')


def generation(accelerator_type: str) -> str:
  """'v4-32' -> 'v4', 'v5litepod-16' -> 'v5litepod', 'v6e-8' -> 'v6e'."""
  match = re.fullmatch(r'(v\d+[a-z]*)-(\d+)', accelerator_type)
  if not match:
    raise ValueError(f'accelerator type {accelerator_type!r} is not like v4-32 or v5litepod-16')
  return match.group(1)


def default_runtime_version(accelerator_type: str) -> str:
  gen = generation(accelerator_type)
  if gen not in RUNTIME_VERSIONS:
    raise ValueError(f'no default runtime version for {accelerator_type!r}; pass '
                     '--runtime_version (Compute Engine / GKE manage TPU7x and newer)')
  return RUNTIME_VERSIONS[gen]


def remote_path(path: str) -> str:
  """A remote path for a shell: `~/x` becomes `"$HOME/x"` (expanded remotely), others quoted."""
  if path == '~':
    return '"$HOME"'
  if path.startswith('~/'):
    rest = path[2:]
    if not re.fullmatch(r'[A-Za-z0-9_./+-]*', rest):
      raise ValueError(f'remote path {path!r}: use plain characters after ~/')
    return f'"$HOME/{rest}"'
  return shlex.quote(path)


def safe_run_name(name: str) -> str:
  """A log file name that needs no quoting inside double quotes on the hosts."""
  return re.sub(r'[^A-Za-z0-9_.=,+-]+', '_', name).strip('.') or 'run'


def run_name_from_workdir(workdir: str) -> str:
  return safe_run_name(workdir.rstrip('/').rsplit('/', 1)[-1])


@dataclasses.dataclass
class TpuVm:
  """One TPU VM slice and how code gets onto it.

  Attributes:
    name: TPU (node) name.
    zone: e.g. us-central2-b.
    accelerator_type: e.g. v4-32, v5litepod-16, v5p-8, v6e-16.
    runtime_version: software version; default per generation (RUNTIME_VERSIONS).
    project: gcloud project (default: gcloud's configured one).
    queued: create through a queued resource (and wait for ACTIVE) instead of `tpu-vm create`.
    qr_id: queued resource id (default NAME-qr).
    spot, reserved: capacity type (either, not both).
    valid_until_duration: queued request expiry, e.g. 6h.
    code: 'scp' (tarball of this checkout to every host) or 'git' (clone on every host).
    git_url, git_ref: the repository and commit/branch for code='git'.
    remote_dir: where the code lives on the hosts.
    venv: the Python venv on the hosts.
    python_version: the venv's Python (the stack needs >= 3.12; TPU images ship 3.10), made
      with uv, which fetches a standalone build.
    pip_packages: extra pip requirements installed with the code (jax[tpu] always is).
    gcloud_flags: extra flags for every ssh/scp (e.g. --internal-ip, --tunnel-through-iap).
    setup_commands: shell lines run on every host at the end of setup (e.g. fetching the COCO
      val annotations, which are read from a local path).
  """
  name: str
  zone: str
  accelerator_type: str
  runtime_version: str | None = None
  project: str | None = None
  queued: bool = False
  qr_id: str | None = None
  spot: bool = False
  reserved: bool = False
  valid_until_duration: str | None = None
  code: str = 'scp'
  git_url: str | None = None
  git_ref: str | None = None
  remote_dir: str = '~/centernet_jax'
  venv: str = '~/centernet_venv'
  python_version: str = '3.12'
  pip_packages: tuple[str, ...] = ()
  gcloud_flags: tuple[str, ...] = ()
  setup_commands: tuple[str, ...] = ()

  def __post_init__(self):
    generation(self.accelerator_type)  # validates
    if self.runtime_version is None:
      self.runtime_version = default_runtime_version(self.accelerator_type)
    if self.qr_id is None:
      self.qr_id = f'{self.name}-qr'
    if self.spot and self.reserved:
      raise ValueError('--spot and --reserved exclude each other')
    if self.code not in ('scp', 'git'):
      raise ValueError(f'code must be scp or git, got {self.code!r}')
    if self.code == 'git' and not self.git_url:
      raise ValueError('--code=git needs --git_url')

  # -- gcloud commands -------------------------------------------------------------------------

  def _where(self) -> list[str]:
    return ['--zone', self.zone] + (['--project', self.project] if self.project else [])

  def create_command(self) -> list[str]:
    if self.queued:
      cmd = ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', self.qr_id,
             '--node-id', self.name, *self._where(),
             '--accelerator-type', self.accelerator_type,
             '--runtime-version', self.runtime_version]
      if self.valid_until_duration:
        cmd += ['--valid-until-duration', self.valid_until_duration]
    else:
      cmd = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', self.name, *self._where(),
             '--accelerator-type', self.accelerator_type, '--version', self.runtime_version]
    if self.spot:
      cmd.append('--spot')
    if self.reserved:
      cmd.append('--reserved')
    return cmd

  def state_command(self) -> list[str]:
    """Prints the queued resource's state (WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, ...)."""
    return ['gcloud', 'compute', 'tpus', 'queued-resources', 'describe', self.qr_id,
            *self._where(), '--format=value(state.state)']

  def delete_command(self) -> list[str]:
    if self.queued:
      # --force also deletes the TPU VM the queued resource holds.
      return ['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', self.qr_id,
              *self._where(), '--force', '--quiet']
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', self.name, *self._where(),
            '--quiet']

  def ssh_command(self, script: str, worker: str = 'all') -> list[str]:
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', self.name, *self._where(),
            f'--worker={worker}', *self.gcloud_flags, '--command', script]

  def scp_command(self, local: str, remote: str, worker: str = 'all') -> list[str]:
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', local, f'{self.name}:{remote}',
            *self._where(), f'--worker={worker}', *self.gcloud_flags]

  # -- what runs on the hosts ------------------------------------------------------------------

  def tarball_path(self) -> str:
    return str(pathlib.Path(tempfile.gettempdir()) / f'centernet_jax_code_{self.name}.tar.gz')

  def tar_command(self, repo: str | None = None) -> list[str]:
    """Local: packs this checkout (without .git, venvs, runs, caches)."""
    repo = str(repo or common.REPO_ROOT)
    return ['tar', '-czf', self.tarball_path(), *[f'--exclude={e}' for e in EXCLUDES],
            '-C', repo, '.']

  def unpack_script(self) -> str:
    d = remote_path(self.remote_dir)
    return '\n'.join([
        'set -euo pipefail',
        f'rm -rf {d} && mkdir -p {d}',
        f'tar -xzf "$HOME/centernet_jax_code.tar.gz" -C {d}',
    ])

  def clone_script(self) -> str:
    d = remote_path(self.remote_dir)
    lines = ['set -euo pipefail', f'rm -rf {d}',
             f'git clone {shlex.quote(self.git_url)} {d}']
    if self.git_ref:
      lines.append(f'git -C {d} checkout {shlex.quote(self.git_ref)}')
    return '\n'.join(lines)

  def _python(self) -> str:
    return remote_path(self.venv.rstrip('/') + '/bin/python')

  def install_script(self) -> str:
    d, venv, python = remote_path(self.remote_dir), remote_path(self.venv), self._python()
    packages = common.shell_join_readable(('jax[tpu]', *self.pip_packages))
    return '\n'.join([
        'set -euo pipefail',
        'export PATH="$HOME/.local/bin:$PATH"',
        'command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh',
        f'[ -x {python} ] || uv venv --python {self.python_version} {venv}',
        f'cd {d}',
        f'uv pip install --python {python} -e . {packages}',
        f'{python} -c "import jax; print(jax.__version__)"',
    ])

  def _worker_id(self) -> str:
    return f'W=$(curl -sf -H Metadata-Flavor:Google {METADATA_WORKER} || hostname)'

  def train_shell_command(self, train_args: Sequence[str], env: Mapping[str, str]) -> str:
    """`cd DIR && ENV... PYTHON -m centernet_jax.main ARGS` as one shell line."""
    env = {'CENTERNET_JAX_DISTRIBUTED': '1', 'PYTHONUNBUFFERED': '1', **env}
    return ' '.join([f'cd {remote_path(self.remote_dir)} &&', *common.env_assignments(env),
                     self._python(), '-m', common.TRAIN_MODULE,
                     common.shell_join_readable(train_args)])

  def run_script(self, train_args: Sequence[str], env: Mapping[str, str], run_name: str,
                 detach: bool = False) -> str:
    log = f'"$HOME/centernet_logs/{run_name}.log"'
    train = self.train_shell_command(train_args, env)
    lines = ['set -uo pipefail', 'mkdir -p "$HOME/centernet_logs"', self._worker_id()]
    if detach:
      lines += [f'nohup bash -c {shlex.quote(train)} >> {log} 2>&1 < /dev/null &',
                f'echo "[w$W] started pid $! on $(hostname), log {log[1:-1]}"']
    else:
      lines.append(f'{train} 2>&1 | tee -a {log} | sed -u "s/^/[w$W] /"')
    return '\n'.join(lines)

  def logs_script(self, run_name: str, lines: int = 200, follow: bool = False) -> str:
    log = f'"$HOME/centernet_logs/{run_name}.log"'
    tail = f'tail -n {int(lines)}' + (' -F' if follow else '')
    return '\n'.join([self._worker_id(),
                      f'{tail} {log} | sed -u "s/^/[w$W] /"'])


class WorkerLogSplitter:
  """Line handler: prints lines and appends `[wN] ...` lines to LOG_DIR/worker_N.log."""

  _PATTERN = re.compile(r'^\[w(\d+)\] ?')

  def __init__(self, log_dir: pathlib.Path, out=None):
    self.log_dir = pathlib.Path(log_dir)
    self.out = out if out is not None else sys.stdout
    self.log_dir.mkdir(parents=True, exist_ok=True)

  def __call__(self, line: str) -> None:
    self.out.write(line)
    self.out.flush()
    match = self._PATTERN.match(line)
    if match:
      with open(self.log_dir / f'worker_{match.group(1)}.log', 'a', encoding='utf-8') as f:
        f.write(line[match.end():])


# -- actions ------------------------------------------------------------------------------------


def create(runner: common.Runner, tpu: TpuVm, poll_seconds: float = 30.0,
           wait_timeout: float = 0.0) -> None:
  """Creates the slice; for a queued resource, polls until it is ACTIVE."""
  runner.run(tpu.create_command())
  if not tpu.queued:
    return
  if runner.dry_run:
    runner.comment(f'wait for ACTIVE: the next command repeats every {poll_seconds:g} s')
    runner.capture(tpu.state_command())
    return
  start = time.monotonic()
  last = None
  while True:
    state = runner.capture(tpu.state_command())
    if state != last:
      runner.comment(f'queued resource {tpu.qr_id}: {state or "?"}')
      last = state
    if state == 'ACTIVE':
      return
    if state in ('FAILED', 'SUSPENDED', 'SUSPENDING'):
      raise RuntimeError(f'queued resource {tpu.qr_id} is {state}; see `gcloud compute tpus '
                         f'queued-resources describe {tpu.qr_id} --zone {tpu.zone}`')
    if wait_timeout and time.monotonic() - start > wait_timeout:
      raise TimeoutError(f'queued resource {tpu.qr_id} not ACTIVE after {wait_timeout:g} s '
                         f'(last state {state})')
    time.sleep(poll_seconds)


def setup(runner: common.Runner, tpu: TpuVm) -> None:
  """Puts the code on every host and installs it (re-run after changing the code)."""
  if tpu.code == 'scp':
    runner.run(tpu.tar_command())
    runner.run(tpu.scp_command(tpu.tarball_path(), 'centernet_jax_code.tar.gz'))
    runner.run(tpu.ssh_command(tpu.unpack_script()))
  else:
    runner.run(tpu.ssh_command(tpu.clone_script()))
  runner.run(tpu.ssh_command(tpu.install_script()))
  if tpu.setup_commands:
    runner.run(tpu.ssh_command('\n'.join(['set -euo pipefail', *tpu.setup_commands])))


def run(runner: common.Runner, tpu: TpuVm, train_args: Sequence[str], *,
        env: Mapping[str, str] | None = None, run_name: str, log_dir: pathlib.Path,
        detach: bool = False) -> int:
  """Runs `python -m centernet_jax.main TRAIN_ARGS` on every host; returns the exit status."""
  script = tpu.run_script(train_args, env or {}, run_name, detach=detach)
  handler = None if runner.dry_run else WorkerLogSplitter(log_dir, runner.out)
  return runner.run(tpu.ssh_command(script), log_path=None if runner.dry_run else
                    pathlib.Path(log_dir) / 'all.log', line_handler=handler, check=False)


def logs(runner: common.Runner, tpu: TpuVm, *, run_name: str, log_dir: pathlib.Path,
         lines: int = 200, follow: bool = False) -> int:
  handler = None if runner.dry_run else WorkerLogSplitter(log_dir, runner.out)
  return runner.run(tpu.ssh_command(tpu.logs_script(run_name, lines, follow)),
                    line_handler=handler, check=False)


def delete(runner: common.Runner, tpu: TpuVm, check: bool = True) -> int:
  """Deletes the slice (the queued resource and its VM); returns the exit status."""
  return runner.run(tpu.delete_command(), check=check)


# -- command line -------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m launch.tpu_vm', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('actions', nargs='+', choices=ACTIONS, metavar='ACTION',
                 help='create, setup, run, logs, delete, or all')
  p.add_argument('--name', required=True, help='TPU VM name.')
  p.add_argument('--zone', required=True)
  p.add_argument('--project', default=None)
  p.add_argument('--accelerator_type', required=True, help='e.g. v4-32, v5litepod-16, v6e-16.')
  p.add_argument('--runtime_version', default=None,
                 help='Default: ' + ', '.join(f'{k} {v}' for k, v in RUNTIME_VERSIONS.items()))
  p.add_argument('--queued', action='store_true', help='Create via a queued resource.')
  p.add_argument('--qr_id', default=None, help='Queued resource id (default NAME-qr).')
  cap = p.add_mutually_exclusive_group()
  cap.add_argument('--spot', action='store_true')
  cap.add_argument('--reserved', action='store_true')
  p.add_argument('--valid_until_duration', default=None, help='Queued request expiry, e.g. 6h.')
  p.add_argument('--poll_seconds', type=float, default=30.0)
  p.add_argument('--wait_timeout', type=float, default=0.0,
                 help='Seconds to wait for ACTIVE (0: no limit).')
  p.add_argument('--code', choices=['scp', 'git'], default='scp',
                 help='scp: tarball of this checkout; git: clone --git_url on every host.')
  p.add_argument('--git_url', default=None)
  p.add_argument('--git_ref', default=None)
  p.add_argument('--remote_dir', default='~/centernet_jax')
  p.add_argument('--venv', default='~/centernet_venv')
  p.add_argument('--python_version', default='3.12')
  p.add_argument('--pip', action='append', default=[], help='Extra pip requirement (repeat).')
  p.add_argument('--setup_cmd', action='append', default=[],
                 help='Shell line run on every host at the end of setup (repeat).')
  p.add_argument('--gcloud_flag', action='append', default=[],
                 help='Extra flag for every ssh/scp, e.g. --gcloud_flag=--internal-ip (repeat).')
  p.add_argument('--config', default=None, help='Experiment file (repository-relative).')
  p.add_argument('--workdir', default=None, help='gs://... (all hosts must see it).')
  p.add_argument('--mode', default='train', choices=['train', 'eval'])
  p.add_argument('--env', action='append', default=[],
                 help='KEY=VALUE for the train processes, e.g. TFDS_DATA_DIR=gs://... (repeat).')
  p.add_argument('--run_name', default=None, help='Log name (default: last part of --workdir).')
  p.add_argument('--log_dir', default=None,
                 help='Local log dir (default runs/launch_logs/NAME/RUN_NAME).')
  p.add_argument('--detach', action='store_true',
                 help='run: start under nohup and return (follow with `logs --follow`).')
  p.add_argument('--follow', action='store_true', help='logs: keep following.')
  p.add_argument('--lines', type=int, default=200, help='logs: lines of each host log.')
  p.add_argument('--delete', action='store_true',
                 help='Delete the TPU at the end (also when a step failed).')
  p.add_argument('--allow_local_workdir', action='store_true',
                 help='Allow a workdir that is not gs:// (single-host slices only).')
  p.add_argument('--dry_run', action='store_true', help='Print every command, run nothing.')
  return p


def spec_from_args(args: argparse.Namespace) -> TpuVm:
  return TpuVm(name=args.name, zone=args.zone, accelerator_type=args.accelerator_type,
               runtime_version=args.runtime_version, project=args.project, queued=args.queued,
               qr_id=args.qr_id, spot=args.spot, reserved=args.reserved,
               valid_until_duration=args.valid_until_duration, code=args.code,
               git_url=args.git_url, git_ref=args.git_ref, remote_dir=args.remote_dir,
               venv=args.venv, python_version=args.python_version,
               pip_packages=tuple(args.pip), gcloud_flags=tuple(args.gcloud_flag),
               setup_commands=tuple(args.setup_cmd))


def main(argv: Sequence[str] | None = None, out=None) -> int:
  parser = make_parser()
  args = common.parse_with_overrides(parser, argv)
  try:
    tpu = spec_from_args(args)
  except ValueError as e:
    parser.error(str(e))
  actions = set(args.actions)
  if 'all' in actions:
    actions |= {'create', 'setup', 'run'}
  if args.delete:
    actions.add('delete')
  if args.detach and 'delete' in actions:
    parser.error('--detach with --delete would delete the slice under the running job')
  needs_run = 'run' in actions
  if needs_run:
    if not args.config or not args.workdir:
      parser.error('run needs --config and --workdir')
    if not args.workdir.startswith('gs://') and not args.allow_local_workdir:
      parser.error('--workdir must be on GCS (gs://...): every host writes and reads it '
                   '(--allow_local_workdir for a single-host slice)')
  run_name = (safe_run_name(args.run_name) if args.run_name else
              run_name_from_workdir(args.workdir) if args.workdir else 'run')
  log_dir = pathlib.Path(args.log_dir or f'runs/launch_logs/{args.name}/{run_name}')
  runner = common.Runner(dry_run=args.dry_run, out=out)
  status = 0
  try:
    if 'create' in actions:
      create(runner, tpu, args.poll_seconds, args.wait_timeout)
    if 'setup' in actions:
      setup(runner, tpu)
    if needs_run:
      train_args = common.train_args(common.resolve_config_path(args.config), args.workdir,
                                     args.overrides, mode=args.mode)
      status = run(runner, tpu, train_args, env=common.parse_env(args.env), run_name=run_name,
                   log_dir=log_dir, detach=args.detach)
      if status and not args.dry_run:
        runner.comment(f'run failed with exit status {status}; logs in {log_dir}')
    if 'logs' in actions:
      status = logs(runner, tpu, run_name=run_name, log_dir=log_dir, lines=args.lines,
                    follow=args.follow) or status
  except common.CommandError as e:
    runner.comment(str(e))
    status = e.returncode or 1
  finally:
    if 'delete' in actions:
      # Also after a failure: a forgotten slice keeps costing.
      if delete(runner, tpu, check=False) and not status:
        status = 1
  return status


if __name__ == '__main__':
  sys.exit(main())
