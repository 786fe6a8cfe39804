"""The zoo augmentations random_square_crop_by_scale and random_patch_gaussian, and the
ordered op list of `input.augmentations` (augment.py)."""

import numpy as np
import pytest
import tensorflow as tf

from centernet_jax import config_base
from centernet_jax.data import augment
from centernet_jax.data import pipeline
from centernet_jax.data import view

H, W = 300, 500
# Solid objects on a black image: (ymin, xmin, ymax, xmax) pixels, colour.
OBJECTS = [((30, 40, 110, 160), (255, 0, 0)), ((150, 250, 280, 480), (0, 255, 0)),
           ((10, 400, 60, 490), (0, 0, 255)), ((200, 10, 290, 120), (255, 255, 0))]
# The scales as the op (and the OD API) computes them: float32 linspace, side truncated.
SCALES = tf.linspace(0.6, 1.3, 8).numpy().astype(np.float32)
SIDES = {int(s * np.float32(max(H, W))) for s in SCALES}  # e.g. 1.2 * 500 -> 599


def _scene():
  image = np.zeros((H, W, 3), np.float32)
  boxes = []
  for (y0, x0, y1, x1), colour in OBJECTS:
    image[y0:y1, x0:x1] = colour
    boxes.append([y0 / H, x0 / W, y1 / H, x1 / W])
  return tf.constant(image), tf.constant(boxes, tf.float32)


def _seed(i):
  return tf.constant([i, 17], tf.int64)


def _square_crop(image, boxes, seed, **kwargs):
  """(image, boxes, kept) of the op; kept = the input indices of the surviving boxes (the
  example's classes are the box indices, and follow the boxes)."""
  out = view.materialize(augment.random_square_crop_by_scale(
      {'image': image, 'boxes': boxes, 'classes': tf.range(tf.shape(boxes)[0])}, seed, **kwargs))
  return out['image'], out['boxes'], out['classes']


def _patch_gaussian(image, seed, **kwargs):
  return augment.random_patch_gaussian({'image': image}, seed, **kwargs)['image']


def _assert_boxes_on_objects(image, boxes, kept):
  """Every kept box covers pixels of its own object's colour (its visible part)."""
  image = np.asarray(image)
  side_h, side_w = image.shape[:2]
  for box, k in zip(np.asarray(boxes), np.asarray(kept)):
    colour = np.asarray(OBJECTS[k][1], np.float32)
    y0, x0, y1, x1 = box * [side_h, side_w, side_h, side_w]
    # Inner part (1.5 px margin against rounding), where the box is not degenerate.
    iy0, ix0 = int(np.ceil(y0 + 1.5)), int(np.ceil(x0 + 1.5))
    iy1, ix1 = int(np.floor(y1 - 1.5)), int(np.floor(x1 - 1.5))
    if iy1 <= iy0 or ix1 <= ix0:
      continue
    patch = image[iy0:iy1, ix0:ix1].reshape(-1, 3)
    np.testing.assert_allclose(patch, np.broadcast_to(colour, patch.shape), atol=1e-3)
    # ... and the pixels just outside the box are not all of that colour (it is tight),
    # unless the box touches the window border.
    if 2 <= y0 and y1 <= side_h - 2 and 2 <= x0 and x1 <= side_w - 2:
      ring = image[int(y0) - 2, int(x0):int(x1)]
      assert not np.allclose(ring, colour, atol=1e-3)


@pytest.mark.parametrize('seed', range(12))
def test_square_crop_keeps_boxes_on_objects(seed):
  image, boxes = _scene()
  out, new_boxes, kept = _square_crop(image, boxes, _seed(seed))
  side = out.shape[0]
  assert out.shape == (side, side, 3)
  assert side in SIDES
  nb = np.asarray(new_boxes)
  assert nb.shape == (len(kept), 4)
  assert np.all(nb >= 0.0) and np.all(nb <= 1.0)
  assert np.all(nb[:, 2] > nb[:, 0]) and np.all(nb[:, 3] > nb[:, 1])
  _assert_boxes_on_objects(out, new_boxes, kept)


