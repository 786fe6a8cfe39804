"""The dataset inspector: summary, sheets from the training stream, and the classic mistakes."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from centernet_jax import inspect_data
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from centernet_jax.data import synthetic
from centernet_jax.data import synthetic_keypoints

from tests import helpers
from tests import tiny

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """The tiny synthetic set, generated once for the module."""
  return tmp_path_factory.mktemp('data')


@pytest.fixture(scope='module')
def keypoint_data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('keypoint_data')


def _coco_copy(tmp_path, config, change_train=None, change_val=None):
  """`config` reading a copy of its synthetic set's JSONs (changed) as dataset.source=coco_json."""
  if config.dataset.source == 'synthetic':
    paths = synthetic.ensure_synthetic_dataset(config.dataset)
  else:
    paths = synthetic_keypoints.ensure_keypoint_dataset(config.dataset)
  for split, change in (('train', change_train), ('val', change_val)):
    data = json.loads(pathlib.Path(paths[f'{split}_annotations']).read_text())
    if change is not None:
      change(data)
    out = tmp_path / f'{split}.json'
    out.write_text(json.dumps(data))
    config.dataset[f'{split}_annotations'] = str(out)
    config.dataset[f'{split}_images'] = paths[f'{split}_images']
  config.dataset.source = 'coco_json'
  return config


def _warned(summary, *words):
  return [w for w in summary['warnings'] if all(word in w for word in words)]


def test_summary_and_sheets_of_a_clean_set(data_dir, tmp_path):
  config = tiny.tiny_config(data_dir)
  out = tmp_path / 'out'
  summary = inspect_data.inspect(config, str(out), num=4, num_stats=16)
  assert summary['errors'] == []
  # The 8-image val set has no rectangle: said, and only that.
  assert summary['warnings'] == [
      "val: category 'rectangle' (id 1) has no box in the val set: its AP is not measured "
      '(COCOeval leaves it out of the mean).']
  assert json.loads((out / 'summary.json').read_text())['train'] == summary['train']
  records = sources.for_config(config).load_split(sources.resolve(config), 'train').records
  train = summary['train']
  assert train['images'] == len(records) == 32
  assert train['boxes'] == sum(len(r.boxes) for r in records)
  assert sum(train['boxes_per_class'].values()) == train['boxes']
  assert sum(train['box_size_output_pixels'].values()) == train['boxes']
  assert train['images_without_objects'] == sum(len(r.boxes) == 0 for r in records)
  assert summary['val']['images'] == 8
  # No crop or pad in the tiny config: the augmentation keeps every box.
  stream = summary['augmented']
  assert stream['examples'] == 16
  assert stream['boxes_after_augmentation'] == stream['boxes_in_source_records'] > 0
  # 4 examples, 2 per row, 2 panels each: one sheet of 2 rows x 4 panels.
  (sheet,) = summary['sheets']
  width, height = Image.open(sheet).size
  panel = 64 * inspect_data.visualize.display_scale(64, 64)
  assert 4 * panel < width < 4 * panel + 60 and 2 * panel < height < 2 * panel + 60
  text = inspect_data.format_summary(summary)
  assert 'WARNINGS' in text and 'rectangle' in text


def test_the_sheets_show_the_training_stream_itself(data_dir, tmp_path):
  config = tiny.tiny_config(data_dir)
  # Random per example: a different example would differ.
  config.input.augmentations = 'random_horizontal_flip|random_adjust_hue(0.02)'
  facts = sources.resolve(config)
  first = next(pipeline.make_train_iterator(config, facts))  # batch_size 8, as training reads it
  again = next(pipeline.make_train_iterator(inspect_data.stream_config(config, 16), facts))
  np.testing.assert_array_equal(again['image'][:8], first['image'])
  np.testing.assert_array_equal(again['boxes'][:8], first['boxes'])


def test_xyxy_boxes_and_0_based_annotation_ids(data_dir, tmp_path):
  config = tiny.tiny_config(data_dir)

  def break_it(data):
    for a in data['annotations']:
      x, y, w, h = a['bbox']
      a['bbox'] = [x, y, x + w, y + h]
      a['category_id'] -= 1

  _coco_copy(tmp_path, config, break_it)
  summary = inspect_data.inspect(config, str(tmp_path / 'out'), num=2, num_stats=16)
  assert _warned(summary, 'train:', 'extend past', '[x1, y1, x2, y2]')
  assert _warned(summary, 'train:', '0-based', 'Add 1')
  # The reader refuses id 0; the summary says so and is still written.
  assert any('loading the training set' in e for e in summary['errors'])
  assert (tmp_path / 'out' / 'summary.json').exists()
  assert summary['train_annotations']['boxes_past_image'] > 0.5 * sum(
      summary['train_annotations']['annotations_per_category_id'].values())


