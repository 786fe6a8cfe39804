"""The zoo's learning-rate schedules."""

import math

import numpy as np
import pytest

from centernet_jax import config_base
from centernet_jax import optimizer


def _cosine_reference(step, base, warm_lr, warmup, total):
  if step < warmup:
    return warm_lr + (base - warm_lr) * step / warmup
  if step >= total:
    return 0.0
  return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_cosine_with_linear_warmup_matches_formula():
  c = config_base.base_config().optimizer
  schedule = optimizer.learning_rate_schedule(c, 250000)
  for step in [0, 1, 2500, 4999, 5000, 5001, 100000, 249999, 250000, 260000]:
    expected = _cosine_reference(step, 1e-3, 2.5e-4, 5000, 250000)
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-12)


def test_manual_steps():
  c = config_base.base_config().optimizer
  c.schedule = 'manual_steps'
  schedule = optimizer.learning_rate_schedule(c, 140000)
  got = [float(schedule(s)) for s in (0, 89999, 90000, 119999, 120000, 139999)]
  np.testing.assert_allclose(got, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)


def test_bad_schedule_configs_are_rejected():
  c = config_base.base_config().optimizer
  with pytest.raises(ValueError, match='warmup_steps'):
    optimizer.learning_rate_schedule(c, 100)
  c.schedule = 'manual_steps'
  c.manual_rates = (1e-3, 1e-4)
  with pytest.raises(ValueError, match='one more entry'):
    optimizer.learning_rate_schedule(c, 140000)
  c.schedule = 'linear'
  with pytest.raises(ValueError, match="'cosine' or 'manual_steps'"):
    optimizer.learning_rate_schedule(c, 140000)
