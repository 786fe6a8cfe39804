"""A small reader of protobuf text format (as in the OD API's `pipeline.config`), without the
protos: every message becomes `{field: [values]}` (a field may repeat), nested messages are
dicts of the same form, scalars are int, float, bool, str (quoted) or the bare enum name.

  msg = parse_text_proto(text, source='archive/pipeline.config')
  get(msg, 'model.center_net.num_classes', 0)   # first value along a dotted path
"""

import re
from typing import Any

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}\[\]:,;<>])|'
                    r'([^\s{}\[\]:,;<>"\']+))')

Message = dict[str, list[Any]]


class TextProtoError(ValueError):
  """The text is not protobuf text format (the message names the source and the place)."""


def tokens(text: str, source: str = 'text proto') -> list[str]:
  """Comments dropped; strings (quotes kept), punctuation and bare words, in order."""
  out, pos = [], 0
  while pos < len(text):
    m = _TOKEN.match(text, pos)
    if not m or m.end() == pos:
      if text[pos:].strip():
        raise TextProtoError(f'{source}: cannot parse near {text[pos:pos + 40]!r}')
      break
    pos = m.end()
    if m.group(1):
      continue
    out.append(m.group(2) or m.group(3) or m.group(4))
  return out


def scalar(token: str) -> Any:
  """A scalar token -> str (quoted; escapes decoded), bool, int, float, or the enum name."""
  if token[0] in '"\'':
    return bytes(token[1:-1], 'utf-8').decode('unicode_escape')
  if token in ('true', 'True'):
    return True
  if token in ('false', 'False'):
    return False
  try:
    return int(token)
  except ValueError:
    pass
  try:
    return float(token)
  except ValueError:
    return token  # enum value


def parse_text_proto(text: str, source: str = 'text proto') -> Message:
  """Text proto -> {field: [values]}; a message value is a nested dict of the same form.
  Errors raise TextProtoError naming `source`."""
  toks = tokens(text, source)
  pos = 0

  def message(closing: str | None) -> Message:
    nonlocal pos
    fields: Message = {}
    while pos < len(toks):
      tok = toks[pos]
      if tok in ('}', '>'):
        if closing is None:
          raise TextProtoError(f'{source}: unbalanced braces')
        pos += 1
        return fields
      if tok in (',', ';'):
        pos += 1
        continue
      name = tok
      pos += 1
      if pos < len(toks) and toks[pos] == ':':
        pos += 1
      if pos >= len(toks):
        raise TextProtoError(f'{source}: field {name!r} has no value')
      tok = toks[pos]
      if tok in ('{', '<'):
        pos += 1
        fields.setdefault(name, []).append(message(tok))
      elif tok == '[':
        pos += 1
        while pos < len(toks) and toks[pos] != ']':
          if toks[pos] == ',':
            pos += 1
            continue
          if toks[pos] in ('{', '<'):
            pos += 1
            fields.setdefault(name, []).append(message(toks[pos - 1]))
          else:
            fields.setdefault(name, []).append(scalar(toks[pos]))
            pos += 1
        if pos >= len(toks):
          raise TextProtoError(f'{source}: list of field {name!r} has no closing bracket')
        pos += 1
      else:
        fields.setdefault(name, []).append(scalar(tok))
        pos += 1
    if closing is not None:
      raise TextProtoError(f'{source}: missing closing brace')
    return fields

  return message(None)


def get(msg: Message, path: str, default: Any = None) -> Any:
  """The first value at dotted `path` ('model.center_net.num_classes'), or `default` when a
  field along it is absent."""
  node: Any = msg
  for part in path.split('.'):
    if not isinstance(node, dict) or part not in node:
      return default
    node = node[part][0]
  return node
