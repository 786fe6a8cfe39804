"""The augmented view (data/view.py): one resample onto the canvas equals cropping, padding,
flipping and resizing in turn; the colour ops' parameters and windows (augment.py)."""

import numpy as np
import pytest
import tensorflow as tf

from centernet_jax import colour_augment
from centernet_jax import config_base
from centernet_jax.data import augment
from centernet_jax.data import pipeline
from centernet_jax.data import view

ZOO_512 = config_base.base_config().input.augmentations
SQUARE = 'random_horizontal_flip|random_square_crop_by_scale'
BOXES = np.array([[0.1, 0.2, 0.5, 0.6], [0.4, 0.5, 0.9, 0.95], [0.0, 0.0, 0.2, 0.1]],
                 np.float32)


def _example(h=48, w=64, seed=0, dtype=np.uint8):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (h, w, 3)).astype(dtype)
  return {'image': tf.constant(image), 'boxes': tf.constant(BOXES),
          'classes': tf.constant([0, 1, 2])}


def _numpy_pixels(ex):
  """The augmented image float32 [h, w, 3] from the view's definition (view.py), in numpy:
  the (mirrored when view_flip) source's pixel (0, 0) at view_origin, black outside
  view_valid."""
  source = ex['source'].numpy().astype(np.float32)
  if ex['view_flip']:
    source = source[:, ::-1]
  oy, ox = ex['view_origin'].numpy()
  y0, x0, y1, x1 = ex['view_valid'].numpy()
  image = np.zeros(list(ex['view_size'].numpy()) + [3], np.float32)
  if y1 > y0 and x1 > x0:
    image[y0:y1, x0:x1] = source[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
  return image


def _sequential(ex, size):
  """The reference: the view's pixels (independently of view.py), then evaluation's resize
  and pad."""
  pixels = _numpy_pixels(ex)
  np.testing.assert_array_equal(view.materialize(ex)['image'].numpy(), pixels)
  image, boxes, true_size = pipeline.resize_and_pad(tf.constant(pixels), ex['boxes'], size)
  return np.clip(np.round(image.numpy()), 0, 255), boxes.numpy(), true_size.numpy()


@pytest.mark.parametrize('spec,size', [(ZOO_512, 40), (ZOO_512, 300), (SQUARE, 100),
                                       ('random_absolute_pad_image(0, 90)', 64), ('', 48)])
def test_one_resample_equals_the_ops_in_turn(spec, size):
  """Pixels, boxes and sizes exactly (the same kernel on the same pixels, then uint8
  rounding): downscaling (40), upscaling (300), square crops with black borders, a flip, the
  identity."""
  augmenter = augment.Augmenter(spec)
  seen_flip = seen_crop = False
  for s in range(16):
    ex = augmenter(_example(seed=s), tf.constant([s, 3], tf.int64))
    canvas, scale, true_size = view.to_canvas(ex, size)
    ref_image, ref_boxes, ref_true_size = _sequential(ex, size)
    assert canvas.dtype == tf.uint8 and canvas.shape == (size, size, 3)
    np.testing.assert_array_equal(true_size, ref_true_size)
    np.testing.assert_array_equal(canvas.numpy(), ref_image, err_msg=str(s))
    boxes = ex['boxes'].numpy() * np.tile(scale.numpy(), 2)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=1e-6, atol=1e-7)
    seen_flip |= bool(ex['view_flip'])
    seen_crop |= bool(np.any(ex['view_size'].numpy() != [48, 64]))
  assert spec == '' or seen_crop
  assert seen_flip == ('flip' in spec)


def test_materialize_is_exact_crop_pad_flip():
  """The view's pixels are the decoded image's, translated and mirrored."""
  image = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6, 8, 3)
  ex = view.start({'image': tf.constant(image)})
  ex = view.window(ex, 2, -3, 5, 9)  # a crop at the top, a pad at the left
  ex = view.flip_left_right(ex)
  ex = view.window(ex, -1, 1, 7, 4)
  expected = np.zeros((5, 9, 3), np.float32)
  expected[:4, 3:] = image[2:6, 0:6]
  expected = expected[:, ::-1]
  expected = np.pad(expected, [[1, 1], [0, 0], [0, 0]])[:, 1:5]
  np.testing.assert_array_equal(view.materialize(ex)['image'].numpy(), expected)


