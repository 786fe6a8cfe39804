"""Multi-host: when one process dies, the others exit within a bounded time, with a message."""

import io
import pathlib
import subprocess
import sys
import time

from launch import local

REPO = pathlib.Path(__file__).resolve().parent.parent
PROGRAM = str(REPO / 'tests' / 'data' / 'distributed_dies.py')


def test_local_launcher_stops_the_survivor_of_a_killed_process():
  out = io.StringIO()
  status = local.run_local([sys.executable, PROGRAM], num_processes=2, timeout=240, out=out)
  text = out.getvalue()
  assert status == -9, text[-3000:]
  assert 'process 1 exited with status -9; stopping the others' in text
  assert '[p0] process 0 running' in text


def test_without_a_launcher_the_heartbeat_stops_the_survivor():
  """No launcher to kill it: JAX's heartbeat timeout (main.py --heartbeat_timeout) must."""
  port = local.free_port()
  heartbeat = 10
  procs = [subprocess.Popen(
      [sys.executable, PROGRAM, *local.process_args([], 2, i, port)[0:],
       '--heartbeat', str(heartbeat)], env=local.process_env(1), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    procs[1].wait(timeout=240)
    died = time.monotonic()
    procs[0].wait(timeout=heartbeat + 60)
    waited = time.monotonic() - died
    text = procs[0].stdout.read()
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[1].returncode == -9
  assert procs[0].returncode != 0
  assert waited < heartbeat + 60
  assert 'heartbeat timeout' in text, text[-3000:]
