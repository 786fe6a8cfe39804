"""The tiny test experiment as a config file, for tests that run `centernet_jax.main`."""

from tests import tiny


def get_config():
  return tiny.tiny_config('data_cache/tests_synthetic')
