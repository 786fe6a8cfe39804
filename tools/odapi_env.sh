#!/usr/bin/env bash
# Builds (idempotently) the TF2 Object Detection API reference environment under .odapi/ and
# prints, on its last line of stdout, the python command that runs scripts inside it:
#
#   PY=$(tools/odapi_env.sh | tail -n 1)      # e.g. "env PYTHONPATH=... .odapi/venv/bin/python"
#   $PY parity/odapi_build.py ...
#
# The OD API is a test-time reference only (parity/): it needs TensorFlow 2.15 and Keras 2,
# which cannot share a process with the project's TensorFlow, so it lives in its own
# Python 3.11 virtual environment. Nothing of it is vendored in the project:
#   - .odapi/venv         python3.11 venv with tensorflow-cpu 2.15.1, tf-slim, scipy, ...
#   - .odapi/src          the PyPI source distribution tf-object-detection-api==0.1 (unpacked;
#                         it ships compiled protos, so no protoc is needed). It is put on
#                         PYTHONPATH rather than pip-installed: its setup.py pulls many packages
#                         CenterNet never imports.
#   - .odapi/stubs        an empty `tensorflow_io` module (imported by the package, unused by
#                         CenterNet).
# Re-running is cheap: each step is skipped when its stamp file exists.
#
# Environment: ODAPI_DIR (default <repo>/.odapi), ODAPI_PYTHON (default: python3.11 on PATH or
# pyenv's 3.11.x).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${ODAPI_DIR:-$ROOT/.odapi}"
VENV="$DIR/venv"
SRC="$DIR/src"
STUBS="$DIR/stubs"
PKG_DIR="$SRC/tf_object_detection_api-0.1"

log() { echo "[odapi_env] $*" >&2; }

find_py311() {
  if [ -n "${ODAPI_PYTHON:-}" ]; then echo "$ODAPI_PYTHON"; return 0; fi
  if command -v python3.11 >/dev/null 2>&1 && python3.11 -c 'import sys' >/dev/null 2>&1; then
    command -v python3.11; return 0
  fi
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11*/bin/python3.11; do
    if [ -x "$cand" ]; then echo "$cand"; return 0; fi
  done
  echo "error: no python3.11 found (TensorFlow 2.15 needs Python <= 3.11); set ODAPI_PYTHON." >&2
  return 1
}

mkdir -p "$DIR"

if [ ! -f "$VENV/.installed" ]; then
  PY311="$(find_py311)"
  log "creating $VENV with $PY311"
  rm -rf "$VENV"
  "$PY311" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q 'tensorflow-cpu==2.15.1' 'tf-slim==1.1.0' scipy pillow \
      pycocotools matplotlib lxml 'numpy<2' >&2
  touch "$VENV/.installed"
fi

if [ ! -f "$SRC/.installed" ]; then
  log "fetching the tf-object-detection-api==0.1 source distribution"
  rm -rf "$SRC" "$DIR/dl"
  mkdir -p "$SRC" "$DIR/dl"
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: 'tf-object-detection-api==0.1' \
      -d "$DIR/dl" >&2
  tar xzf "$DIR"/dl/tf_object_detection_api-0.1.tar.gz -C "$SRC"
  touch "$SRC/.installed"
fi

mkdir -p "$STUBS"
[ -f "$STUBS/tensorflow_io.py" ] || echo '"""Stub: the OD API imports tensorflow_io; CenterNet never uses it."""' \
    > "$STUBS/tensorflow_io.py"

if [ ! -f "$DIR/.checked" ]; then
  log "checking that CenterNet imports"
  PYTHONPATH="$PKG_DIR:$STUBS" TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c \
      'from object_detection.meta_architectures import center_net_meta_arch' >&2
  touch "$DIR/.checked"
fi

echo "env PYTHONPATH=$PKG_DIR:$STUBS TF_CPP_MIN_LOG_LEVEL=2 $VENV/bin/python"
