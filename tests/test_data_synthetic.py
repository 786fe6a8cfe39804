"""Synthetic COCO-layout generator: determinism, caching, content, CLI, pipeline use."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from centernet_jax import config_base
from centernet_jax.data import coco_json
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from centernet_jax.data import synthetic


def _dataset_cfg(out_dir, **kw):
  d = config_base.base_config().dataset
  d.synthetic_dir = str(out_dir)
  d.synthetic_num_train = 12
  d.synthetic_num_val = 6
  d.synthetic_image_size = 32
  d.synthetic_min_object_size = 4
  for k, v in kw.items():
    d[k] = v
  return d


def _read(path):
  with open(path, 'rb') as f:
    return f.read()


def test_determinism(tmp_path):
  a = synthetic.ensure_synthetic_dataset(_dataset_cfg(tmp_path / 'a'))
  b = synthetic.ensure_synthetic_dataset(_dataset_cfg(tmp_path / 'b'))
  c = synthetic.ensure_synthetic_dataset(_dataset_cfg(tmp_path / 'c', synthetic_seed=1))
  for key in ('train_annotations', 'val_annotations'):
    assert _read(a[key]) == _read(b[key])
    assert _read(a[key]) != _read(c[key])
  for name in sorted(os.listdir(a['train_images'])):
    assert _read(os.path.join(a['train_images'], name)) == _read(
        os.path.join(b['train_images'], name))


def test_a_pool_of_processes_draws_the_same_bytes(tmp_path):
  """Big splits are drawn by a process pool (`write_images`); forced here on a small one."""
  params = synthetic.generation_params(_dataset_cfg(tmp_path))
  results = {}
  for workers in (1, 2):
    img_dir = tmp_path / f'workers{workers}'
    img_dir.mkdir()
    results[workers] = synthetic.write_images(synthetic._write_image, 10, str(img_dir), 0,
                                              params, workers=workers)
  assert results[1] == results[2]
  assert sum(len(anns) for _, _, anns in results[1]) > 0
  names = sorted(os.listdir(tmp_path / 'workers1'))
  assert len(names) == 10 and names == sorted(os.listdir(tmp_path / 'workers2'))
  for name in names:
    assert _read(tmp_path / 'workers1' / name) == _read(tmp_path / 'workers2' / name)


def test_caching_and_regeneration(tmp_path):
  cfg = _dataset_cfg(tmp_path / 's')
  p = synthetic.ensure_synthetic_dataset(cfg)
  sentinel = os.path.join(p['root'], 'sentinel')
  open(sentinel, 'w').close()
  mtime = os.path.getmtime(p['marker'])
  assert synthetic.ensure_synthetic_dataset(cfg) == p  # cached: nothing rewritten
  assert os.path.exists(sentinel) and os.path.getmtime(p['marker']) == mtime
  cfg.synthetic_num_val = 7  # different parameters -> regenerated in place
  p2 = synthetic.ensure_synthetic_dataset(cfg)
  assert p2['root'] == p['root'] and not os.path.exists(sentinel)
  with open(p2['val_annotations']) as f:
    assert len(json.load(f)['images']) == 7
  with open(p2['marker']) as f:
    assert json.load(f)['num_val'] == 7
  # No temporary directories are left next to it.
  assert sorted(os.listdir(tmp_path)) == ['.s.lock', 's']


def test_content(tmp_path):
  d = _dataset_cfg(tmp_path / 's', synthetic_num_train=40, synthetic_image_size=64)
  p = synthetic.ensure_synthetic_dataset(d)
  with open(p['train_annotations']) as f:
    data = json.load(f)
  ids = [c['id'] for c in data['categories']]
  assert ids == [1, 3, 7, 8, 12] and len({c['name'] for c in data['categories']}) == 5
  images = {im['id']: im for im in data['images']}
  per_image = {}
  for a in data['annotations']:
    per_image.setdefault(a['image_id'], []).append(a)
    im = images[a['image_id']]
    x, y, w, h = a['bbox']
    assert all(isinstance(v, float) for v in a['bbox'])
    assert w >= 1 and h >= 1 and x >= 0 and y >= 0
    assert x + w <= im['width'] and y + h <= im['height']
    assert 0 < a['area'] <= w * h
    if not a['iscrowd']:
      assert max(w, h) >= 4  # min_object_size (occlusion can trim at most the hidden part)
  assert all(i in per_image for i in range(1, 6))  # images 0-4: plain, with objects
  assert 6 not in per_image  # image index 5 (id 6) has no objects
  assert any(a['iscrowd'] for a in per_image[7])  # image index 6 (id 7) has a crowd region
  assert (images[8]['height'], images[8]['width']) == (48, 64)
  assert (images[9]['height'], images[9]['width']) == (64, 56)
  classes = {a['category_id'] for a in data['annotations'] if not a['iscrowd']}
  assert len(classes) >= 4
  for im in data['images'][:6]:
    with Image.open(os.path.join(p['train_images'], im['file_name'])) as pil:
      assert pil.mode == 'RGB' and pil.size == (im['width'], im['height'])
  # Reader round trip: crowd excluded, empty images kept, channels contiguous.
  ds = coco_json.load_coco_json(p['train_annotations'], p['train_images'])
  assert len(ds.records) == 40 and ds.stats['crowd'] >= 1
  assert ds.stats['images_without_objects'] >= 1 and ds.stats['degenerate'] == 0


def test_boxes_are_tight_on_shapes():
  # Draw with a known background and no noise: the box must bound the object's pixels exactly.
  rng = np.random.default_rng(0)
  for _ in range(10):
    img, anns = synthetic.render_example(rng, 64, 48, 4)
    del img
    for a in anns:
      assert a['bbox'][2] >= 1 and a['bbox'][3] >= 1
  # Direct check on masks: every shape touches all four sides of its box.
  for name in ('rectangle', 'ellipse', 'triangle', 'cross', 'ring'):
    for oh, ow in ((4, 4), (9, 5), (20, 33)):
      m = synthetic._shape_mask(rng, name, oh, ow)  # pylint: disable=protected-access
      assert m.shape == (oh, ow)
      assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any(), (name, oh, ow)


def test_cli_and_pipeline(tmp_path):
  cfg_file = tmp_path / 'cfg.py'
  cfg_file.write_text(
      'from centernet_jax import config_base\n'
      'def get_config():\n'
      '  c = config_base.base_config()\n'
      "  c.dataset.source = 'synthetic'\n"
      f"  c.dataset.synthetic_dir = {str(tmp_path / 'cli')!r}\n"
      '  c.dataset.synthetic_num_train = 8\n'
      '  c.dataset.synthetic_num_val = 5\n'
      '  c.dataset.synthetic_image_size = 32\n'
      '  c.dataset.synthetic_min_object_size = 4\n'
      '  return c\n')
  out = subprocess.run(
      [sys.executable, '-m', 'centernet_jax.data.synthetic', f'--config={cfg_file}',
       '--print_val_images=3'], capture_output=True, text=True, check=True, timeout=120)
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 1
  paths = lines[0].split(',')
  assert len(paths) == 3 and all(os.path.isfile(x) for x in paths)
  assert paths[0].endswith(os.path.join('cli', 'val', '000000.png'))

  # --out_dir overrides the config's directory.
  out = subprocess.run(
      [sys.executable, '-m', 'centernet_jax.data.synthetic', f'--config={cfg_file}',
       f'--out_dir={tmp_path / "other"}', '--print_val_images=1'], capture_output=True,
      text=True, check=True, timeout=120)
  assert out.stdout.strip() == str(tmp_path / 'other' / 'val' / '000000.png')

  # The pipeline reads it (source 'synthetic'), with the non-contiguous ids mapped.
  c = config_base.base_config()
  c.dataset = _dataset_cfg(tmp_path / 'cli', synthetic_num_train=8, synthetic_num_val=5)
  c.dataset.source = 'synthetic'
  c.input.size = 32
  c.batch_size = 4
  c.eval.batch_size = 2
  facts = sources.resolve(c)
  lm, n = facts.label_map, facts.num_classes
  assert n == 5 and lm.ids == (1, 3, 7, 8, 12)
  c.dataset.label_map_mode = 'id_minus_one'
  assert sources.resolve(c).num_classes == 12
  c.dataset.label_map_mode = 'contiguous'
  batch = next(pipeline.make_train_iterator(c, sources.resolve(c)))
  assert batch['image'].shape == (4, 32, 32, 3)
  assert batch['classes'].max() < 5
  it, nb = pipeline.make_eval_iterator(c, sources.resolve(c))
  assert nb == 3 and sum(b['example_mask'].sum() for b in it) == 5
