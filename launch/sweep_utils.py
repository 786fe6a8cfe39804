"""Building blocks for `get_sweep()` in experiment files.

A sweep is a list of override dicts, `{'optimizer.learning_rate': 1e-3, 'batch_size': 16}`,
one per run (keys are config field paths, as in `--config.optimizer.learning_rate=...`).

  from launch import sweep_utils as su

  def get_sweep():
    return su.concat(
        su.product(**{'optimizer.learning_rate': [1e-3, 2e-3], 'batch_size': [16, 32]}),
        su.cross(su.zip_(**{'model.depth': [18, 50], 'input.size': [256, 512]}),
                 su.fixed(**{'num_train_steps': 1000})),
    )

Keyword names may also spell dots as double underscores: `product(optimizer__learning_rate=...)`.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Mapping, Sequence

Sweep = list[dict[str, Any]]


def _key(name: str) -> str:
  return name.replace('__', '.')


def _values(name: str, values: Any) -> list[Any]:
  if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
    raise TypeError(f'{name}: want a list of values, got {values!r}')
  return list(values)


def product(**fields: Sequence[Any]) -> Sweep:
  """Every combination (the first field varies slowest): `product(a=[1, 2], b=[3, 4])` ->
  `[{a:1,b:3}, {a:1,b:4}, {a:2,b:3}, {a:2,b:4}]`."""
  keys = [_key(k) for k in fields]
  value_lists = [_values(k, v) for k, v in fields.items()]
  return [dict(zip(keys, combo)) for combo in itertools.product(*value_lists)]


def zip_(**fields: Sequence[Any]) -> Sweep:
  """Values taken together, position by position: `zip_(a=[1, 2], b=[3, 4])` ->
  `[{a:1,b:3}, {a:2,b:4}]`. All lists must have the same length."""
  keys = [_key(k) for k in fields]
  value_lists = [_values(k, v) for k, v in fields.items()]
  lengths = {len(v) for v in value_lists}
  if len(lengths) > 1:
    raise ValueError('zip_ wants lists of one length, got ' +
                     ', '.join(f'{k}: {len(v)}' for k, v in zip(keys, value_lists)))
  return [dict(zip(keys, combo)) for combo in zip(*value_lists)]


def fixed(**fields: Any) -> Sweep:
  """One point: `fixed(a=1)` -> `[{a: 1}]` (to `cross` into another sweep)."""
  return [{_key(k): v for k, v in fields.items()}]


def concat(*sweeps: Sequence[Mapping[str, Any]]) -> Sweep:
  """The runs of every sweep, one after another."""
  return [dict(point) for sweep in sweeps for point in sweep]


def cross(*sweeps: Sequence[Mapping[str, Any]]) -> Sweep:
  """Every combination of one point from each sweep, merged; a field set twice is an error."""
  out = []
  for combo in itertools.product(*sweeps):
    merged: dict[str, Any] = {}
    for point in combo:
      for key, value in point.items():
        if key in merged:
          raise ValueError(f'cross: field {key!r} is set by two sweeps')
        merged[key] = value
    out.append(merged)
  return out
