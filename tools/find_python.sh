#!/usr/bin/env bash
# Prints the path of a Python >= 3.12 interpreter (jax >= 0.11 needs it), or fails with a message.
# Tries python3.12 on PATH first (a pyenv shim may exist without being active), then pyenv's
# installed versions, then python3.13 / python3.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for cand in python3.12 python3.13; do
  if command -v "$cand" >/dev/null 2>&1 && ok "$cand"; then command -v "$cand"; exit 0; fi
done
for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
  if [ -x "$cand" ] && ok "$cand"; then echo "$cand"; exit 0; fi
done
if command -v python3 >/dev/null 2>&1 && ok python3; then command -v python3; exit 0; fi
echo "error: no Python >= 3.12 found (jax >= 0.11 requires it). Install python3.12 and retry." >&2
exit 1
