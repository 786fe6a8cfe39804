"""tf.data pipeline: the batch contract, geometry, determinism, resumption, sharding, eval."""

import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from centernet_jax import config_base
from centernet_jax.data import augment
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from centernet_jax.data import view
from centernet_jax.data.sources import record_table

S = 32
# The zoo's 512 recipe without its colour ops, with a 10-pixel pad (geometry tests).
FLIP_CROP_PAD = ('random_horizontal_flip|random_crop_image(aspect_ratio_range=(0.5, 1.7), '
                 'area_range=(0.1, 1.0), overlap_thresh=0.3, random_coef=0.25)|'
                 'random_absolute_pad_image({pad}, {pad})')
M = 5


def _png(path, arr, mode=None):
  Image.fromarray(arr, mode).save(path)


def _rect_image(h, w, box, value=(255, 255, 255)):
  arr = np.zeros((h, w, 3), np.uint8)
  y0, x0, y1, x1 = box
  arr[y0:y1, x0:x1] = value
  return arr


def _write_set(root, split, specs, categories=((2, 'a'), (5, 'b'))):
  """specs: list of (h, w, list of (y0, x0, y1, x1, cat_id), mode). Images show the boxes."""
  img_dir = os.path.join(root, split)
  os.makedirs(img_dir, exist_ok=True)
  images, anns = [], []
  for i, (h, w, boxes, mode) in enumerate(specs):
    arr = np.zeros((h, w, 3), np.uint8)
    for k, (y0, x0, y1, x1, _) in enumerate(boxes):
      arr[y0:y1, x0:x1] = (255, 60 * k % 256, 100)
    name = f'{split}{i}.png'
    path = os.path.join(img_dir, name)
    if mode == 'L':
      _png(path, arr[..., 0], 'L')
    elif mode == 'RGBA':
      _png(path, np.concatenate([arr, np.full((h, w, 1), 128, np.uint8)], -1), 'RGBA')
    else:
      _png(path, arr)
    iid = 100 + 7 * i
    images.append({'id': iid, 'file_name': name, 'height': h, 'width': w})
    for (y0, x0, y1, x1, cid) in boxes:
      anns.append({'id': len(anns) + 1, 'image_id': iid, 'category_id': cid, 'iscrowd': 0,
                   'bbox': [x0, y0, x1 - x0, y1 - y0], 'area': float((x1 - x0) * (y1 - y0))})
  ann = os.path.join(root, f'instances_{split}.json')
  with open(ann, 'w') as f:
    json.dump({'images': images, 'annotations': anns,
               'categories': [{'id': c, 'name': n} for c, n in categories]}, f)
  return ann, img_dir


TRAIN_SPECS = [
    (24, 32, [(2, 3, 10, 12, 2), (12, 15, 20, 30, 5)], None),
    (32, 24, [(5, 5, 20, 15, 5)], 'L'),
    (30, 40, [(3, 4, 15, 20, 2)], 'RGBA'),
    (16, 16, [], None),
    (40, 30, [(i * 5, 1, i * 5 + 4, 9, 2) for i in range(7)], None),  # 7 > max_boxes
    (20, 28, [(4, 4, 16, 24, 5)], None),
]
VAL_SPECS = [(20 + i, 28, [(2, 2, 10, 10 + i, 2)], None) for i in range(7)]


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('coco'))
  c = config_base.base_config()
  c.dataset.source = 'coco_json'
  c.dataset.train_annotations, c.dataset.train_images = _write_set(root, 'train', TRAIN_SPECS)
  c.dataset.val_annotations, c.dataset.val_images = _write_set(root, 'val', VAL_SPECS)
  c.dataset.max_boxes = M
  c.dataset.num_parallel_calls = 2
  c.input.size = S
  c.input.augmentations = c.input.augmentations.replace('random_absolute_pad_image(200, 200)',
                                                        'random_absolute_pad_image(10, 10)')
  assert c.input.augmentations.endswith('random_absolute_pad_image(10, 10)')
  c.batch_size = 4
  c.eval.batch_size = 4
  c.seed = 3
  return c


