"""Start-up check of every image file, with the decoder training uses, and a cache of verdicts.

`config.dataset.check_images` chooses how hard each file listed in an annotation JSON is
looked at before training starts (coco_json.load_coco_json calls an `ImageChecker`):
- 'decode' (default): the file is read and decoded exactly as the input pipeline decodes it
  (`tf.io.decode_image`, 3 channels, first frame), so a truncated JPEG, garbage in a JPEG scan
  or a TIFF that PIL opens but TF cannot decode is caught here, by name, instead of killing
  training when the stream first reaches it. Parallel over `num_threads` threads.
- 'header': the header is opened and PIL-verified only (fast, for huge sets on slow storage;
  broken image data is then only caught at run time, see validation.TrainBatches).
- 'none': the files must only exist.
Both checks also return the size, which the reader compares with the JSON's width/height.

Images with more than `max_pixels` pixels (`dataset.max_image_pixels`) are refused from their
header, before anything is decoded: a 13500 x 13500 image takes 0.5 GiB decoded. This limit
replaces PIL's own decompression-bomb guard, which is switched off here.

Verdicts are cached in a JSON file (`<workdir>/image_checks.json`), keyed by the path, the
file size and the modification time: a rerun only checks new or changed files. An entry made
by a 'header' check does not count for a 'decode' check.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import time
from typing import Any, Sequence

from absl import logging
from PIL import Image
from PIL import UnidentifiedImageError
import tensorflow as tf

from centernet_jax import file_io

MODES = ('decode', 'header', 'none')
_PROGRESS_SECONDS = 10.0


def decode_like_training(data: bytes) -> tuple[int, int]:
  """(height, width) of encoded image bytes decoded as sources.record_table.decode_image_file does.

  Raises tf.errors.InvalidArgumentError (or another tf.errors.OpError) when TF cannot decode.
  """
  image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
  return int(image.shape[0]), int(image.shape[1])


def _file_stamp(path: str) -> tuple[int, int]:
  """(size in bytes, modification time in ns) of a file."""
  if file_io.is_local(path):
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)
  st = tf.io.gfile.stat(path)
  return int(st.length), int(st.mtime_nsec)


def check_one(path: str, mode: str, max_pixels: int = 0
              ) -> tuple[tuple[int, int] | None, str | None, str]:
  """Checks one file: ((height, width) or None, error or None, 'header' or 'decode': how far
  the check went). The header is read first; an image over `max_pixels` (0: no limit) is not
  decoded (the caller refuses it from its size)."""
  try:
    with file_io.open_file(path, 'rb') as f:
      data = f.read()
  except Exception as e:  # pylint: disable=broad-except  # OSError, tf.errors alike
    return None, f'{type(e).__name__}: {e}', 'header'
  try:
    with Image.open(io.BytesIO(data)) as im:
      width, height = im.size
      if mode == 'header':
        im.verify()
  except UnidentifiedImageError:
    return None, 'not an image file in a format PIL knows (unrecognised header)', 'header'
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many kinds
    return None, f'{type(e).__name__}: {e}', 'header'
  hw = (int(height), int(width))
  if mode == 'header' or (max_pixels and hw[0] * hw[1] > max_pixels):
    return hw, None, 'header'
  try:
    decoded = decode_like_training(data)
  except tf.errors.OpError as e:
    return None, f'TensorFlow cannot decode it: {e.message.strip().splitlines()[0]}', 'decode'
  if decoded != hw:
    return None, (f'the header says {hw[0]}x{hw[1]} (height x width) but TensorFlow decodes '
                  f'{decoded[0]}x{decoded[1]}'), 'decode'
  return hw, None, 'decode'


class ImageChecker:
  """Callable `paths -> [((height, width) or None, error or None)]` for coco_json.

  Args:
    mode: 'decode' or 'header' (see the module docstring).
    max_pixels: images with more pixels than this are errors (0: no limit).
    cache_file: the verdict cache (a JSON file); '' or None: no cache.
    num_threads: parallel checks (0: 2 x the CPU count, at most 64).
    write_cache: rewrite the cache with new verdicts (False: only read it; the processes of a
      multi-host run other than 0).
  """

  def __init__(self, mode: str, *, max_pixels: int, cache_file: str | None = None,
               num_threads: int = 0, write_cache: bool = True):
    if mode not in ('decode', 'header'):
      raise ValueError(f"dataset.check_images={mode!r}: must be one of {MODES}")
    self.mode = mode
    self.max_pixels = int(max_pixels)
    self.cache_file = str(cache_file) if cache_file else ''
    self.num_threads = num_threads or min(64, 2 * (os.cpu_count() or 1))
    self.write_cache = write_cache
    self.num_checked = 0  # files actually opened by the last call (not answered by the cache)

  def _read_cache(self) -> dict[str, Any]:
    if not self.cache_file or not file_io.exists(self.cache_file):
      return {}
    try:
      cache = file_io.read_json(self.cache_file)
    except (ValueError, OSError) as e:
      logging.warning('image check cache %s unreadable (%s); checking every image again',
                      self.cache_file, e)
      return {}
    return cache if isinstance(cache, dict) else {}

  def _write_cache(self, cache: dict[str, Any]) -> None:
    if not self.cache_file or not self.write_cache:
      return
    text = json.dumps(cache, separators=(',', ':'))
    try:
      folder = os.path.dirname(self.cache_file)
      if folder:
        file_io.makedirs(folder)
      tmp = self.cache_file + '.tmp'
      with file_io.open_file(tmp, 'w') as f:
        f.write(text)
      if file_io.is_local(tmp):
        os.replace(tmp, self.cache_file)
      else:
        tf.io.gfile.rename(tmp, self.cache_file, overwrite=True)
    except (OSError, tf.errors.OpError) as e:  # a cache that cannot be written only costs time
      logging.warning('could not write the image check cache %s: %s', self.cache_file, e)

  def _one(self, path: str, cached) -> tuple[Any, Any, list | None]:
    """(hw, error, new cache entry or None when `cached` answered)."""
    try:
      size, mtime = _file_stamp(path)
    except Exception as e:  # pylint: disable=broad-except
      return None, f'{type(e).__name__}: {e}', None
    if (isinstance(cached, list) and len(cached) == 6 and cached[0] == size
        and cached[1] == mtime and (cached[2] == 'decode' or self.mode == 'header'
                                    or cached[5] is not None)):
      hw = None if cached[5] is not None else (int(cached[3]), int(cached[4]))
      return hw, cached[5], None
    hw, err, level = check_one(path, self.mode, self.max_pixels)
    if err is not None:
      return None, err, [size, mtime, level, 0, 0, err]
    return hw, None, [size, mtime, level, hw[0], hw[1], None]

  def _too_large(self, hw) -> bool:
    return bool(self.max_pixels) and hw[0] * hw[1] > self.max_pixels

  def __call__(self, paths: Sequence[str]) -> list[tuple[Any, Any]]:
    paths = [str(p) for p in paths]
    # Our own limit (dataset.max_image_pixels) applies instead of PIL's bomb guard.
    Image.MAX_IMAGE_PIXELS = None
    cache = self._read_cache()
    results = [None] * len(paths)
    start = last = time.monotonic()
    done = bad = 0
    self.num_checked = 0
    with concurrent.futures.ThreadPoolExecutor(self.num_threads) as ex:
      futures = {ex.submit(self._one, p, cache.get(p)): i for i, p in enumerate(paths)}
      for fut in concurrent.futures.as_completed(futures):
        i = futures[fut]
        hw, err, entry = fut.result()
        if entry is not None:
          cache[paths[i]] = entry
          self.num_checked += 1
        if err is None and self._too_large(hw):
          err = (f'{hw[0]}x{hw[1]} = {hw[0] * hw[1]} pixels, more than '
                 f'dataset.max_image_pixels={self.max_pixels} (raise it to accept the file)')
          hw = None
        results[i] = (hw, err)
        done += 1
        bad += err is not None
        now = time.monotonic()
        if now - last > _PROGRESS_SECONDS:
          last = now
          logging.info('image check (%s): %d/%d files, %d bad, %.0f files/s', self.mode, done,
                       len(paths), bad, done / (now - start))
    if self.num_checked:
      self._write_cache(cache)
    logging.info('image check (%s): %d files, %d bad; %d checked now, %d answered by the '
                 'cache %s in %.1f s', self.mode, len(paths), bad, self.num_checked,
                 len(paths) - self.num_checked, self.cache_file or '(none)',
                 time.monotonic() - start)
    return results
