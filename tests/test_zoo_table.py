"""`zoo_table`: archives found, imported, evaluated, timed and tabled; missing and broken rows
listed; finished rows not redone; the published numbers equal docs/zoo.md's table."""

import json
import os
import re
import tarfile
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import config_base
from centernet_jax import models
from centernet_jax import tf_checkpoint
from centernet_jax import zoo_table
from tests import tiny
from tests.test_tf_checkpoint import PIPELINE_CONFIG, write_tf_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R50 = 'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8'
R101 = 'centernet_resnet101_v1_fpn_512x512_coco17_tpu-8'
HG = 'centernet_hg104_512x512_coco17_tpu-8'
SIZE = 64


def _write_archive(folder):
  """A zoo-layout archive of a 2-class ResNet50 V1 FPN at SIZE px with sane random weights:
  pipeline.config + checkpoint/ckpt-1 under the OD API's variable names."""
  os.makedirs(folder)
  with open(os.path.join(folder, 'pipeline.config'), 'w') as f:
    f.write(PIPELINE_CONFIG.replace('dimension: 512', f'dimension: {SIZE}'))
  c = config_base.base_config()
  c.model.backbone, c.model.depth = 'resnet_v1_fpn', 50
  model = models.build_model(c.model, 2)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)), train=False))
  rng = np.random.default_rng(0)
  values = {}
  for key, shape in tf_checkpoint.expected_checkpoint_shapes(variables, c.model).items():
    if 'moving_variance' in key or 'gamma' in key:
      values[key] = np.ones(shape, np.float32)
    elif 'moving_mean' in key or 'beta' in key or 'bias' in key:
      values[key] = np.zeros(shape, np.float32)
    else:  # He-normal kernels keep activations finite through 50 layers
      fan_in = max(int(np.prod(shape[:-1])), 1)
      values[key] = rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
  write_tf_checkpoint(os.path.join(folder, 'checkpoint', 'ckpt'), values)


def _write_experiment(experiments, name, depth):
  (experiments / f'{name}.py').write_text(textwrap.dedent(f'''\
      from centernet_jax import config_base

      def get_config():
        c = config_base.base_config()
        c.model.backbone = 'resnet_v1_fpn'
        c.model.depth = {depth}
        c.input.size = {SIZE}
        c.dataset.label_map_mode = 'id_minus_one'
        c.eval.batch_size = 4
        return c
      '''))


@pytest.fixture(scope='module')
def zoo_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('zoo')
  coco = root / 'coco'
  tiny.write_coco_split(str(coco), 'val2017', num_images=3, size=SIZE,
                        categories=({'id': 1, 'name': 'person'}, {'id': 2, 'name': 'bicycle'}))
  (coco / 'annotations').mkdir()
  os.replace(coco / 'val2017.json', coco / 'annotations' / 'instances_val2017.json')
  archives = root / 'archives'
  _write_archive(str(archives / R50))
  # The R101 row: a tarball whose archive has a pipeline.config but no checkpoint.
  broken = root / 'broken' / R101
  broken.mkdir(parents=True)
  (broken / 'pipeline.config').write_text(
      PIPELINE_CONFIG.replace('resnet_v1_50_fpn', 'resnet_v1_101_fpn').replace(
          'dimension: 512', f'dimension: {SIZE}'))
  with tarfile.open(archives / f'{R101}.tar.gz', 'w:gz') as tar:
    tar.add(broken, arcname=R101)
  experiments = root / 'experiments'
  experiments.mkdir()
  _write_experiment(experiments, R50, 50)
  _write_experiment(experiments, R101, 101)
  return {'coco': str(coco), 'archives': str(archives), 'experiments': str(experiments),
          'root': root}