def test_0_based_category_ids_and_xyxy_boxes_that_load(data_dir, tmp_path):
  config = tiny.tiny_config(data_dir)

  def break_it(data):
    for c in data['categories']:
      c['id'] -= 1
    for a in data['annotations']:
      a['category_id'] -= 1
      x, y, w, h = a['bbox']
      a['bbox'] = [x, y, x + w, y + h]

  _coco_copy(tmp_path, config, break_it, lambda d: break_it(d))
  summary = inspect_data.inspect(config, str(tmp_path / 'out'), num=2, num_stats=16)
  assert summary['errors'] == []
  assert _warned(summary, 'train:', 'category ids start at 0')
  assert _warned(summary, 'train:', '[x1, y1, x2, y2]')
  assert summary['train']['boxes'] > 0 and summary['sheets']


def test_every_box_dropped_and_a_class_without_boxes(data_dir, tmp_path):
  config = tiny.tiny_config(data_dir)

  def empty_boxes(data):
    for a in data['annotations']:
      a['bbox'][2] = 0.0

  _coco_copy(tmp_path, config, empty_boxes)
  summary = inspect_data.inspect(config, str(tmp_path / 'out'), num=2, num_stats=16)
  assert summary['errors'] == []
  assert _warned(summary, 'every box is dropped')
  assert summary['train']['boxes'] == 0
  assert summary['sheets'], 'the images are still drawn'

  config = tiny.tiny_config(data_dir)

  def drop_ellipses(data):
    (ellipse,) = [c['id'] for c in data['categories'] if c['name'] == 'ellipse']
    data['annotations'] = [a for a in data['annotations'] if a['category_id'] != ellipse]

  _coco_copy(tmp_path, config, drop_ellipses)
  summary = inspect_data.inspect(config, str(tmp_path / 'out2'), num=2, num_stats=16)
  assert _warned(summary, 'train:', "'ellipse' (id 3) has no box", 'cannot learn')
  assert summary['train']['boxes_per_class']['ellipse'] == 0


def test_a_crop_that_removes_most_boxes(data_dir, tmp_path):
  config = tiny.tiny_config(data_dir)
  # Windows of 5-15% of the image around one whole box; a box not wholly inside is dropped.
  config.input.augmentations = ('random_horizontal_flip|random_crop_image(area_range=(0.05, '
                                '0.15), overlap_thresh=1.0, random_coef=0.0)')
  summary = inspect_data.inspect(config, str(tmp_path / 'out'), num=2, num_stats=32)
  assert _warned(summary, 'removes most boxes', 'area_range=(0.05, 0.15)')
  stream = summary['augmented']
  assert stream['boxes_after_augmentation'] < 0.5 * stream['boxes_in_source_records']


def test_keypoint_category_without_skeleton_and_an_empty_val_set(keypoint_data_dir, tmp_path):
  config = tiny.tiny_keypoint_config(keypoint_data_dir)

  def no_skeleton(data):
    for c in data['categories']:
      c.pop('skeleton', None)

  def empty(data):
    no_skeleton(data)
    data['images'], data['annotations'] = [], []

  _coco_copy(tmp_path, config, no_skeleton, empty)
  summary = inspect_data.inspect(config, str(tmp_path / 'out'), num=2, num_stats=16)
  assert _warned(summary, 'train:', "'person'", "no 'skeleton'")
  assert _warned(summary, 'val set', 'empty')
  joints = summary['train']['keypoints']['labelled_per_joint']
  assert len(joints) == 9 and sum(joints.values()) > 0
  assert summary['train']['keypoints']['skeleton'] == []
  (sheet,) = summary['sheets']  # boxes, center target and joint target panels
  assert Image.open(sheet).size[0] > 6 * 64 * inspect_data.visualize.display_scale(64, 64)


@pytest.mark.slow  # a fresh interpreter importing TF and JAX: most of its time
def test_command_line(data_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'centernet_jax.inspect_data', '--config',
       'tests/tiny_experiment.py', f'--config.dataset.synthetic_dir={data_dir}', '--output',
       str(tmp_path / 'out'), '--num', '2', '--num_stats', '16'],
      cwd=REPO, env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'boxes (training targets)' in result.stdout and 'ERRORS' not in result.stdout
  assert (tmp_path / 'out' / 'sheet_000.png').exists()
