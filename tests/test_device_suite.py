"""benchmarks/device_suite.py in its tiny CPU mode: the rows run and the table is written."""

import json
import os
import subprocess
import sys

import pytest

from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # the suite script: trainings and benchmarks
def test_tiny_suite_rows_and_table(tmp_path):
  out = tmp_path / 'suite.md'
  rows = 'train_r50_bf16_b32,infer_mnv2'
  env = helpers.subprocess_env()
  proc = subprocess.run(
      [sys.executable, 'benchmarks/device_suite.py', '--tiny', '--only', rows, '--out', str(out),
       '--peak_tflops', '1.0'], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  results = json.loads((tmp_path / 'suite.json').read_text())
  train = results['train_r50_bf16_b32']
  assert train['images_per_sec'] > 0 and train['gflop_per_image'] > 0
  assert abs(train['mfu'] - train['tflops'] / 1.0) < 1e-9  # --peak_tflops overrides the table
  infer = results['infer_mnv2']
  assert infer['b1_ms'] > 0 and infer['b2_images_per_sec'] > 0  # tiny: batch 2, not 32
  table = out.read_text()
  assert 'train_r50_bf16_b32' in table and 'MFU' in table and 'infer_mnv2' in table


def test_unknown_row_is_refused():
  proc = subprocess.run([sys.executable, 'benchmarks/device_suite.py', '--only', 'nope'],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and 'unknown rows' in proc.stderr