def test_training_batches_carry_the_same_random_draws():
  """The colour ops draw the numbers they drew when they ran on the host: same op seeds,
  same ranges, in the order of the list."""
  augmenter = augment.Augmenter(ZOO_512)
  seed = tf.constant([5, 9], tf.int64)
  ex = augmenter(_example(), seed)
  expected = []
  for i, op in enumerate(augmenter.ops):
    if augment.OPS[op.name].kind != 'device':
      continue
    a = augment._arguments(op)  # pylint: disable=protected-access
    lo, hi = ((a['min_delta'], a['max_delta']) if 'min_delta' in a
              else (-a['max_delta'], a['max_delta']))
    expected.append(tf.random.stateless_uniform(
        [], augment.op_seed(seed, i, op.name), lo, hi, tf.float32).numpy())
  np.testing.assert_array_equal(ex['colour_params'].numpy(), expected)
  assert augmenter.num_device_ops == 4
  assert colour_augment.device_ops(ZOO_512) == (
      'random_adjust_hue', 'random_adjust_contrast', 'random_adjust_saturation',
      'random_adjust_brightness')


def test_colour_windows_leave_a_later_pad_black():
  """Colour listed before the pad (the zoo's order) applies to the image, not the pad; after
  it, to both (as the OD API's op, which sees the padded image)."""
  config = config_base.base_config()
  config.input.size = 64
  config.dataset.max_boxes = 4
  image = tf.fill([40, 60, 3], tf.constant(100, tf.uint8))
  example = {'image': image, 'boxes': tf.constant(BOXES[:1]), 'classes': tf.constant([1]),
             'image_id': tf.constant(1)}
  for spec, pad_changes in (('random_adjust_brightness(0.3)|random_absolute_pad_image(30, 30)',
                             False),
                            ('random_absolute_pad_image(30, 30)|random_adjust_brightness(0.3)',
                             True)):
    config.input.augmentations = spec
    augmenter = augment.Augmenter(spec)
    for s in range(6):
      out = pipeline.preprocess(example, config=config, augmenter=augmenter,
                                seed=tf.constant([s, 1], tf.int64))
      batch = {k: v.numpy()[None] for k, v in out.items()}
      images = np.asarray(colour_augment.apply(
          np.float32(batch['image']), batch['colour_params'], batch['colour_windows'],
          colour_augment.device_ops(spec)))[0]
      delta = float(batch['colour_params'][0, 0])
      raw = batch['image'][0].astype(np.float32)
      nh, nw = out['true_size'].numpy()
      inside = raw == 100  # interior image pixels (not blended with the black pad)
      np.testing.assert_allclose(images[inside], np.clip(100 / 255 + delta, 0, 1) * 255,
                                 atol=1e-3)
      black = np.zeros(raw.shape[:2], bool)
      black[:nh, :nw] = raw[:nh, :nw, 0] == 0
      if pad_changes:
        np.testing.assert_allclose(images[black], np.clip(delta, 0, 1) * 255, atol=1e-3)
      else:
        assert np.all(images[black] == 0)
      assert np.all(images[nh:] == 0) and np.all(images[:, nw:] == 0)  # canvas padding


def test_host_pixel_op_after_a_colour_op_is_refused():
  problems = augment.spec_problems('random_adjust_hue(0.02)|random_patch_gaussian')
  assert any('op 1 random_patch_gaussian: comes after the colour op 0 random_adjust_hue'
             in p for p in problems), problems
  assert not augment.spec_problems('random_patch_gaussian|random_adjust_hue(0.02)')
  # Which ops run on the device is the ops' registry's word, and the device knows them all.
  device = {name for name, op in augment.OPS.items() if op.kind == 'device'}
  assert device == set(colour_augment.DEVICE_OPS)


def test_a_window_showing_none_of_the_image_is_black():
  """A square crop after a pad can fall in the pad: a black image, no error."""
  ex = view.start({'image': tf.fill([10, 12, 3], tf.constant(200, tf.uint8))})
  for window in ((20, 30, 8, 8), (-20, 3, 8, 8), (3, -40, 8, 30)):
    out = view.flip_left_right(view.window(ex, *window))
    canvas, _, _ = view.to_canvas(out, 16)
    assert not np.any(canvas.numpy()) and not np.any(view.materialize(out)['image'].numpy())
  canvas, _, _ = view.to_canvas(view.window(ex, -2, -2, 20, 20), 16)
  assert canvas.numpy().max() == 200
