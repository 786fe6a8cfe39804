r"""Local multi-process launcher: N JAX processes on this machine, talking over localhost.

  python -m launch.local --num_processes 2 --devices_per_process 2 --timeout 600 \
      --config experiments/demo.py --workdir runs/mp [--config.x=y ...] [--dry_run]

Each process runs the train command plus `--distributed --coordinator_address
localhost:PORT --num_processes N --process_id i` (a free port), on the CPU platform with
`devices_per_process` simulated devices (JAX_NUM_CPU_DEVICES and
XLA_FLAGS=--xla_force_host_platform_device_count); CPU collectives go over gloo. Output lines
are prefixed with `[p{i}]`. When one process fails, the others are killed; the whole run is
bounded by a timeout (exit status 124). This is how multi-host code is tested on one machine.

From Python: `run_local(command_args, num_processes, devices_per_process, timeout)`.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Mapping, Sequence, TextIO

from launch import common

TIMEOUT_STATUS = 124


def free_port() -> int:
  """A TCP port free on localhost right now (the OS picks it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def process_args(command_args: Sequence[str], num_processes: int, process_id: int,
                 port: int) -> list[str]:
  """The command of process `process_id`: `command_args` plus the jax.distributed flags."""
  return [*map(str, command_args), '--distributed',
          '--coordinator_address', f'localhost:{port}',
          '--num_processes', str(num_processes), '--process_id', str(process_id)]


def process_env(devices_per_process: int, base: Mapping[str, str] | None = None,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
  """The environment of each process: CPU platform with `devices_per_process` devices.

  Any device count already in XLA_FLAGS (e.g. from a test set-up) is replaced.
  """
  env = dict(os.environ if base is None else base)
  flags = re.sub(r'--xla_force_host_platform_device_count=\S+', '', env.get('XLA_FLAGS', ''))
  env['XLA_FLAGS'] = (
      f'{flags.strip()} --xla_force_host_platform_device_count={devices_per_process}').strip()
  env['JAX_NUM_CPU_DEVICES'] = str(devices_per_process)
  env['JAX_PLATFORMS'] = 'cpu'
  env['CUDA_VISIBLE_DEVICES'] = ''
  env['PYTHONUNBUFFERED'] = '1'
  env.pop('CENTERNET_JAX_DISTRIBUTED', None)  # explicit flags instead
  env.update(extra or {})
  return env


def _kill(procs: Sequence[subprocess.Popen], grace: float = 3.0) -> None:
  """SIGTERM each still-running child's process group, SIGKILL after `grace` seconds."""
  for sig in (signal.SIGTERM, signal.SIGKILL):
    alive = [p for p in procs if p.poll() is None]
    if not alive:
      return
    for p in alive:
      try:
        os.killpg(p.pid, sig)  # the child leads its own group (start_new_session)
      except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.poll() is None for p in alive):
      time.sleep(0.05)


def run_local(command_args: Sequence[str], num_processes: int, devices_per_process: int = 1,
              timeout: float | None = 600.0, *, env: Mapping[str, str] | None = None,
              cwd: str | os.PathLike[str] | None = None, port: int | None = None,
              out: TextIO | None = None) -> int:
  """Runs `num_processes` copies of a JAX program as one distributed job on this machine.

  Args:
    command_args: the program, e.g. `[sys.executable, '-m', 'centernet_jax.main', '--config',
      ..., '--workdir', ...]`; each process gets `--distributed --coordinator_address
      localhost:PORT --num_processes N --process_id i` appended.
    num_processes: N.
    devices_per_process: simulated CPU devices per process.
    timeout: seconds for the whole run (None: no limit); on expiry all are killed.
    env: extra environment variables for every process.
    cwd: working directory (default: the current one).
    port: coordinator port (default: a free one).
    out: where the `[p{i}]`-prefixed output goes (default sys.stdout).

  Returns:
    0 if every process exited 0; else the status of the first process to fail (a negative
    signal number if it was killed by one), or 124 on timeout.
  """
  if num_processes < 1:
    raise ValueError('num_processes must be >= 1')
  port = port or free_port()
  writer = common.LinePrefixer(out)
  procs: list[subprocess.Popen] = []
  threads = []

  def pump(i: int, proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
      writer.write_line(f'[p{i}] ', line)

  try:
    for i in range(num_processes):
      proc = subprocess.Popen(
          process_args(command_args, num_processes, i, port), cwd=cwd,
          env=process_env(devices_per_process, extra=env), stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, bufsize=1,
          errors='replace', start_new_session=True)
      procs.append(proc)
      thread = threading.Thread(target=pump, args=(i, proc), daemon=True)
      thread.start()
      threads.append(thread)

    deadline = None if timeout is None else time.monotonic() + timeout
    status = 0
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, status = failed[0]
        writer.write_line('[local] ', f'process {i} exited with status {status}; '
                          'stopping the others')
        break
      if all(c == 0 for c in codes):
        break
      if deadline is not None and time.monotonic() > deadline:
        writer.write_line('[local] ', f'timeout after {timeout:g} s; stopping all processes')
        status = TIMEOUT_STATUS
        break
      time.sleep(0.05)
  finally:
    _kill(procs)
    for thread in threads:
      thread.join(timeout=5)
  return status


def make_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m launch.local', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  common.add_train_flags(p)
  p.add_argument('--num_processes', type=int, default=2)
  p.add_argument('--devices_per_process', type=int, default=1)
  p.add_argument('--timeout', type=float, default=3600.0, help='Seconds (0: no limit).')
  p.add_argument('--port', type=int, default=None, help='Coordinator port (default: free one).')
  p.add_argument('--env', action='append', default=[], help='KEY=VALUE (repeat).')
  return p


def main(argv: Sequence[str] | None = None, out=None) -> int:
  args = common.parse_with_overrides(make_parser(), argv)
  command = common.train_command(args.config, args.workdir, args.overrides,
                                 python=sys.executable, mode=args.mode)
  env = common.parse_env(args.env)
  if args.dry_run:
    runner = common.Runner(dry_run=True, out=out)
    port = args.port or free_port()
    runner.comment(f'{args.num_processes} processes, started together (output prefixed [p<i>]):')
    for i in range(args.num_processes):
      extra = {'JAX_PLATFORMS': 'cpu', 'JAX_NUM_CPU_DEVICES': str(args.devices_per_process),
               'XLA_FLAGS': f'--xla_force_host_platform_device_count={args.devices_per_process}',
               **env}
      runner.run(process_args(command, args.num_processes, i, port), env=extra)
    return 0
  return run_local(command, args.num_processes, args.devices_per_process,
                   args.timeout or None, env=env, port=args.port, out=out)


if __name__ == '__main__':
  sys.exit(main())
