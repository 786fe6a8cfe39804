"""main in train and eval modes, then detect, on the tiny synthetic experiment."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from centernet_jax import detect
from centernet_jax import evaluate
from centernet_jax import host_memory
from centernet_jax import train
from centernet_jax.data import synthetic

from tests import helpers
from tests import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # training, evaluation and detection processes
def test_train_eval_detect(tmp_path, monkeypatch):
  config = tiny.tiny_config(tmp_path / 'data')
  config.num_train_steps = 3
  workdir = tmp_path / 'run'
  monkeypatch.chdir(tmp_path)  # a relative workdir, as users type it
  metrics = train.train_and_evaluate(config, 'run')
  assert set(evaluate.STAT_NAMES) <= set(metrics)
  written = json.loads((workdir / 'eval_metrics.json').read_text())
  assert written['step'] == 3 and set(evaluate.STAT_NAMES) <= set(written)
  assert list((workdir).glob('events.out.tfevents*')), 'TensorBoard events were not written'

  # The eval mode of main on the saved checkpoint, as a user runs it.
  (workdir / 'eval_metrics.json').unlink()
  overrides = [f'--config.dataset.{k}={v}' for k, v in config.dataset.items()
               if k.startswith('synthetic_')]
  result = subprocess.run(
      [sys.executable, '-m', 'centernet_jax.main', '--config', 'tests/tiny_experiment.py',
       '--workdir', str(workdir), '--mode', 'eval', *overrides],
      cwd=REPO, env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  # Evaluation alone keeps its threads' heaps, not training's one arena (host_memory.py).
  if host_memory.glibc_version() is not None:
    assert '(inference: no mmap, heaps kept)' in result.stderr, result.stderr[-3000:]
  assert 'one arena' not in result.stderr, result.stderr[-3000:]
  again = json.loads((workdir / 'eval_metrics.json').read_text())
  assert again['step'] == 3
  np.testing.assert_allclose(again['AP'], written['AP'], atol=1e-6)

  # detect: a grayscale image among the inputs must work too.
  paths = synthetic.ensure_synthetic_dataset(config.dataset)
  val_images = sorted((tmp_path / 'data' / 'val').glob('*.png'))[:2]
  gray = tmp_path / 'gray.png'
  Image.open(val_images[0]).convert('L').save(gray)
  out_dir = tmp_path / 'detections'
  count = detect.detect_files(str(workdir), [str(p) for p in val_images] + [str(gray)],
                                str(out_dir), min_score=0.0, batch_size=2)
  assert paths and count == 3
  saved = json.loads((out_dir / 'detections.json').read_text())
  assert saved['step'] == 3 and len(saved['images']) == 3
  for rec in saved['images']:
    assert os.path.exists(rec['picture'])
    assert len(rec['detections']) == config.eval.max_detections
    for d in rec['detections']:
      ymin, xmin, ymax, xmax = d['box_yxyx']
      assert 0 <= ymin <= ymax <= rec['height'] and 0 <= xmin <= xmax <= rec['width']
    picture = Image.open(rec['picture'])
    assert picture.mode == 'RGB'
