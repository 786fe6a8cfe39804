"""tools/compare_runs.py: leaf-by-leaf differences of two train states."""

import importlib.util
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools',
                     'compare_runs.py')
_spec = importlib.util.spec_from_file_location('compare_runs', _PATH)
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


def test_differences_per_part_and_worst_leaf():
  a = {'params': {'conv': {'kernel': np.array([1.0, -4.0]), 'bias': np.array([0.5])}},
       'step': np.array(3)}
  b = {'params': {'conv': {'kernel': np.array([1.0, -4.2]), 'bias': np.array([0.5 + 1e-3])}},
       'step': np.array(3)}
  d = compare_runs.leaf_differences(a, b)
  assert d['step'] == (0.0, 0.0, '')
  max_abs, max_rel, leaf = d['params']
  assert max_abs == pytest.approx(0.2)
  assert max_rel == pytest.approx(0.05) and leaf == "['conv']['kernel']"


def test_structure_mismatch_is_named():
  a = {'params': {'w': np.zeros([2, 3])}}
  with pytest.raises(ValueError, match=r"params\['w'\]: shape \(2, 3\) vs \(3, 2\)"):
    compare_runs.leaf_differences(a, {'params': {'w': np.zeros([3, 2])}})
  with pytest.raises(ValueError, match='only one'):
    compare_runs.leaf_differences(a, {'opt_state': {}})
