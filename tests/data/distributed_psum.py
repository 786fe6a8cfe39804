"""A tiny multi-process JAX program for the local launcher test: initialize, then psum.

Run by `launch.local.run_local`, which appends --distributed --coordinator_address ...
--num_processes N --process_id i. Every device contributes 1 + its global index; the psum over
all processes' devices must equal 1 + 2 + ... + total devices.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

parser = argparse.ArgumentParser()
parser.add_argument('--distributed', action='store_true')
parser.add_argument('--coordinator_address')
parser.add_argument('--num_processes', type=int)
parser.add_argument('--process_id', type=int)
args = parser.parse_args()
assert args.distributed
jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)

n_local, n_global = jax.local_device_count(), jax.device_count()
assert jax.process_count() == args.num_processes, jax.process_count()
assert n_global == n_local * args.num_processes, (n_global, n_local)
mesh = jax.make_mesh((n_global,), ('d',))
first = jax.process_index() * n_local
local = np.arange(first + 1, first + n_local + 1, dtype=np.float32)
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P('d')), local)
total = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, 'd'), mesh=mesh, in_specs=P('d'),
                              out_specs=P()))(x)
value = float(np.asarray(total.addressable_shards[0].data)[0])
expected = n_global * (n_global + 1) / 2
assert value == expected, (value, expected)
print(f'psum ok: process {jax.process_index()}/{jax.process_count()} '
      f'devices {n_local}/{n_global} sum {value:g}', flush=True)
jax.distributed.shutdown()
