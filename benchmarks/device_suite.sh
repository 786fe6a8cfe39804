#!/usr/bin/env bash
# The GPU suite in one command (what to run first whenever a GPU machine is lent):
#
#   benchmarks/device_suite.sh [OUT_DIR]        # ~5-8 minutes on one H100/H200
#   benchmarks/device_suite.sh --tiny [OUT_DIR] # the CPU check of the machinery (seconds)
#
# Runs benchmarks/device_suite.py (training images/s + MFU, end-to-end inference) and, when
# TensorFlow is importable, benchmarks/input_pipeline.py on every host core. Writes
# OUT_DIR/device_suite.md, OUT_DIR/input_pipeline.md and OUT_DIR/env.txt (devices, versions).
# The GPU machine has jax preinstalled; the suite itself needs only jax, flax, optax and
# ml_collections (pip-installed from .whl/ when that folder was carried along).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TINY=""
if [ "${1:-}" = "--tiny" ]; then TINY="--tiny"; shift; fi
OUT="${1:-${OUT:-runs/device_suite}}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ! "$PY" -c 'import flax, optax, ml_collections' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --find-links .whl flax optax ml_collections >&2
fi
{
  date -u; nproc
  "$PY" -c 'import jax; print("jax", jax.__version__, jax.devices())'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
status=0
ROW_TIMEOUT=240
[ -n "$TINY" ] && ROW_TIMEOUT=600
"$PY" benchmarks/device_suite.py $TINY --row_timeout "$ROW_TIMEOUT" --out "$OUT/device_suite.md" || status=1
if "$PY" -c 'import tensorflow' 2>/dev/null; then
  CORES=$(nproc)
  EXTRA="--images 800"
  [ -n "$TINY" ] && CORES=1 && EXTRA="--images 32 --num_files 16 --size 128 --data_dir $OUT/data"
  # shellcheck disable=SC2086
  "$PY" benchmarks/input_pipeline.py --cores "$CORES" $EXTRA --out "$OUT/input_pipeline.md" \
      || status=1
else
  echo "input pipeline: not run (TensorFlow is not installed here)" | tee "$OUT/input_pipeline.md"
fi
exit $status
