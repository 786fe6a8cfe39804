"""Keypoint data: spec from names, COCO-format reading, flip/crop/pad, the pipeline, the
synthetic keypoint set and the coco_keypoints TFDS builder (built from tiny synthetic files)."""

import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from centernet_jax import config_base
from centernet_jax import keypoint_spec as kps
from centernet_jax.data import augment
from centernet_jax.data import coco_json
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from centernet_jax.data import synthetic_keypoints
from centernet_jax.data import tfds_coco
from centernet_jax.data import view


# ---- the spec ---------------------------------------------------------------------------------


def test_flip_permutation_from_names():
  perm = kps.flip_permutation_from_names(kps.COCO_KEYPOINT_NAMES)
  assert perm == (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
  assert perm == kps.COCO_FLIP_PERMUTATION
  assert kps.flip_permutation_from_names(synthetic_keypoints.KEYPOINT_NAMES) == (
      0, 2, 1, 4, 3, 6, 5, 8, 7)
  assert kps.flip_permutation_from_names(['hand_Left', 'tail', 'hand_Right', 'LeftEye',
                                          'RightEye']) == (2, 1, 0, 4, 3)
  with pytest.raises(ValueError, match='not a self-inverse'):
    kps.check_permutation([1, 2, 0], 3)


def test_spec_from_category_defaults_and_overrides():
  spec = kps.spec_from_category(kps.coco_person_category(), 0)
  assert spec.num_keypoints == 17 and spec.skeleton[0] == (15, 13)  # 1-based (16, 14)
  assert spec.std_devs[:5] == (0.26, 0.25, 0.25, 0.35, 0.35) and spec.std_devs[13] == 0.89
  assert spec.oks_sigmas[:3] == (0.026, 0.025, 0.025) and spec.oks_sigmas[-1] == 0.089
  other = kps.spec_from_category({'id': 3, 'name': 'fig', 'keypoints': ['a', 'left_b',
                                                                        'right_b']}, 1,
                                  {'oks_sigmas': (0.07,), 'task_name': 'pose'})
  assert other.std_devs == (1.0, 1.0, 1.0) and other.oks_sigmas == (0.07, 0.07, 0.07)
  assert other.flip_permutation == (0, 2, 1) and other.task_name == 'pose'
  assert kps.KeypointSpec.from_json_dict(json.loads(json.dumps(spec.to_json_dict()))) == spec


# ---- augmentation ----------------------------------------------------------------------------


def test_flip_swaps_left_and_right():
  image = tf.zeros([10, 20, 3])
  boxes = tf.constant([[0.1, 0.1, 0.9, 0.6]])
  # nose, left_eye, right_eye of one person, seen from the front: the left eye is on the
  # image's right.
  keypoints = tf.constant([[[0.2, 0.35], [0.15, 0.5], [0.15, 0.2]]])
  mask = tf.constant([[1.0, 1.0, 0.0]])  # right eye unlabelled
  example = {'image': image, 'boxes': boxes, 'keypoints': keypoints, 'keypoint_mask': mask}
  out = augment.random_horizontal_flip(example, tf.constant([1, 2]), probability=1.0,
                                       flip_permutation=(0, 2, 1))
  b, k, m = (out[key].numpy() for key in ('boxes', 'keypoints', 'keypoint_mask'))
  np.testing.assert_allclose(b, [[0.1, 0.4, 0.9, 0.9]], atol=1e-6)
  # Joint 1 (left eye) is now the old right eye (unlabelled), joint 2 the old left eye
  # mirrored to x = 0.5: still the joint on the image's left side = the right eye.
  np.testing.assert_array_equal(m, [[1.0, 0.0, 1.0]])
  np.testing.assert_allclose(k[0, 0], [0.2, 0.65], atol=1e-6)
  np.testing.assert_allclose(k[0, 2], [0.15, 0.5], atol=1e-6)
  np.testing.assert_allclose(k[0, 1], [0.0, 0.0])
  out = augment.random_horizontal_flip(example, tf.constant([1, 2]), probability=0.0,
                                       flip_permutation=(0, 2, 1))
  np.testing.assert_allclose(out['keypoints'].numpy(), keypoints.numpy())
  with pytest.raises(ValueError, match='needs a flip_permutation'):
    augment.random_horizontal_flip(example, tf.constant([1, 2]))


def test_crop_unlabels_joints_outside_and_moves_the_rest():
  image = tf.zeros([100, 200, 3])
  boxes = tf.constant([[0.4, 0.4, 0.6, 0.6]])  # the crop must contain it (min covered 1)
  keypoints = tf.constant([[[0.5, 0.5], [0.45, 0.55], [0.0, 0.0], [1.0, 1.0]]])
  mask = tf.ones([1, 4])
  seen_outside = False
  for s in range(12):
    out = view.materialize(augment.random_crop_image(
        {'image': image, 'boxes': boxes, 'classes': tf.constant([0]), 'keypoints': keypoints,
         'keypoint_mask': mask}, tf.constant([s, 7]), random_coef=0.0))
    img, b, kept, k, m = (out[key].numpy() for key in ('image', 'boxes', 'classes',
                                                        'keypoints', 'keypoint_mask'))
    assert list(kept) == [0]
    ch, cw = img.shape[:2]
    # The box is inside the window, so it is not clipped: recover the window from it.
    y0 = 0.4 * 100 - b[0, 0] * ch
    x0 = 0.4 * 200 - b[0, 1] * cw
    for j in range(4):
      py, px = keypoints.numpy()[0, j] * [100, 200]
      inside = y0 <= py <= y0 + ch and x0 <= px <= x0 + cw
      assert m[0, j] == float(inside)
      if inside:
        np.testing.assert_allclose(k[0, j] * [ch, cw], [py - y0, px - x0], atol=1e-3)
      else:
        seen_outside = True
        np.testing.assert_array_equal(k[0, j], [0.0, 0.0])
    assert m[0, 0] == 1 and m[0, 1] == 1  # inside the box, so inside every crop
  assert seen_outside


def test_pad_moves_joints_like_boxes():
  image = tf.zeros([10, 20, 3])
  boxes = tf.constant([[0.2, 0.2, 0.6, 0.5]])
  keypoints = tf.constant([[[0.2, 0.2], [0.6, 0.5]]])
  out = view.materialize(augment.random_absolute_pad_image(
      {'image': image, 'boxes': boxes, 'keypoints': keypoints, 'keypoint_mask': tf.ones([1, 2])},
      tf.constant([3, 4]), 10, 10))
  img, b, k = out['image'], out['boxes'], out['keypoints']
  np.testing.assert_allclose(k.numpy()[0].reshape(-1), b.numpy()[0], atol=1e-6)
  assert img.shape[0] >= 10 and img.shape[1] >= 20


# ---- COCO-format reading and the pipeline -----------------------------------------------------


def _write_tiny_coco(root, separate_keypoints=False):
  os.makedirs(os.path.join(root, 'img'), exist_ok=True)
  Image.fromarray(np.full((40, 80, 3), 90, np.uint8)).save(os.path.join(root, 'img', 'a.png'))
  Image.fromarray(np.full((30, 30, 3), 20, np.uint8)).save(os.path.join(root, 'img', 'b.png'))
  person = {'id': 5, 'name': 'person', 'keypoints': ['nose', 'left_eye', 'right_eye'],
            'skeleton': [[1, 2], [1, 3]]}
  anns = [
      {'id': 1, 'image_id': 1, 'category_id': 5, 'bbox': [10, 5, 40, 30], 'iscrowd': 0,
       'area': 1200, 'keypoints': [20, 10, 2, 30, 8, 1, 0, 0, 0], 'num_keypoints': 2},
      {'id': 2, 'image_id': 1, 'category_id': 9, 'bbox': [60, 0, 10, 10], 'iscrowd': 0,
       'area': 100},
      {'id': 3, 'image_id': 2, 'category_id': 5, 'bbox': [0, 0, 10, 10], 'iscrowd': 0,
       'area': 100},  # a person without keypoints
  ]
  data = {'images': [{'id': 1, 'file_name': 'a.png', 'height': 40, 'width': 80},
                     {'id': 2, 'file_name': 'b.png', 'height': 30, 'width': 30}],
          'annotations': anns,
          'categories': [person, {'id': 9, 'name': 'dog'}]}
  path = os.path.join(root, 'ann.json')
  kp_path = None
  if separate_keypoints:
    kp_path = os.path.join(root, 'kps.json')
    with open(kp_path, 'w') as f:
      json.dump({'images': data['images'], 'annotations': [anns[0]], 'categories': [person]}, f)
    data = dict(data, annotations=[{k: v for k, v in a.items() if k != 'keypoints'}
                                   for a in anns],
                categories=[{'id': 5, 'name': 'person'}, {'id': 9, 'name': 'dog'}])
  with open(path, 'w') as f:
    json.dump(data, f)
  return path, os.path.join(root, 'img'), kp_path


@pytest.mark.parametrize('separate', [False, True])
def test_coco_json_reads_keypoints(tmp_path, separate):
  path, img_dir, kp_path = _write_tiny_coco(str(tmp_path), separate)
  cats = coco_json.read_categories(kp_path or path)
  spec = kps.spec_from_category(kps.select_keypoint_category(cats), 0)
  assert spec.flip_permutation == (0, 2, 1) and spec.category_id == 5
  ds = coco_json.load_coco_json(path, img_dir, keypoint_spec=spec,
                                keypoint_annotations=kp_path)
  r0, r1 = ds.records
  assert r0.keypoints.shape == (2, 3, 3) and r1.keypoints.shape == (1, 3, 3)
  # (y, x, labelled): v=2 and v=1 are labelled, v=0 is not.
  np.testing.assert_array_equal(r0.keypoints[0], [[10, 20, 1], [8, 30, 1], [0, 0, 0]])
  assert np.all(r0.keypoints[1] == 0) and np.all(r1.keypoints == 0)
  assert ds.stats['keypoints_labelled'] == 2 and ds.stats['keypoint_instances'] == 1
  # Without a spec nothing changes.
  assert coco_json.load_coco_json(path, img_dir).records[0].keypoints is None


def test_coco_json_rejects_malformed_keypoints(tmp_path):
  path, img_dir, _ = _write_tiny_coco(str(tmp_path))
  data = json.load(open(path))
  data['annotations'][0]['keypoints'] = [1, 2, 2, 3]
  json.dump(data, open(path, 'w'))
  spec = kps.spec_from_category(data['categories'][0], 0)
  with pytest.raises(ValueError, match="annotation id 1.*'keypoints' must be 9 numbers"):
    coco_json.load_coco_json(path, img_dir, keypoint_spec=spec)
  data['annotations'][0]['keypoints'] = [1, 2, 3, 0, 0, 0, 0, 0, 0]
  json.dump(data, open(path, 'w'))
  with pytest.raises(ValueError, match='visibility flags'):
    coco_json.load_coco_json(path, img_dir, keypoint_spec=spec)


def _config(path, img_dir, kp_path=None, size=64):
  c = config_base.base_config()
  c.dataset.source = 'coco_json'
  c.dataset.train_annotations = c.dataset.val_annotations = path
  c.dataset.train_images = c.dataset.val_images = img_dir
  if kp_path:
    c.dataset.train_keypoint_annotations = c.dataset.val_keypoint_annotations = kp_path
  c.dataset.max_boxes = 4
  c.input.size = size
  c.keypoints.enabled = True
  c.eval.batch_size = 4
  c.batch_size = 2
  return c


def test_pipeline_pads_keypoints_with_masks(tmp_path):
  path, img_dir, kp_path = _write_tiny_coco(str(tmp_path), separate_keypoints=True)
  c = _config(path, img_dir, kp_path)
  facts = sources.resolve(c)
  it, n = pipeline.make_eval_iterator(c, facts)
  assert n == 1 and facts.keypoint_spec.names == ('nose', 'left_eye', 'right_eye')
  assert facts.keypoint_ground_truth_file == kp_path
  b = next(iter(it))
  assert b['keypoints'].shape == (4, 4, 3, 2) and b['keypoint_mask'].shape == (4, 4, 3)
  # Image 1 is 40 x 80: resized to 32 x 64 on the 64 canvas; the nose (x 20, y 10) is at
  # y = 10/40 * 32/64, x = 20/80.
  np.testing.assert_allclose(b['keypoints'][0, 0, 0], [0.125, 0.25], atol=1e-6)
  np.testing.assert_array_equal(b['keypoint_mask'][0], [[1, 1, 0], [0, 0, 0], [0, 0, 0],
                                                        [0, 0, 0]])
  assert b['keypoint_mask'][1:].sum() == 0 and b['keypoints'][2:].sum() == 0
  # Box-only configs get box-only batches.
  c.keypoints.enabled = False
  b = next(iter(pipeline.make_eval_iterator(c, sources.resolve(c))[0]))
  assert 'keypoints' not in b and 'keypoint_mask' not in b
  # Training batches, with flips.
  c.keypoints.enabled = True
  c.input.augmentations = 'random_horizontal_flip'
  b = next(pipeline.make_train_iterator(c, sources.resolve(c)))
  assert b['keypoints'].shape == (2, 4, 3, 2)
  for i in range(2):
    if b['image_id'][i] == 1:
      nose = b['keypoints'][i, 0, 0]
      assert np.isclose(nose[1], 0.25) or np.isclose(nose[1], 0.75)


def test_synthetic_keypoint_set(tmp_path):
  d = config_base.base_config().dataset
  d.synthetic_dir = str(tmp_path / 'kps')
  d.synthetic_num_train = 3
  d.synthetic_num_val = 3
  d.synthetic_image_size = 96
  paths = synthetic_keypoints.ensure_keypoint_dataset(d)
  data = json.load(open(paths['val_annotations']))
  figure = data['categories'][0]
  assert figure['keypoints'] == list(synthetic_keypoints.KEYPOINT_NAMES)
  figs = [a for a in data['annotations'] if a['category_id'] == 1]
  assert figs and all(len(a['keypoints']) == 27 for a in figs)
  for a in figs:
    k = np.asarray(a['keypoints']).reshape(9, 3)
    assert a['num_keypoints'] == int((k[:, 2] > 0).sum())
    x, y, w, h = a['bbox']
    lab = k[:, 2] > 0
    assert np.all(k[lab, 0] >= x - 1) and np.all(k[lab, 0] <= x + w + 1)
    if k[1, 2] and k[2, 2]:  # facing the camera: the left shoulder is on the image's right
      assert k[1, 0] > k[2, 0]
  again = synthetic_keypoints.generate_keypoint_dataset(str(tmp_path / 'again'),
                                                        synthetic_keypoints.generation_params(d))
  assert open(again['val_annotations']).read() == open(paths['val_annotations']).read()


# ---- the TFDS builder --------------------------------------------------------------------------


def test_tfds_coco_keypoints_builder(tmp_path):
  from centernet_jax.data import tfds_coco_keypoints  # pylint: disable=g-import-not-at-top
  manual = tmp_path / 'coco'
  (manual / 'annotations').mkdir(parents=True)
  (manual / 'val2017').mkdir()
  rng = np.random.default_rng(0)
  images, instances, keypoints = [], [], []
  for i in range(3):
    h, w = 40 + 8 * i, 64
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        manual / 'val2017' / f'{i:012d}.jpg', quality=95)
    images.append({'id': 100 + i, 'file_name': f'{i:012d}.jpg', 'height': h, 'width': w})
    person = {'id': 10 * i + 1, 'image_id': 100 + i, 'category_id': 1, 'iscrowd': 0,
              'bbox': [4, 6, 30, 20], 'area': 600.0}
    joints = np.zeros((17, 3))
    joints[:5] = [[10 + j, 8 + j, 2 if j % 2 else 1] for j in range(5)]
    keypoints.append(dict(person, keypoints=joints.reshape(-1).tolist(), num_keypoints=5))
    instances.append(person)
    instances.append({'id': 10 * i + 2, 'image_id': 100 + i, 'category_id': 18, 'iscrowd': 0,
                      'bbox': [40, 10, 10, 10], 'area': 100.0})
  cats = [{'id': cid, 'name': n} for cid, n in tfds_coco.COCO_CATEGORIES]
  with open(manual / 'annotations' / 'instances_val2017.json', 'w') as f:
    json.dump({'images': images, 'annotations': instances, 'categories': cats}, f)
  with open(manual / 'annotations' / 'person_keypoints_val2017.json', 'w') as f:
    json.dump({'images': images, 'annotations': keypoints,
               'categories': [kps.coco_person_category()]}, f)
  data_dir = str(tmp_path / 'tfds')
  builder = tfds_coco_keypoints.build(str(manual), data_dir)
  assert builder.info.splits['validation'].num_examples == 3
  assert builder.info.metadata['keypoint_names'][1] == 'left_eye'

  c = config_base.base_config()
  c.dataset.source = 'tfds'
  c.dataset.tfds_name = 'coco_keypoints/2017'
  c.dataset.tfds_data_dir = data_dir
  c.dataset.val_annotations = str(manual / 'annotations' / 'instances_val2017.json')
  c.dataset.val_keypoint_annotations = str(
      manual / 'annotations' / 'person_keypoints_val2017.json')
  c.dataset.max_boxes = 4
  c.input.size = 64
  c.eval.batch_size = 4
  c.keypoints.enabled = True
  spec = sources.resolve(c).keypoint_spec
  assert spec.num_keypoints == 17 and spec.channel == 0 and spec.flip_permutation[1] == 2
  it, _ = pipeline.make_eval_iterator(c, sources.resolve(c))
  b = next(iter(it))
  by_id = {int(i): n for n, i in enumerate(b['image_id'][:3])}
  for i in range(3):
    n = by_id[100 + i]
    h = 40 + 8 * i
    assert b['box_mask'][n].sum() == 2
    person = int(np.argmin(b['classes'][n][:2]))  # channel 0 = person, 17 = dog (id 18)
    np.testing.assert_array_equal(b['keypoint_mask'][n, person], [1] * 5 + [0] * 12)
    np.testing.assert_array_equal(b['keypoint_mask'][n, 1 - person], [0] * 17)
    # Joint j at (x 10 + j, y 8 + j) pixels; an h x 64 image (h < 64) keeps its size on the
    # 64 canvas, so normalized to the canvas: (y / 64, x / 64).
    assert b['true_size'][n].tolist() == [h, 64]
    np.testing.assert_allclose(b['keypoints'][n, person, 2], [10 / 64, 12 / 64], atol=1e-5)
