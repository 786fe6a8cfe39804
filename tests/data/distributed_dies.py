"""Two JAX processes in a psum loop; process 1 kills itself (SIGKILL) after a few steps.

Run by tests/test_dead_process.py, either through `launch.local.run_local` or as bare
processes (no launcher: only JAX's heartbeat can stop the survivor). Takes the flags
`run_local` appends, plus `--heartbeat SECONDS` (as main.py's --heartbeat_timeout).
"""

import argparse
import os
import signal
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

parser = argparse.ArgumentParser()
parser.add_argument('--distributed', action='store_true')
parser.add_argument('--coordinator_address')
parser.add_argument('--num_processes', type=int)
parser.add_argument('--process_id', type=int)
parser.add_argument('--heartbeat', type=int, default=100)
args = parser.parse_args()
jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                           heartbeat_timeout_seconds=args.heartbeat)
mesh = jax.make_mesh((jax.device_count(),), ('d',))
psum = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, 'd'), mesh=mesh, in_specs=P('d'),
                             out_specs=P()))
for i in range(1_000_000):
  x = jax.make_array_from_process_local_data(NamedSharding(mesh, P('d')),
                                             np.ones(jax.local_device_count(), np.float32))
  psum(x).block_until_ready()
  if i == 10:
    print(f'process {jax.process_index()} running', flush=True)
  if i == 20 and args.process_id == 1:
    os.kill(os.getpid(), signal.SIGKILL)
  time.sleep(0.01)
