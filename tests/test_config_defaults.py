"""Defaults live once, in config_base.base_config: no code reads a config field with a fallback
default of its own, and a saved run's config is read onto the base config (old runs too)."""

import ast
import json
import os

from centernet_jax import config_base
from centernet_jax import run_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ('centernet_jax', 'benchmarks', 'launch', 'parity', 'tools')
# Names under which code holds a config (or one of its sections).
CONFIG_NAMES = ('config', 'cfg', 'kcfg', 'model_config', 'mesh_config')


def _config_reads_with_fallback(path):
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = []
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == 'get' and len(node.args) + len(node.keywords) >= 2):
      continue
    receiver = ast.unparse(node.func.value)
    parts = receiver.replace('(', '.').replace(')', '.').split('.')
    if any(p in CONFIG_NAMES or p.endswith('_config') for p in parts):
      found.append(f'{os.path.relpath(path, REPO)}:{node.lineno}: {ast.unparse(node)}')
  return found


def test_no_config_field_is_read_with_a_fallback_default():
  found = []
  for top in SCANNED:
    for root, _, files in os.walk(os.path.join(REPO, top)):
      found += [x for f in sorted(files) if f.endswith('.py')
                for x in _config_reads_with_fallback(os.path.join(root, f))]
  assert found == [], 'defaults belong in config_base.base_config:\n' + '\n'.join(found)


def test_the_scan_finds_a_fallback(tmp_path):
  """The scan above can fail: it flags the patterns it is meant to forbid."""
  bad = tmp_path / 'bad.py'
  bad.write_text("def f(config, model_config):\n"
                 "  a = config.get('seed', 0)\n"
                 "  b = model_config.get('dtype', 'float32')\n"
                 "  c = config.model.get('depth', 50)\n"
                 "  d = {'x': 1}.get('x')\n")
  assert [line.split(': ', 1)[1] for line in _config_reads_with_fallback(str(bad))] == [
      "config.get('seed', 0)", "model_config.get('dtype', 'float32')",
      "config.model.get('depth', 50)"]


def test_an_old_run_config_reads_onto_the_base_config():
  """A config saved before `model.backbone_kwargs`, `eval.tta` and `input.augmentations`."""
  saved = json.loads(config_base.base_config().to_json_best_effort())
  del saved['model']['backbone_kwargs'], saved['eval']['tta'], saved['input']['augmentations']
  saved['model'].update(backbone='hourglass', hourglass_depth=104, use_separable_conv=False)
  saved['input']['random_crop'] = True  # an augmentation switch that no longer exists
  config = run_files.config_from_json(saved, 'old run')
  assert config.model.backbone_kwargs.hourglass.depth == 104
  assert config.model.backbone_kwargs.mobilenet_v2_fpn.use_separable_conv is False
  assert 'hourglass_depth' not in config.model and 'random_crop' not in config.input
  base = config_base.base_config()
  assert config.eval.tta == base.eval.tta
  assert config.input.augmentations == base.input.augmentations
  assert config.model.backbone == 'hourglass'