def test_square_crop_window_boxes_drops_and_black_padding():
  """The window read back from a coordinate image: boxes are the window frame, clipped; boxes
  completely outside the window are dropped; pixels outside the image are black."""
  yy, xx = np.meshgrid(np.arange(H, dtype=np.float32), np.arange(W, dtype=np.float32),
                       indexing='ij')
  coords = tf.constant(np.stack([yy + 1, xx + 1, np.ones_like(yy)], -1))  # 0 = padding
  _, boxes = _scene()
  seen_drop = seen_pad = False
  for seed in range(40):
    out, new_boxes, kept = _square_crop(coords, boxes, _seed(seed))
    out = np.asarray(out)
    side = out.shape[0]
    rows, cols = np.nonzero(out[..., 2])
    wy = out[rows[0], cols[0], 0] - 1 - rows[0]  # window top-left in image pixels
    wx = out[rows[0], cols[0], 1] - 1 - cols[0]
    # Every visible pixel agrees with that window; the rest is black padding.
    r, c = np.meshgrid(np.arange(side), np.arange(side), indexing='ij')
    visible = (r + wy >= 0) & (r + wy < H) & (c + wx >= 0) & (c + wx < W)
    np.testing.assert_array_equal(out[..., 0][visible], (r + wy + 1)[visible])
    np.testing.assert_array_equal(out[..., 1][visible], (c + wx + 1)[visible])
    assert np.all(out[~visible] == 0)
    seen_pad |= bool(np.any(~visible))
    expected_kept, expected_boxes = [], []
    for i, ((oy0, ox0, oy1, ox1), _) in enumerate(OBJECTS):
      if oy0 >= wy + side or oy1 <= wy or ox0 >= wx + side or ox1 <= wx:
        seen_drop = True
        continue
      expected_kept.append(i)
      expected_boxes.append(np.clip(
          [(oy0 - wy) / side, (ox0 - wx) / side, (oy1 - wy) / side, (ox1 - wx) / side], 0, 1))
    assert list(np.asarray(kept)) == expected_kept, seed
    np.testing.assert_allclose(new_boxes, np.reshape(expected_boxes, [-1, 4]), atol=1e-5)
  assert seen_drop and seen_pad


def test_square_crop_scales_and_center_border():
  image, boxes = _scene()
  sides = set()
  for seed in range(60):
    out, _, _ = _square_crop(image, boxes, _seed(seed))
    sides.add(out.shape[0])
  assert sides <= SIDES and len(sides) >= 6, sides
  assert 300 in SIDES and 650 in SIDES and len(SIDES) == 8  # 0.6 and 1.3 x 500
  # The centre border: 128 for sides of 256 px or more, halved for smaller images.
  borders = {s: int(augment._crop_center_border(128, tf.constant(s))) for s in
             (1024, 256, 255, 200, 128, 64, 3)}
  assert borders == {1024: 128, 256: 128, 255: 64, 200: 64, 128: 64, 64: 32, 3: 1}
  # A tiny image still works.
  out, b, k = _square_crop(tf.ones([3, 5, 3]), tf.constant([[0.0, 0.0, 1.0, 1.0]]), _seed(0))
  assert out.shape[0] == out.shape[1] >= 3 and len(k) == 1


def test_square_crop_is_deterministic_per_seed():
  image, boxes = _scene()
  a = _square_crop(image, boxes, _seed(3))
  b = _square_crop(image, boxes, _seed(3))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  outs = {_square_crop(image, boxes, _seed(s))[1].numpy().tobytes()
          for s in range(6)}
  assert len(outs) > 1


def _changed(a, b):
  return np.any(np.asarray(a) != np.asarray(b), axis=-1)


@pytest.mark.parametrize('seed', range(8))
def test_patch_gaussian_changes_one_square_patch(seed):
  image = tf.fill([H, W, 3], 128.0)
  out = np.asarray(_patch_gaussian(image, _seed(seed)))
  assert out.shape == (H, W, 3)
  assert out.min() >= 0.0 and out.max() <= 255.0
  changed = _changed(out, image)
  ys, xs = np.nonzero(changed)
  if not len(ys):  # sigma ~ 0 or a 1-pixel patch whose noise rounded away: nothing to check
    return
  h = ys.max() - ys.min() + 1
  w = xs.max() - xs.min() + 1
  assert h < 250 and w < 250
  # The changed pixels fill their bounding rectangle (one patch) ...
  assert changed.sum() >= 0.95 * h * w
  # ... which is square unless the image border cuts it.
  inside = ys.min() > 0 and xs.min() > 0 and ys.max() < H - 1 and xs.max() < W - 1
  if inside:
    assert abs(int(h) - int(w)) <= 1


def test_patch_gaussian_sizes_sigma_and_clipping():
  image = tf.fill([600, 600, 3], 128.0)
  sides, sigmas = [], []
  for seed in range(30):
    out = np.asarray(_patch_gaussian(image, _seed(seed)))
    changed = _changed(out, image)
    ys, xs = np.nonzero(changed)
    if len(ys) < 100:
      continue
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    sides.append(max(h, w))
    sigmas.append(np.std(out[changed] / 255.0))
  assert sides and max(sides) < 250
  assert len(set(sides)) > 5
  # sigma is drawn from U[0, 1) on x/255 (clipping at [0, 1] shrinks the spread).
  assert max(sigmas) <= 0.6 and max(sigmas) > 0.1
  # A bright image: noise on x/255 is clipped at 1.0 -> 255.
  out = np.asarray(_patch_gaussian(tf.fill([200, 200, 3], 250.0), _seed(1)))
  assert out.max() <= 255.0 and np.any(out == 255.0)