def _example(image, boxes_px, classes, image_id):
  """A decoded example as the sources give it: boxes normalized to the image."""
  image = tf.convert_to_tensor(image)
  h, w = image.shape[:2]
  return {'image': image, 'boxes': np.asarray(boxes_px, np.float32).reshape(-1, 4) / [h, w, h, w],
          'classes': tf.cast(classes, tf.int32), 'image_id': image_id}


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batch_contract(cfg):
  expected = {
      'image': (np.uint8, (4, S, S, 3)),  # training; evaluation: float32 (below)
      'boxes': (np.float32, (4, M, 4)),
      'classes': (np.int32, (4, M)),
      'box_mask': (np.float32, (4, M)),
      'image_id': (np.int32, (4,)),
      'original_size': (np.int32, (4, 2)),
      'true_size': (np.int32, (4, 2)),
      'example_mask': (np.float32, (4,)),
  }
  # Training only: the parameters and windows of the 4 colour ops of the recipe.
  colour = {'colour_params': (np.float32, (4, 4)), 'colour_windows': (np.float32, (4, 4, 4))}
  train_batches = _take(pipeline.make_train_iterator(cfg, sources.resolve(cfg)), 2)
  for batch in train_batches + list(pipeline.make_eval_iterator(cfg, sources.resolve(cfg))[0]):
    is_train = any(batch is b for b in train_batches)
    assert set(batch) == set(expected) | (set(colour) if is_train else set())
    for k, (dt, shape) in {**expected, **(colour if is_train else {})}.items():
      if k == 'image' and not any(batch is b for b in train_batches):
        dt = np.float32
      assert batch[k].dtype == dt, k
      assert batch[k].shape == shape, k
    assert batch['image'].min() >= 0 and batch['image'].max() <= 255
    assert np.all(batch['boxes'][batch['box_mask'] == 0] == 0)
    assert np.all(batch['classes'][batch['box_mask'] == 0] == 0)
    assert set(np.unique(batch['classes'])) <= {0, 1}
  facts = sources.resolve(cfg)
  lm, n = facts.label_map, facts.num_classes
  assert n == 2 and lm.ids == (2, 5)


def test_resize_pad_math_on_non_square(cfg):
  c = cfg.copy_and_resolve_references()
  c.input.size = 32
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
  boxes_px = np.array([[3, 4, 15, 20]], np.float32)
  out = pipeline.preprocess(_example(img, boxes_px, [1], 9), config=c)
  out = {k: v.numpy() for k, v in out.items()}
  np.testing.assert_array_equal(out['true_size'], [24, 32])
  np.testing.assert_array_equal(out['original_size'], [30, 40])
  np.testing.assert_allclose(out['boxes'][0], [3 / 30 * 24 / 32, 4 / 40, 15 / 30 * 24 / 32,
                                               20 / 40], rtol=1e-6)
  np.testing.assert_array_equal(out['box_mask'], [1, 0, 0, 0, 0])
  assert out['image_id'] == 9 and out['example_mask'] == 1
  # Zero padding bottom/right.
  assert np.all(out['image'][24:] == 0)
  # Legacy bilinear without half-pixel centers: src = dst * in / out.
  def legacy(a, oh, ow):
    ih, iw = a.shape[:2]
    ys = np.arange(oh) * ih / oh
    xs = np.arange(ow) * iw / ow
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, ih - 1)
    x1 = np.minimum(x0 + 1, iw - 1)
    dy = (ys - y0)[:, None, None]
    dx = (xs - x0)[None, :, None]
    a = a.astype(np.float64)
    top = a[y0][:, x0] * (1 - dx) + a[y0][:, x1] * dx
    bot = a[y1][:, x0] * (1 - dx) + a[y1][:, x1] * dx
    return top * (1 - dy) + bot * dy
  np.testing.assert_allclose(out['image'][:24], legacy(img, 24, 32), atol=1e-3)
  ref = tf.compat.v1.image.resize(img[None].astype(np.float32), [24, 32], align_corners=False)
  np.testing.assert_allclose(out['image'][:24], ref[0].numpy(), atol=1e-3)
  # A portrait image pads on the right.
  out = pipeline.preprocess(_example(tf.zeros([40, 10, 3], tf.uint8) + 7, [], [], 1), config=c)
  np.testing.assert_array_equal(out['true_size'], [32, 8])
  assert np.all(out['image'].numpy()[:, :8] == 7) and np.all(out['image'].numpy()[:, 8:] == 0)


def _extent(mask):
  ys, xs = np.nonzero(mask)
  return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float64)


