"""host_memory.keep_freed_memory: large blocks freed and malloc'd again come back without page
faults, in a process of their own (the settings are process-wide)."""

import json
import subprocess
import sys

import pytest

from centernet_jax import config_base
from centernet_jax import host_memory
from tests import helpers

# A child that mallocs, fills and frees a 64 MiB block five times and prints the page faults
# of the last four rounds (the first maps the memory either way).
_CHILD = r'''
import ctypes, json, resource, sys
from centernet_jax import host_memory
kept = host_memory.keep_freed_memory() if sys.argv[1] == 'kept' else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(5):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'kept': kept, 'faults': sum(faults[1:])}))
'''


def _faults(mode: str) -> dict:
  result = subprocess.run([sys.executable, '-c', _CHILD, mode], env=helpers.subprocess_env(),
                          capture_output=True, text=True, timeout=120, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory.glibc_version() is None, reason='the settings are glibc\'s')
def test_freed_blocks_are_reused_without_page_faults():
  defaults, kept = _faults('defaults'), _faults('kept')
  pages = 4 * (64 << 20) // 4096
  # glibc's defaults map and unmap the block every round: each round faults in every page.
  assert defaults['faults'] >= pages // 2, defaults
  assert kept['kept'] is True
  assert kept['faults'] < pages // 100, kept


def test_not_glibc_leaves_malloc_alone(monkeypatch):
  def no_confstr(name):
    raise ValueError(f'unrecognized configuration name {name}')
  monkeypatch.setattr(host_memory.os, 'confstr', no_confstr)
  monkeypatch.setattr(host_memory.ctypes, 'CDLL', lambda *a: pytest.fail('mallopt was called'))
  assert host_memory.keep_freed_memory() is False


@pytest.mark.parametrize('keep', [True, False])
@pytest.mark.parametrize('training', [True, False])
def test_set_up_follows_the_config_in_training_only(monkeypatch, keep, training):
  calls = []
  monkeypatch.setattr(host_memory, 'keep_freed_memory', lambda: calls.append(1) or True)
  config = config_base.base_config()
  config.keep_freed_host_memory = keep
  host_memory.set_up(config, training=training)
  assert calls == ([1] if keep and training else [])
