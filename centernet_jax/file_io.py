"""Files on any file system TensorFlow's `tf.io.gfile` knows: local paths, `gs://` buckets
(and `ram://`, which the tests use as a stand-in for a remote file system).

Local paths go through Python's own `open` / `os` (fast, no TensorFlow import); a path with a
`scheme://` prefix goes through `tf.io.gfile`, the same file system layer `tf.data` uses to read
the images, so a dataset, an annotation JSON or a workdir can live in a bucket. Orbax and
`etils.epath` (checkpoints, metrics files) reach `gs://` through the same TensorFlow layer.
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import IO, Any, Iterable


def is_local(path: Any) -> bool:
  return '://' not in str(path)


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def absolute(path: Any) -> str:
  """An absolute local path; a `scheme://` path unchanged. (No `~` expansion: the shell does
  that, and etils.epath, which writes the workdir's other files, does not either.)"""
  path = str(path)
  return os.path.abspath(path) if is_local(path) else path


def join(base: Any, *parts: str) -> str:
  base = str(base)
  return os.path.join(base, *parts) if is_local(base) else posixpath.join(base, *parts)


def exists(path: Any) -> bool:
  path = str(path)
  return os.path.exists(path) if is_local(path) else _gfile().exists(path)


def open_file(path: Any, mode: str = 'r') -> IO[Any]:
  """`open(path, mode)` for local paths, `tf.io.gfile.GFile` otherwise."""
  path = str(path)
  return open(path, mode) if is_local(path) else _gfile().GFile(path, mode)


def read_json(path: Any) -> Any:
  """The parsed JSON of a UTF-8 file (a leading byte order mark is accepted).

  Raises ValueError naming the file for an empty file, text that is not UTF-8 and invalid
  JSON (OSError for a missing or unreadable file, as `open` does).
  """
  with open_file(path, 'rb') as f:
    raw = f.read()
  if not raw.strip():
    raise ValueError(f'{path}: the file is empty, expected JSON')
  try:
    # utf-8-sig: Windows editors save UTF-8 with a BOM, which plain utf-8 turns into an error.
    text = raw.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise ValueError(f'{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); '
                     'JSON files must be UTF-8 (re-save it as UTF-8)') from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno} '
                     f'(character {e.pos} of {len(text)}; a truncated file ends early)') from None


def makedirs(path: Any) -> None:
  path = str(path)
  if is_local(path):
    os.makedirs(path, exist_ok=True)
  else:
    _gfile().makedirs(path)


def identity(path: Any) -> tuple[str, int]:
  """(absolute path, modification time in ns): a cache key that changes when the file does."""
  path = absolute(path)
  if is_local(path):
    return path, os.stat(path).st_mtime_ns
  return path, int(_gfile().stat(path).mtime_nsec)


def missing_files(paths: Iterable[str]) -> list[str]:
  """The paths that are not existing files, in order. Remote folders are listed once each
  instead of one request per file (COCO train is 118k images)."""
  paths = [str(p) for p in paths]
  missing = []
  listings: dict[str, set[str]] = {}
  for p in paths:
    if is_local(p):
      if not os.path.isfile(p):
        missing.append(p)
      continue
    folder, name = posixpath.split(p)
    if folder not in listings:
      try:
        listings[folder] = {n.rstrip('/') for n in _gfile().listdir(folder)}
      except Exception:  # pylint: disable=broad-except  # NotFoundError: the folder is missing
        listings[folder] = set()
    if name not in listings[folder]:
      missing.append(p)
  return missing
