"""host_memory.keep_freed_memory: large blocks freed and malloc'd again come back without page
faults, in a process of their own (the settings are process-wide)."""

import json
import subprocess
import sys

import pytest

from centernet_jax import config_base
from centernet_jax import host_memory
from centernet_jax import performance
from tests import helpers

# A child that mallocs, fills and frees a block five times, from the main thread or from a thread
# of its own (a thread's arena, as XLA:CPU's executing thread), and prints the page faults of the
# last four rounds (the first maps the memory either way).
_CHILD = r'''
import ctypes, json, resource, sys
from centernet_jax import host_memory
keep = {'kept': host_memory.keep_freed_memory,
        'inference': host_memory.keep_freed_inference_memory}.get(sys.argv[1])
kept = keep() if keep else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = int(sys.argv[2]) << 20
faults = []
def rounds():
  for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
if sys.argv[3] == 'thread':
  import threading
  t = threading.Thread(target=rounds)
  t.start()
  t.join()
else:
  rounds()
print(json.dumps({'kept': kept, 'faults': sum(faults[1:])}))
'''


def _faults(mode: str, mib: int = 64, where: str = 'main', env: dict | None = None) -> dict:
  result = subprocess.run([sys.executable, '-c', _CHILD, mode, str(mib), where],
                          env={**helpers.subprocess_env(), **(env or {})}, capture_output=True,
                          text=True, timeout=120, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory.glibc_version() is None, reason='the settings are glibc\'s')
def test_freed_blocks_are_reused_without_page_faults():
  defaults, kept = _faults('defaults'), _faults('kept')
  pages = 4 * (64 << 20) // 4096
  # glibc's defaults map and unmap the block every round: each round faults in every page.
  assert defaults['faults'] >= pages // 2, defaults
  assert kept['kept'] is True
  assert kept['faults'] < pages // 100, kept


@pytest.mark.skipif(host_memory.glibc_version() is None, reason='the settings are glibc\'s')
def test_a_threads_freed_heap_sized_blocks_are_reused_in_inference():
  # XLA:CPU's executing thread allocates the predict function's temporaries in blocks of at
  # most performance.INFERENCE_HEAP_BYTES; glibc's defaults map such a block afresh each time.
  mib = performance.INFERENCE_HEAP_BYTES >> 20
  assert performance.INFERENCE_HEAP_BYTES < host_memory.GLIBC_THREAD_HEAP_BYTES
  defaults = _faults('defaults', mib, 'thread')
  inference = _faults('inference', mib, 'thread')
  pages = 4 * performance.INFERENCE_HEAP_BYTES // 4096
  assert defaults['faults'] >= pages // 2, defaults
  assert inference['kept'] is True
  assert inference['faults'] < pages // 100, inference


@pytest.mark.skipif(host_memory.glibc_version() is None, reason='the settings are glibc\'s')
def test_the_tf_serving_environment_keeps_a_threads_heap_sized_blocks():
  # glibc ignores a misspelt tunable silently: the environment must act as the mallopts do.
  env = performance.tf_cpu_serving_environment()
  assert env['XLA_FLAGS'] == ('--xla_multiheap_size_constraint_per_heap='
                              f'{performance.INFERENCE_HEAP_BYTES}')
  tuned = _faults('defaults', performance.INFERENCE_HEAP_BYTES >> 20, 'thread',
                  env={'GLIBC_TUNABLES': env['GLIBC_TUNABLES']})
  assert tuned['faults'] < 4 * performance.INFERENCE_HEAP_BYTES // 4096 // 100, tuned


@pytest.mark.parametrize('keep', ['keep_freed_memory', 'keep_freed_inference_memory'])
def test_not_glibc_leaves_malloc_alone(monkeypatch, keep):
  def no_confstr(name):
    raise ValueError(f'unrecognized configuration name {name}')
  monkeypatch.setattr(host_memory.os, 'confstr', no_confstr)
  monkeypatch.setattr(host_memory.ctypes, 'CDLL', lambda *a: pytest.fail('mallopt was called'))
  assert getattr(host_memory, keep)() is False


@pytest.mark.parametrize('keep', [True, False])
@pytest.mark.parametrize('training', [True, False])
def test_set_up_follows_the_config_and_the_kind_of_process(monkeypatch, keep, training):
  calls = []
  monkeypatch.setattr(host_memory, 'keep_freed_memory', lambda: calls.append('train') or True)
  monkeypatch.setattr(host_memory, 'keep_freed_inference_memory',
                      lambda: calls.append('inference') or True)
  config = config_base.base_config()
  config.keep_freed_host_memory = keep
  host_memory.set_up(config, training=training)
  assert calls == ([('train' if training else 'inference')] if keep else [])