def test_flip_crop_pad_keep_boxes_on_objects(cfg):
  h, w = 60, 80
  red_box = (20, 30, 36, 61)
  green_box = (40, 2, 58, 20)
  img = np.zeros((h, w, 3), np.uint8)
  img[red_box[0]:red_box[2], red_box[1]:red_box[3], 0] = 255
  img[green_box[0]:green_box[2], green_box[1]:green_box[3], 1] = 255
  boxes = np.array([red_box, green_box], np.float32) / [h, w, h, w]
  image = tf.constant(img, tf.float32)
  n_cropped = n_dropped = n_flipped = 0
  for s in range(40):
    ex = view.materialize(augment.Augmenter(FLIP_CROP_PAD.format(pad=30))(
        {'image': image, 'boxes': tf.constant(boxes), 'classes': tf.constant([0, 1])},
        tf.constant([s, 11])))
    out, b, cls = ex['image'].numpy(), ex['boxes'].numpy(), ex['classes'].numpy()
    oh, ow = out.shape[:2]
    assert out.shape[2] == 3
    for ch, orig in ((0, red_box), (1, green_box)):
      visible = out[..., ch] > 127
      area = (orig[2] - orig[0]) * (orig[3] - orig[1])
      if ch in cls:
        px = b[list(cls).index(ch)] * [oh, ow, oh, ow]
        np.testing.assert_allclose(px, _extent(visible), atol=1.0, err_msg=f'seed {s} ch {ch}')
        n_cropped += visible.sum() < area
      else:  # dropped: less than 30% of the object is left in the crop
        assert visible.sum() < 0.3 * area, s
        n_dropped += 1
    n_flipped += bool(ch in cls and _extent(out[..., 1] > 127)[1] > ow / 2)
  # The crop always keeps at least one box whole (min_object_covered=1).
  assert n_cropped > 0 and n_dropped > 0 and n_flipped > 0
  # Flip alone: exact mirror, about half of the time.
  flips = 0
  for s in range(20):
    ex = view.materialize(augment.Augmenter('random_horizontal_flip')(
        {'image': image, 'boxes': tf.constant(boxes), 'classes': tf.constant([0, 1])},
        tf.constant([s, 5])))
    out, b = ex['image'], ex['boxes']
    flipped = not np.array_equal(out.numpy(), img)
    if flipped:
      np.testing.assert_array_equal(out.numpy(), img[:, ::-1])
      np.testing.assert_allclose(b.numpy()[:, [1, 3]], 1 - boxes[:, [3, 1]], atol=1e-6)
    flips += flipped
  assert 4 <= flips <= 16


def test_pipeline_boxes_track_bright_pixels(tmp_path):
  specs = [(30, 40, [(5, 8, 20, 30, 1)], None), (40, 24, [(10, 3, 30, 20, 1)], None)]
  c = config_base.base_config()
  c.dataset.train_annotations, c.dataset.train_images = _write_set(
      str(tmp_path), 'train', specs, categories=((1, 'x'),))
  c.input.size = 64
  c.input.augmentations = FLIP_CROP_PAD.format(pad=20)
  c.batch_size = 8
  c.dataset.max_boxes = 3
  for batch in _take(pipeline.make_train_iterator(c, sources.resolve(c)), 3):
    for k in range(8):
      bright = batch['image'][k, ..., 0] > 127
      assert batch['box_mask'][k].sum() == 1  # a single box is never dropped by the crop
      np.testing.assert_allclose(batch['boxes'][k, 0] * 64, _extent(bright), atol=1.5)


def test_grayscale_rgba_decode(cfg):
  c = cfg.copy_and_resolve_references()
  c.input.augmentations = ''
  data = sources.for_config(c).load_split(sources.resolve(c), 'train')
  table = record_table.RecordTable(data.records)
  gray = table.image(1).numpy()
  rgba = table.image(2).numpy()
  assert gray.shape == (32, 24, 3) and rgba.shape == (30, 40, 3)
  np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
  assert gray[6, 6, 0] == 255 and rgba[4, 5, 0] == 255
  assert data.stats['images_over_max_boxes'] == 1


