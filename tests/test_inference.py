"""inference.Predictor (the one inference path) and detect over it: the restore, evaluation's
detections, lazy bounded-memory reading, and bad inputs."""

import concurrent.futures
import json
import multiprocessing
import os
import struct
import time
import zlib

import jax
import numpy as np
from PIL import Image
import psutil
import pytest

from centernet_jax import detect
from centernet_jax import inference
from centernet_jax import models
from centernet_jax import predict
from centernet_jax import run_files
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from centernet_jax.data.sources import record_table

from tests import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A box workdir at random weights (20 detections per image, to keep detect's output small).
  Every batch here has evaluation's size (3), so one compiled program serves all tests."""
  config = tiny.tiny_config(os.path.join(REPO, 'data_cache', 'tests_synthetic'))
  config.eval.max_detections = 20
  config.eval.batch_size = 3
  workdir = str(tmp_path_factory.mktemp('inference') / 'run')
  tiny.write_random_workdir(config, workdir, seed=3)
  return {'config': config, 'workdir': workdir,
          'predictor': inference.Predictor.from_workdir(workdir, batch_size=3)}


def _val_paths(config):
  return [r.path for r in sources.for_config(config).load_split(sources.resolve(config), 'val').records]


def test_restore_reads_the_saved_params_and_batch_stats(run):
  restored = run_files.restore_for_inference(run['workdir'], None)
  assert restored.step == 1 and set(restored.variables) == {'params', 'batch_stats'}
  model = models.build_model(run['config'].model, len(restored.label_map['names']), None)
  want = tiny.random_variables(model, 64, seed=3)
  jax.tree.map(np.testing.assert_array_equal, restored.variables, want)


def test_detections_equal_evaluation(run):
  """The val set (8 images) through the Predictor and through evaluation's iterator and
  predict_fn give the same detections (batches of 3, the last one padded)."""
  config = run['config']
  eval_iter, num_batches = pipeline.make_eval_iterator(config, sources.resolve(config))
  restored = run_files.restore_for_inference(run['workdir'], None)
  predict_fn = predict.make_predict_fn(restored.model, input_size=64, max_detections=20)
  want = []
  for _ in range(num_batches):
    batch = next(eval_iter)
    out = jax.device_get(predict_fn(restored.variables,
                                    {k: batch[k] for k in predict.PREDICT_KEYS}))
    want += [{k: v[i] for k, v in out.items()} for i in range(len(batch['image']))
             if batch['example_mask'][i] > 0]
  results = list(run['predictor'](_val_paths(config)))
  assert len(results) == len(want) == 8
  for result, ref in zip(results, want):
    for key in ('boxes', 'scores', 'classes'):
      np.testing.assert_allclose(result.detections[key], ref[key], atol=1e-5, err_msg=key)


def test_inputs_are_read_lazily(run):
  consumed = []

  def paths():
    for p in _val_paths(run['config']):
      consumed.append(p)
      yield p

  results = run['predictor'](paths())
  first = next(results)
  assert len(consumed) == 3  # one batch read, nothing more
  assert first.source == consumed[0]
  assert len([first, *results]) == 8


def _detect_and_measure(workdir: str, folder: str, out_dir: str):
  """`detect.detect_files` on `folder` in this process; returns (count, pictures written when
  the 400th path was read, resident bytes then, resident bytes after the last path)."""
  process = psutil.Process()
  seen = {}

  def paths():
    for i, p in enumerate(detect.expand_image_paths(folder)):
      if i == 400:
        seen['start'] = process.memory_info().rss
        seen['written'] = len([n for n in os.listdir(out_dir) if n.endswith('.png')])
      yield p
    seen['end'] = process.memory_info().rss

  count = detect.detect_files(workdir, paths(), out_dir, min_score=1.0, batch_size=3)
  return count, seen['written'], seen['start'], seen['end']


@pytest.mark.slow  # a detection process on many images
def test_detect_on_a_big_folder_keeps_memory_bounded(run, tmp_path):
  """2000 images: read, run and written batch by batch (pictures appear while the folder is
  still being read), with no growth of the resident memory beyond a few MiB.

  Measured in a fresh process, as `detect` runs: in the test worker's own process, memory
  taken by earlier tests' threads during the window was counted too (53 MiB once under
  `make test`, 0 MiB for this test alone)."""
  folder = tmp_path / 'many'
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(10):
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(folder / f'{i:05d}.png')
  encoded = [(folder / f'{i:05d}.png').read_bytes() for i in range(10)]
  for i in range(10, 2000):
    (folder / f'{i:05d}.png').write_bytes(encoded[i % 10])
  out_dir = tmp_path / 'out'
  out_dir.mkdir()
  with concurrent.futures.ProcessPoolExecutor(
      max_workers=1, mp_context=multiprocessing.get_context('spawn')) as pool:
    count, written, start, end = pool.submit(
        _detect_and_measure, str(run['workdir']), str(folder), str(out_dir)).result()
  assert count == 2000
  assert written >= 400 - 2 * 3
  growth_mib = (end - start) / 2**20
  assert growth_mib < 48, f'resident memory grew by {growth_mib:.0f} MiB over 1600 images'
  saved = json.loads((out_dir / 'detections.json').read_text())
  assert len(saved['images']) == 2000 and saved['step'] == 1
  assert len(saved['images'][-1]['detections']) == 20


def _png_with_declared_size(path, height, width):
  """A valid 1x1 PNG whose header (IHDR) claims height x width."""
  Image.new('RGB', (1, 1)).save(path)
  data = bytearray(path.read_bytes())
  ihdr = 8 + 4  # signature, then the chunk length
  data[ihdr + 4:ihdr + 12] = struct.pack('>II', width, height)
  crc = zlib.crc32(bytes(data[ihdr:ihdr + 17]))
  data[ihdr + 17:ihdr + 21] = struct.pack('>I', crc)
  path.write_bytes(bytes(data))


def test_bad_image_files_are_named(run, tmp_path):
  predictor = run['predictor']
  text = tmp_path / 'notes.png'
  text.write_text('not an image')
  with pytest.raises(inference.ImageError, match=f'{text}: not an image file'):
    list(predictor([str(text)]))
  good = tmp_path / 'good.png'
  Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(good)
  cut = tmp_path / 'truncated.png'
  cut.write_bytes(good.read_bytes()[:60])
  with pytest.raises(inference.ImageError, match=f'{cut}: TensorFlow cannot decode it'):
    list(predictor([str(cut)]))
  huge = tmp_path / 'huge.png'
  _png_with_declared_size(huge, 20000, 20000)
  start = time.monotonic()
  with pytest.raises(inference.ImageError, match=f'{huge}: 20000x20000 = 400000000 pixels, '
                     r'more than max_image_pixels=300000000 \(refused from its header'):
    list(predictor([str(huge)]))
  assert time.monotonic() - start < 5
  with pytest.raises(inference.ImageError, match='no such file'):
    list(predictor([str(tmp_path / 'missing.png')]))
  with pytest.raises(inference.ImageError, match='input #1: dtype float32'):
    list(predictor([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)]))
  with pytest.raises(inference.ImageError, match=r'input #0: shape \(8, 8, 2\)'):
    list(predictor([np.zeros((8, 8, 2), np.uint8)]))