def test_patch_gaussian_random_coef_and_determinism():
  image = tf.random.stateless_uniform([100, 120, 3], [1, 2], 0, 255)
  for s in range(5):
    kept = _patch_gaussian(image, _seed(s), random_coef=1.0)
    np.testing.assert_array_equal(kept, image)
  a = _patch_gaussian(image, _seed(4))
  b = _patch_gaussian(image, _seed(4))
  np.testing.assert_array_equal(a, b)
  c = _patch_gaussian(image, _seed(5))
  assert not np.array_equal(a, c)
  # Half the time with random_coef 0.5.
  applied = sum(not np.array_equal(_patch_gaussian(
      image, _seed(s), random_coef=0.5), image) for s in range(40))
  assert 8 <= applied <= 32


def test_augmenter_applies_the_listed_ops_in_order_with_name_and_position_seeds():
  base = config_base.base_config().input.augmentations
  assert 'square_crop' not in base and 'patch_gaussian' not in base  # default off
  image, boxes = _scene()
  classes = tf.constant([10, 11, 12, 13])
  example = {'image': image, 'boxes': boxes, 'classes': classes}
  seed = _seed(7)
  # Square crop: square output, classes follow the kept boxes, same as the op itself with
  # the seed of its name and position.
  out = view.materialize(augment.Augmenter('random_square_crop_by_scale')(example, seed))
  assert out['image'].shape[0] == out['image'].shape[1]
  ref = view.materialize(augment.random_square_crop_by_scale(
      example, augment.op_seed(seed, 0, 'random_square_crop_by_scale')))
  for key in ('image', 'boxes', 'classes'):
    np.testing.assert_array_equal(out[key], ref[key])
  # No keypoints in, none out (no colour op: no parameters).
  assert set(out) == {'image', 'boxes', 'classes', 'colour_params', 'colour_windows'}
  assert out['colour_params'].shape == (0,)
  # Patch gaussian: boxes unchanged, image changed.
  out = view.materialize(augment.Augmenter('random_patch_gaussian')(example, seed))
  np.testing.assert_array_equal(out['boxes'], boxes)
  np.testing.assert_array_equal(out['classes'], classes)
  assert out['image'].shape == image.shape
  # An op appended to the list leaves the earlier ops' randomness alone.
  zoo = ('random_horizontal_flip|random_crop_image(random_coef=0.0)|random_adjust_hue(0.02)|'
         'random_adjust_contrast(0.8, 1.25)')
  off = augment.Augmenter(zoo)(example, seed)
  on = augment.Augmenter(zoo + '|random_patch_gaussian')(example, seed)
  np.testing.assert_array_equal(off['boxes'], on['boxes'])
  # The same op at another position draws another window.
  crops = {augment.Augmenter('|'.join(['random_adjust_hue(0.0)'] * i +
                                      ['random_crop_image(random_coef=0.0)']))(
                                          example, seed)['boxes'].numpy().tobytes()
           for i in range(4)}
  assert len(crops) > 1
  # Arguments: positional in signature order, or by name; the same op either way.
  a = view.materialize(augment.Augmenter('random_absolute_pad_image(7, 3)')(example, seed))
  b = view.materialize(augment.Augmenter('random_absolute_pad_image(max_width_padding=3, '
                                         'max_height_padding=7)')(example, seed))
  np.testing.assert_array_equal(a['image'], b['image'])
  assert a['image'].shape[0] <= H + 7 and a['image'].shape[1] <= W + 3


def test_spec_errors_name_the_op():
  with pytest.raises(ValueError, match=r"op 1 'random_flip': unknown op"):
    augment.parse_spec('random_horizontal_flip|random_flip')
  with pytest.raises(ValueError, match=r"op 0 .*: no argument 'probabilty'"):
    augment.parse_spec('random_horizontal_flip(probabilty=0.2)')
  with pytest.raises(ValueError, match=r'op 0 .*: 3 positional arguments, the op takes at most 2'):
    augment.parse_spec('random_absolute_pad_image(1, 2, 3)')
  with pytest.raises(ValueError, match=r'op 0 .*: arguments must be Python literals'):
    augment.parse_spec('random_adjust_hue(x)')
  assert augment.parse_spec('') == []
  # The flip permutation is the dataset's, never the spec's.
  with pytest.raises(ValueError, match="no argument 'flip_permutation'"):
    augment.parse_spec('random_horizontal_flip(flip_permutation=(1, 0))')


def test_pipeline_preprocess_with_zoo_ops():
  config = config_base.base_config()
  config.input.size = 128
  # As the HG104 1024 rows: no crop / pad with the square crop.
  config.input.augmentations = 'random_patch_gaussian|random_square_crop_by_scale'
  config.dataset.max_boxes = 8
  image, boxes = _scene()
  example = {'image': tf.cast(image, tf.uint8), 'boxes': boxes,
             'classes': tf.constant([1, 2, 3, 4]), 'image_id': tf.constant(5)}
  ex = pipeline.preprocess(example, config=config,
                           augmenter=augment.Augmenter(config.input.augmentations),
                           seed=_seed(2))
  assert ex['image'].shape == (128, 128, 3) and ex['image'].dtype == tf.uint8
  assert list(ex['true_size'].numpy()) == [128, 128]  # square crop -> square image
  n = int(ex['box_mask'].numpy().sum())
  assert 1 <= n <= 4
