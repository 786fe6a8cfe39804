"""Experiment files: the one loader for training, sweeps, the TF-zoo importer and benchmarks.

An experiment file is Python defining `get_config([arg]) -> ml_collections.ConfigDict` (a sweep
file also `get_sweep([arg])`). A spec `path.py:arg` passes `arg` to `get_config`.

  load_module(path) -> module          the file executed as a fresh module
  load_config(spec) -> ConfigDict      `get_config()` of 'path.py' or 'path.py:arg'
  load_folder(folder) -> [(path, ConfigDict)]   every `*.py` of `folder`, sorted by name

A file that is missing, fails to execute, lacks `get_config` or whose `get_config` raises gives
an `ExperimentError` naming the file and the error; `load_folder` raises on the first such file
rather than skipping it.
Experiment files that import repository-level packages (`tests.tiny`, `launch`) need the
repository root on `sys.path`; the caller that knows it (launch/sweep.py) puts it there.
"""

import glob
import hashlib
import importlib.util
import os
import types

import ml_collections


class ExperimentError(ValueError):
  """An experiment file cannot be loaded (the message names the file and the cause)."""


def split_spec(spec: str) -> tuple[str, str | None]:
  """'path.py:arg' -> ('path.py', 'arg'); 'path.py' (or 'path.py:') -> ('path.py', None)."""
  if ':' in spec and not spec.endswith('.py'):
    path, arg = spec.rsplit(':', 1)
    return path, arg or None
  return spec, None


def load_module(path: str) -> types.ModuleType:
  """Executes the experiment file `path` as a module of its own (named after its absolute
  path, so two files never share a module)."""
  if not os.path.isfile(path):
    raise ExperimentError(f'experiment file {path}: no such file')
  digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(f'_experiment_{digest}', path)
  if spec is None or spec.loader is None:
    raise ExperimentError(f'experiment file {path}: not loadable as Python (name it *.py)')
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  # any error of the file itself
    raise ExperimentError(f'experiment file {path} fails to load: {type(e).__name__}: {e}'
                          ) from e
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`get_config()` (or `get_config(arg)` for 'path.py:arg') of an experiment file."""
  path, arg = split_spec(spec)
  module = load_module(path)
  get_config = getattr(module, 'get_config', None)
  if get_config is None:
    raise ExperimentError(f'experiment file {path} defines no get_config()')
  try:
    config = get_config(arg) if arg is not None else get_config()
  except Exception as e:  # pylint: disable=broad-except  # any error of the file itself
    raise ExperimentError(f'experiment file {path}: get_config({arg or ""}) raised '
                          f'{type(e).__name__}: {e}') from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ExperimentError(f'experiment file {path}: get_config() returned a '
                          f'{type(config).__name__}, not an ml_collections.ConfigDict')
  return config


def load_folder(folder: str) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(path, config) of every `*.py` in `folder`, sorted; raises on the first broken file."""
  return [(path, load_config(path)) for path in sorted(glob.glob(os.path.join(folder, '*.py')))]
