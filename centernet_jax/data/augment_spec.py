"""The syntax of `config.input.augmentations`, without TensorFlow (the train step reads it).

'op|op(1, b=2)|...': `|` separates ops; arguments are Python literals, positional ones in the
order of the op's signature. augment.parse_spec binds the arguments to the ops; the device
colour ops (colour_augment.py) only need the names in order.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class RawOp:
  """One op of the spec as written: its name, positional and keyword literals, and `where`
  ('<field>: op <i> <text>') for messages."""
  name: str
  args: tuple[Any, ...]
  kwargs: dict[str, Any]
  where: str


def split_spec(spec: str, field: str = 'input.augmentations') -> list[RawOp]:
  """'op|op(1, b=2)|...' -> [RawOp]; ValueError naming `field`, the op and its position."""
  ops = []
  for i, part in enumerate(p.strip() for p in str(spec).split('|')):
    if not part:
      if str(spec).strip():
        raise ValueError(f'{field}={spec!r}: op {i} is empty (two "|" in a row?)')
      continue
    where = f'{field}: op {i} {part!r}'
    try:
      node = ast.parse(part, mode='eval').body
    except SyntaxError as e:
      raise ValueError(f'{where}: not `name` or `name(arguments)` ({e.msg})') from None
    if isinstance(node, ast.Name):
      ops.append(RawOp(node.id, (), {}, where))
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      try:
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
      except ValueError:
        raise ValueError(f'{where}: arguments must be Python literals') from None
      ops.append(RawOp(node.func.id, args, kwargs, where))
    else:
      raise ValueError(f'{where}: not `name` or `name(arguments)`')
  return ops


def op_names(spec: str) -> tuple[str, ...]:
  """The names of the spec's ops, in order."""
  return tuple(op.name for op in split_spec(spec))