def test_decoded_cache_same_images_and_refused_when_too_large(cfg):
  data = sources.for_config(cfg).load_split(sources.resolve(cfg), 'train')
  plain = record_table.RecordTable(data.records)
  cached = record_table.RecordTable(data.records, cache_decoded=True)
  assert cached.cache is not None
  for i in range(len(data.records)):
    np.testing.assert_array_equal(plain.image(i).numpy(), cached.image(i).numpy())
  need_mib = sum(r.height * r.width * 3 for r in data.records) / 2**20
  too_small = record_table.RecordTable(
      data.records, cache_decoded=True, cache_max_mib=need_mib * 0.99)
  assert too_small.cache is None
  np.testing.assert_array_equal(too_small.image(4).numpy(), plain.image(4).numpy())


def test_max_boxes_truncation(cfg):
  c = cfg.copy_and_resolve_references()
  c.input.augmentations = ''
  data = sources.for_config(c).load_split(sources.resolve(c), 'train')
  r = data.records[4]
  out = pipeline.preprocess(_example(tf.zeros([40, 30, 3], tf.uint8), r.boxes, r.classes,
                                     r.image_id), config=c)
  assert out['box_mask'].numpy().sum() == M
  np.testing.assert_allclose(out['boxes'].numpy()[:, 0] * 32, r.boxes[:M, 0] * 32 / 40,
                             rtol=1e-5)


def test_determinism_and_resumption(cfg):
  full = _take(pipeline.make_train_iterator(cfg, sources.resolve(cfg)), 5)
  again = _take(pipeline.make_train_iterator(cfg, sources.resolve(cfg)), 5)
  for a, b in zip(full, again):
    _assert_batches_equal(a, b)
  resumed = _take(pipeline.make_train_iterator(cfg, sources.resolve(cfg), start_step=3), 2)
  for a, b in zip(full[3:], resumed):
    _assert_batches_equal(a, b)
  # Every record appears once per epoch (6 records, 4 per batch -> first 6 positions).
  ids = np.concatenate([b['image_id'] for b in full])
  assert sorted(ids[:6]) == sorted(100 + 7 * i for i in range(6))
  assert sorted(ids[6:12]) == sorted(100 + 7 * i for i in range(6))
  c2 = cfg.copy_and_resolve_references()
  c2.dataset.cache_decoded = True  # decoded images held in memory: same batches
  for a, b in zip(full[:3], _take(pipeline.make_train_iterator(c2, sources.resolve(c2)), 3)):
    _assert_batches_equal(a, b)
  c2.seed = 4
  other = _take(pipeline.make_train_iterator(c2, sources.resolve(c2)), 2)
  assert not np.array_equal(other[0]['image'], full[0]['image'])


def test_two_processes_concatenate_to_global_batch(cfg):
  glob = _take(pipeline.make_train_iterator(cfg, sources.resolve(cfg), start_step=1), 3)
  p0 = _take(pipeline.make_train_iterator(cfg, sources.resolve(cfg), start_step=1, process_index=0,
                                          process_count=2), 3)
  p1 = _take(pipeline.make_train_iterator(cfg, sources.resolve(cfg), start_step=1, process_index=1,
                                          process_count=2), 3)
  for g, a, b in zip(glob, p0, p1):
    assert a['image'].shape[0] == 2
    _assert_batches_equal(g, {k: np.concatenate([a[k], b[k]]) for k in g})
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.make_train_iterator(cfg, sources.resolve(cfg), process_count=3)


def test_eval_padding_and_equal_batch_counts(cfg):
  all_ids = [100 + 7 * i for i in range(7)]
  it, n = pipeline.make_eval_iterator(cfg, sources.resolve(cfg))
  batches = list(it)
  assert n == 2 and len(batches) == 2 and len(it) == 2
  mask = np.concatenate([b['example_mask'] for b in batches])
  ids = np.concatenate([b['image_id'] for b in batches])
  np.testing.assert_array_equal(mask, [1] * 7 + [0])
  np.testing.assert_array_equal(ids, all_ids + [-1])
  assert np.all(batches[1]['image'][3] == 0) and batches[1]['box_mask'][3].sum() == 0
  facts = sources.resolve(cfg)
  assert facts.label_map.ids == (2, 5) and facts.ground_truth_file == cfg.dataset.val_annotations
  assert it.all_image_ids == all_ids
  # No augmentation: the val boxes are exactly the resized annotation (20x28 -> 23x32: the
  # rounded true size sets each axis' scale).
  np.testing.assert_array_equal(batches[0]['true_size'][0], [23, 32])
  np.testing.assert_allclose(batches[0]['boxes'][0, 0] * 32,
                             np.array([2, 2, 10, 10]) * [23 / 20, 32 / 28, 23 / 20, 32 / 28],
                             rtol=1e-5)
  # A second pass gives the same batches.
  for a, b in zip(batches, list(it)):
    _assert_batches_equal(a, b)
  seen = []
  counts = []
  for p in range(2):
    it, n = pipeline.make_eval_iterator(cfg, sources.resolve(cfg), process_index=p, process_count=2)
    bs = list(it)
    counts.append((n, len(bs)))
    for b in bs:
      assert b['image'].shape[0] == 2
      seen += [i for i, m in zip(b['image_id'], b['example_mask']) if m]
      assert np.all(b['image_id'][b['example_mask'] == 0] == -1)
  assert counts == [(2, 2), (2, 2)]
  assert sorted(seen) == all_ids
  c = cfg.copy_and_resolve_references()
  c.eval.num_examples = 3
  it, n = pipeline.make_eval_iterator(c, sources.resolve(c), process_index=1, process_count=2)
  assert n == 1 and it.image_ids == [114] and it.all_image_ids == all_ids[:3]


