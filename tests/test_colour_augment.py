"""The device colour ops (colour_augment.py) against the OD API's host ops (tf.image)."""

import numpy as np
import pytest
import tensorflow as tf

from centernet_jax import colour_augment

OPS = {
    'random_adjust_hue': lambda x, p: tf.image.adjust_hue(x, p),
    'random_adjust_contrast': lambda x, p: tf.image.adjust_contrast(x, p),
    'random_adjust_saturation': lambda x, p: tf.image.adjust_saturation(x, p),
    'random_adjust_brightness': lambda x, p: tf.image.adjust_brightness(x, p),
}
PARAMS = {'random_adjust_hue': (-0.02, 0.02, 0.3), 'random_adjust_contrast': (0.8, 1.25, 0.3),
          'random_adjust_saturation': (0.8, 1.25, 0.0),
          'random_adjust_brightness': (-0.2, 0.2, 0.7)}


def _images(b=3, s=24, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (b, s, s, 3)).astype(np.float32)
  images[:, :3] = 255.0  # saturated and grey pixels: the HSV edge cases
  images[:, 3:6] = 128.0
  images[:, 6, :, 1:] = 0.0
  return images


def _host(images, names, params):
  """The former host ops in turn: op(x / 255) clipped to [0, 1], times 255, per image."""
  out = []
  for b, image in enumerate(images):
    x = tf.constant(image)
    for k, name in enumerate(names):
      x = tf.clip_by_value(OPS[name](x / 255.0, float(params[b, k])), 0.0, 1.0) * 255.0
    out.append(x.numpy())
  return np.stack(out)


@pytest.mark.parametrize('name', sorted(OPS))
def test_each_op_equals_the_host_op_on_an_unpadded_image(name):
  images = _images()
  params = np.asarray([PARAMS[name]], np.float32).T  # [B=3, K=1]
  windows = np.tile(np.float32([0, 0, 1, 1]), (3, 1, 1))
  got = np.asarray(colour_augment.apply(images, params, windows, (name,)))
  np.testing.assert_allclose(got, _host(images, (name,), params), atol=2e-3)


def test_the_zoo_sequence_and_windows():
  names = ('random_adjust_hue', 'random_adjust_contrast', 'random_adjust_saturation',
           'random_adjust_brightness')
  images = _images(b=2, s=20, seed=1)
  params = np.float32([[0.015, 1.2, 0.85, -0.1], [-0.01, 0.85, 1.2, 0.15]])
  full = np.tile(np.float32([0, 0, 1, 1]), (2, 4, 1))
  got = np.asarray(colour_augment.apply(images, params, full, names))
  np.testing.assert_allclose(got, _host(images, names, params), atol=2e-3)
  # A window: the ops apply there only, and contrast takes its mean there (as the host op
  # on that part of the image alone).
  window = np.tile(np.float32([0.25, 0.1, 0.75, 0.5]), (2, 4, 1))  # rows 5..14, cols 2..9
  got = np.asarray(colour_augment.apply(images, params, window, names))
  inner = _host(images[:, 5:15, 2:10], names, params)
  np.testing.assert_allclose(got[:, 5:15, 2:10], inner, atol=2e-3)
  outside = np.ones(got.shape[:3], bool)
  outside[:, 5:15, 2:10] = False
  np.testing.assert_array_equal(got[outside], images[outside])


def test_identity_batch_leaves_images_unchanged():
  spec = ('random_horizontal_flip|random_adjust_hue(0.02)|random_adjust_contrast(0.8, 1.25)|'
          'random_adjust_saturation(0.8, 1.25)|random_adjust_brightness(0.2)')
  images = _images(b=2)
  batch = colour_augment.identity_batch(spec, 2)
  assert batch['colour_params'].shape == (2, 4) and batch['colour_windows'].shape == (2, 4, 4)
  got = np.asarray(colour_augment.apply(images, batch['colour_params'],
                                        batch['colour_windows'],
                                        colour_augment.device_ops(spec)))
  np.testing.assert_allclose(got, images, atol=2e-3)
  with pytest.raises(ValueError, match='colour_params has 4 ops per image, the spec 0'):
    colour_augment.apply(images, batch['colour_params'], batch['colour_windows'], ())