@pytest.mark.slow  # zoo_table processes
def test_table_rows_done_failed_missing_and_resumed(zoo_dirs, monkeypatch):
  rows = zoo_table.select_rows(f'{R50},{R101},{HG}')
  runs = str(zoo_dirs['root'] / 'runs')
  out = str(zoo_dirs['root'] / 'table.md')
  results = zoo_table.make_table(zoo_dirs['archives'], zoo_dirs['coco'], out, rows=rows,
                                 runs_dir=runs, experiments_dir=zoo_dirs['experiments'],
                                 repeats=2)
  done = results[R50]
  assert done['status'] == 'done', done
  assert 0.0 <= done['box_ap'] <= 100.0 and done['keypoint_ap'] is None and done['ms'] > 0
  assert results[R101]['status'].startswith('failed'), results[R101]
  assert 'checkpoint' in results[R101]['status']  # the import's own reason is kept
  assert os.path.isfile(os.path.join(runs, 'archives', R101, 'pipeline.config'))  # unpacked
  assert results[HG] == {'status': 'missing'}
  table = open(out).read()
  r50_line = next(l for l in table.splitlines() if R50 in l)
  cells = [c.strip() for c in r50_line.split('|')[1:-1]]
  assert cells[1] == '31.2' and cells[2] == f"{done['box_ap']:.1f}"
  assert cells[3] == f"{done['box_ap'] - 31.2:+.1f}" and cells[7] == '27'
  assert cells[-1] == 'done'
  assert next(l for l in table.splitlines() if HG in l).endswith('| missing |')

  # A second run redoes nothing that finished: neither import nor evaluation may be called.
  def refuse(*args, **kwargs):
    raise AssertionError('a finished row was redone')
  monkeypatch.setattr(zoo_table, 'run_row', refuse)
  again = zoo_table.make_table(zoo_dirs['archives'], zoo_dirs['coco'], out,
                               rows=rows[:1], runs_dir=runs,
                               experiments_dir=zoo_dirs['experiments'], repeats=2)
  assert again[R50] == done
  monkeypatch.undo()
  # Imported but not evaluated (killed mid-row): evaluated again without a second import.
  os.remove(os.path.join(runs, R50, zoo_table.ROW_FILE))
  monkeypatch.setattr(zoo_table.import_tf_checkpoint, 'import_archive', refuse)
  third = zoo_table.make_table(zoo_dirs['archives'], zoo_dirs['coco'], out, rows=rows[:1],
                               runs_dir=runs, experiments_dir=zoo_dirs['experiments'],
                               repeats=2)
  assert third[R50]['status'] == 'done' and third[R50]['box_ap'] == done['box_ap']


def test_bad_flags_are_named(zoo_dirs, tmp_path):
  with pytest.raises(zoo_table.ZooTableError, match='unknown rows'):
    zoo_table.select_rows('centernet_nope')
  with pytest.raises(zoo_table.ZooTableError, match='--archives'):
    zoo_table.make_table(str(tmp_path / 'none'), zoo_dirs['coco'], str(tmp_path / 't.md'),
                         rows=zoo_table.PUBLISHED, runs_dir=str(tmp_path / 'r'))
  (tmp_path / 'empty_coco').mkdir()
  with pytest.raises(zoo_table.ZooTableError, match='instances_val2017.json'):
    zoo_table.make_table(zoo_dirs['archives'], str(tmp_path / 'empty_coco'),
                         str(tmp_path / 't.md'), rows=zoo_table.PUBLISHED,
                         runs_dir=str(tmp_path / 'r'))


def test_tarball_members_outside_the_folder_are_refused(tmp_path):
  evil = tmp_path / 'evil.txt'
  evil.write_text('x')
  with tarfile.open(tmp_path / f'{R50}.tar.gz', 'w:gz') as tar:
    tar.add(evil, arcname='../evil.txt')
  with pytest.raises(zoo_table.ZooTableError, match='leaves the archive folder'):
    zoo_table.find_archive(str(tmp_path), R50, str(tmp_path / 'unpack'))


def test_published_numbers_equal_docs_zoo_table():
  """PUBLISHED is the machine-readable copy of docs/zoo.md's table: they must not drift."""
  text = open(os.path.join(REPO, 'docs', 'zoo.md')).read()
  rows = {}
  for line in text.splitlines():
    m = re.match(r'\| .+? \| `(centernet_[^`]+)\.py`.*? \| ([^|]+) \| (\d+) \|$', line)
    if m:
      rows[m.group(1)] = (m.group(2).strip(), float(m.group(3)))
  assert set(rows) == set(zoo_table.PUBLISHED_BY_NAME)
  for name, (ap_text, ms) in rows.items():
    row = zoo_table.PUBLISHED_BY_NAME[name]
    numbers = [float(x) for x in re.findall(r'[\d.]+', ap_text)]
    if '(kpt)' in ap_text:
      assert (row.box_ap, row.keypoint_ap) == (None, numbers[0])
    else:
      assert [row.box_ap] + ([row.keypoint_ap] if row.keypoint_ap is not None else []) == numbers
    assert row.ms == ms
    assert os.path.isfile(os.path.join(REPO, 'experiments', name + '.py'))