def test_corrupt_image_in_pipeline(tmp_path):
  c = config_base.base_config()
  specs = [(20, 20, [(1, 1, 5, 5, 1)], None), (20, 20, [(1, 1, 5, 5, 1)], None)]
  c.dataset.train_annotations, c.dataset.train_images = _write_set(
      str(tmp_path), 'train', specs, categories=((1, 'x'),))
  with open(os.path.join(c.dataset.train_images, 'train1.png'), 'wb') as f:
    f.write(b'\x89PNG garbage')
  with pytest.raises(ValueError, match=r'image id 107 .*train1.png.* cannot be read'):
    pipeline.make_train_iterator(c, sources.resolve(c))
  c.dataset.skip_bad_images = True
  c.batch_size = 2
  c.input.size = 16
  batch = next(pipeline.make_train_iterator(c, sources.resolve(c)))
  np.testing.assert_array_equal(batch['image_id'], [100, 100])


def _copy_tree_to(src_dir, dst_dir):
  tf.io.gfile.makedirs(dst_dir)
  for name in os.listdir(src_dir):
    tf.io.gfile.copy(os.path.join(src_dir, name), f'{dst_dir}/{name}', overwrite=True)


def test_dataset_on_a_non_local_file_system_gives_the_same_batches(cfg):
  # ram:// is TensorFlow's in-memory file system: it goes through tf.io.gfile like gs:// does,
  # so nothing on the path may assume a local file (os.path, open, PIL on a path).
  c = cfg.copy_and_resolve_references()
  root = 'ram://centernet_jax_test/coco'
  for split in ('train', 'val'):
    ann = c.dataset[f'{split}_annotations']
    tf.io.gfile.makedirs(root)
    tf.io.gfile.copy(ann, f'{root}/instances_{split}.json', overwrite=True)
    _copy_tree_to(c.dataset[f'{split}_images'], f'{root}/{split}')
    c.dataset[f'{split}_annotations'] = f'{root}/instances_{split}.json'
    c.dataset[f'{split}_images'] = f'{root}/{split}'
  for a, b in zip(_take(pipeline.make_train_iterator(cfg, sources.resolve(cfg)), 2),
                  _take(pipeline.make_train_iterator(c, sources.resolve(c)), 2)):
    _assert_batches_equal(a, b)
  local_eval = pipeline.make_eval_iterator(cfg, sources.resolve(cfg))
  remote_eval = pipeline.make_eval_iterator(c, sources.resolve(c))
  assert local_eval[1] == remote_eval[1]
  for a, b in zip(local_eval[0], remote_eval[0]):
    _assert_batches_equal(a, b)
  assert sources.resolve(c).label_map.ids == sources.resolve(cfg).label_map.ids
  from centernet_jax import evaluate  # pylint: disable=g-import-not-at-top
  assert (evaluate.load_coco_ground_truth(c.dataset.val_annotations).getImgIds() ==
          evaluate.load_coco_ground_truth(cfg.dataset.val_annotations).getImgIds())
  # A missing remote image is named like a local one.
  tf.io.gfile.remove(f'{root}/val/val3.png')
  with pytest.raises(ValueError, match=r"image file 'ram://.*val3.png' \(field 'file_name'\)"):
    sources.for_config(c).load_split(sources.resolve(c), 'val')