def test_other_image_modes_are_converted_as_evaluation_does(run, tmp_path):
  """Grayscale, RGBA, 16-bit and 1x1 PNGs: evaluation's decoder makes them RGB uint8, and the
  detections are those of evaluation on that image."""
  rng = np.random.default_rng(1)
  files = {
      'gray': Image.fromarray(rng.integers(0, 255, (30, 50), np.uint8), 'L'),
      'rgba': Image.fromarray(rng.integers(0, 255, (50, 30, 4), np.uint8), 'RGBA'),
      'gray16': Image.fromarray(rng.integers(0, 65535, (40, 40), np.uint16)),
      'tiny': Image.fromarray(np.full((1, 1, 3), 200, np.uint8)),
  }
  paths = []
  for name, im in files.items():
    paths.append(str(tmp_path / f'{name}.png'))
    im.save(paths[-1])
  results = list(run['predictor'](paths))
  decoded = [record_table.decode_image_file(p).numpy() for p in paths]
  refs = tiny.evaluation_detections(run['workdir'], decoded)
  for result, image, ref in zip(results, decoded, refs):
    assert result.image.dtype == np.uint8 and result.image.shape[2] == 3
    np.testing.assert_array_equal(result.image, image)
    for key in ('boxes', 'scores', 'classes'):
      np.testing.assert_allclose(result.detections[key], ref[key], atol=1e-5)
  gray16 = np.asarray(files['gray16'])
  np.testing.assert_array_equal(results[2].image[..., 0], (gray16 >> 8).astype(np.uint8))
  assert results[3].image.shape == (1, 1, 3)
  boxes = results[3].detections['boxes']
  assert np.all(boxes >= 0) and np.all(boxes <= 1)


def test_bad_folders_and_arguments(run, tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match=f"folder '{empty}' holds no image file \\(empty"):
    detect.expand_image_paths(str(empty))
  (empty / 'readme.txt').write_text('x')
  with pytest.raises(ValueError, match='holds no image file \\(1 other files'):
    detect.expand_image_paths(str(empty))
  with pytest.raises(ValueError, match='no image was given'):
    detect.detect_files(run['workdir'], [], str(tmp_path / 'out'))
  with pytest.raises(ValueError, match='--batch_size=0: must be >= 1'):
    detect.detect_files(run['workdir'], ['x.png'], str(tmp_path / 'out'), batch_size=0)
  with pytest.raises(ValueError, match='batch_size=0: must be >= 1'):
    inference.Predictor.from_workdir(run['workdir'], batch_size=0)
  with pytest.raises(FileNotFoundError, match='no checkpoint under'):
    inference.Predictor.from_workdir(str(tmp_path / 'nothing'))
  with pytest.raises(FileNotFoundError, match='checkpoints/7 not found'):
    inference.Predictor.from_workdir(run['workdir'], step=7)
