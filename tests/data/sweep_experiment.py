"""A tiny sweep for the launch tests: the tiny test config with a 2 x 2 product and a zip."""

from launch import sweep_utils as su
from tests import tiny


def get_config():
  return tiny.tiny_config('data_cache/tests_synthetic')


def get_sweep():
  return su.concat(
      su.product(**{'optimizer.learning_rate': [1e-3, 2e-3], 'batch_size': [8, 16]}),
      su.zip_(**{'num_train_steps': [3, 6], 'model.depth': [18, 34]}),
  )
