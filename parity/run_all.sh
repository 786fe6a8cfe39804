#!/usr/bin/env bash
# Parity against the TF2 OD API: builds the reference env, then for each variant builds the
# OD API model with random weights (OD API env), compares ours with it (project env), and
# writes docs/parity.md.
#
#   parity/run_all.sh PROJECT_PYTHON [OUT_DIR]          (what `make parity` runs)
#   PARITY_VARIANTS="r50v1fpn hg104" parity/run_all.sh .venv/bin/python runs/parity
#
# Environment: PARITY_VARIANTS (default: every variant of parity/odapi_build.py),
# PARITY_INPUT_SIZE (default 512, the zoo's), PARITY_REPORT (default docs/parity.md, or
# OUT_DIR/parity.md when PARITY_VARIANTS picks a subset).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROJECT_PY="${1:?usage: parity/run_all.sh PROJECT_PYTHON [OUT_DIR]}"
OUT="${2:-runs/parity}"
VARIANTS="${PARITY_VARIANTS:-r50v1fpn r101v1fpn r50v2 hg104 mnv2fpn r50v1fpn_kpts r50v2_kpts hg104_kpts mnv2fpn_kpts}"
SIZE="${PARITY_INPUT_SIZE:-512}"
# A subset of the variants reports beside its results, not over the full report in docs/.
if [[ -n "${PARITY_VARIANTS:-}" ]]; then
  REPORT="${PARITY_REPORT:-$OUT/parity.md}"
else
  REPORT="${PARITY_REPORT:-docs/parity.md}"
fi

ODAPI_PY="$(tools/odapi_env.sh | tail -n 1)"
mkdir -p "$OUT"
status=0
for v in $VARIANTS; do
  echo "=== $v"
  rm -rf "${OUT:?}/$v"
  # shellcheck disable=SC2086  # ODAPI_PY is "env VAR=... python"
  if ! $ODAPI_PY parity/odapi_build.py --variant "$v" --out "$OUT/$v" --input_size "$SIZE" \
      --float64_reference > "$OUT/$v.odapi.log" 2>&1; then
    echo "OD API build of $v failed; see $OUT/$v.odapi.log"; status=1; continue
  fi
  if ! "$PROJECT_PY" parity/compare.py --case "$OUT/$v" 2> "$OUT/$v.compare.log"; then
    status=1
  fi
done
"$PROJECT_PY" parity/report.py --results "$OUT" --out "$REPORT" \
    --command "make parity (parity/run_all.sh, variants: $VARIANTS, input $SIZE)"
exit $status
