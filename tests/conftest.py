"""Test set-up: 4 simulated CPU devices, so sharded code runs as on a small pod slice."""

import os

# Must happen before jax initialises its backends.
os.environ.setdefault('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=4'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# Many tests (and the training processes some of them start) compile the same small programs:
# a persistent compilation cache, shared by the xdist workers and their subprocesses, compiles
# each once per machine (the cache key covers the program, the options and the devices). Programs
# holding oneDNN calls (the training step, the predict function: `performance.ONEDNN_OPTIONS`)
# cannot be serialized by XLA:CPU and are compiled in each process (pyproject.toml filters the
# warning JAX gives for them).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data_cache', 'jax_test_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')


def pytest_collection_modifyitems(config, items):
  """Files holding `slow` tests run first (most `slow` tests first; otherwise in collection
  order), so that `make test`'s two xdist workers (`--dist loadfile --no-loadscope-reorder`)
  start with the long files and end on short ones. xdist's default order (most tests first)
  hands out the long one-test files (the 2-process training: 183 s cold) last, where one of
  them can keep a worker busy long after the other has finished."""
  del config
  slow_per_file = {}
  for item in items:
    slow_per_file.setdefault(item.path, 0)
    if item.get_closest_marker('slow') is not None:
      slow_per_file[item.path] += 1
  items.sort(key=lambda item: -slow_per_file[item.path])  # stable: a file's order is kept
