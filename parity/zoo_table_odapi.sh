#!/usr/bin/env bash
# zoo_table end to end on archives the OD API writes (what `make zoo-table-odapi` runs):
#   1. builds the OD API reference env (tools/odapi_env.sh, as `make parity` does);
#   2. there, writes zoo-layout archives with random weights for the rows and a tiny COCO
#      val2017 set (parity/zoo_archives.py) under OUT_DIR (removed first: a fresh run);
#   3. run 1 of `python -m centernet_jax.zoo_table` with the first row's archive moved aside:
#      that row must be listed as missing, the others done;
#   4. run 2 with the archive back: the missing row is done, the rows done in run 1 are not
#      redone (their zoo_row.json untouched, "not redone" in the log);
#   5. parity/check_zoo_table.py checks 3 and 4 and the tables (every row with our AP and ms)
#      and exits non-zero on any failure.
#
#   parity/zoo_table_odapi.sh PROJECT_PYTHON [OUT_DIR]
#   ZOO_ODAPI_R50=1 parity/zoo_table_odapi.sh .venv/bin/python runs/zoo_table_odapi
#
# Environment: ZOO_ODAPI_ROWS (comma-separated rows of parity/zoo_archives.py; default the two
# MobileNetV2 FPN rows, box and keypoints), ZOO_ODAPI_R50=1 adds the ResNet50 V1 FPN box row
# (about 3x a MobileNetV2 row's time and size), ZOO_ODAPI_REPEATS (timed calls per row, 3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROJECT_PY="${1:?usage: parity/zoo_table_odapi.sh PROJECT_PYTHON [OUT_DIR]}"
OUT="${2:-runs/zoo_table_odapi}"
MNV2_ROWS=centernet_mobilenetv2fpn_512x512_coco17_od,centernet_mobilenetv2fpn_512x512_coco17_kpts
ROWS="${ZOO_ODAPI_ROWS:-$MNV2_ROWS}"
REPEATS="${ZOO_ODAPI_REPEATS:-3}"
WITH_R50=()
if [ "${ZOO_ODAPI_R50:-0}" = 1 ]; then
  WITH_R50=(--with_r50)
  ROWS="$ROWS,centernet_resnet50_v1_fpn_512x512_coco17_tpu-8"
fi
# This checkout's package, whichever checkout the venv was installed from.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

ODAPI_PY="$(tools/odapi_env.sh | tail -n 1)"
rm -rf "${OUT:?}"
mkdir -p "$OUT/aside"
echo "=== writing the archives and the tiny COCO set (OD API env): $OUT/zoo_archives.log"
# shellcheck disable=SC2086  # ODAPI_PY is "env VAR=... python"
$ODAPI_PY parity/zoo_archives.py --archives "$OUT/archives" --coco_dir "$OUT/coco" \
    --rows "$ROWS" "${WITH_R50[@]}" > "$OUT/zoo_archives.log" 2>&1 \
  || { echo "parity/zoo_archives.py failed; see $OUT/zoo_archives.log"; exit 1; }

MISSING="${ROWS%%,*}"
zoo_table() {  # $1: table, $2: log; the exit status goes to the checker, not to set -e
  local rc=0
  "$PROJECT_PY" -m centernet_jax.zoo_table --archives "$OUT/archives" --coco_dir "$OUT/coco" \
      --runs_dir "$OUT/runs" --rows "$ROWS" --repeats "$REPEATS" --out "$1" > "$2" 2>&1 || rc=$?
  echo "$rc"
}
echo "=== run 1, $MISSING moved aside: $OUT/run1.log"
mv "$OUT/archives/$MISSING" "$OUT/aside/"
RC1=$(zoo_table "$OUT/table_run1.md" "$OUT/run1.log")
"$PROJECT_PY" parity/check_zoo_table.py --stage first --dir "$OUT" --rows "$ROWS" \
    --missing "$MISSING" --exit_status "$RC1"
mv "$OUT/aside/$MISSING" "$OUT/archives/"
echo "=== run 2, every archive present: $OUT/run2.log"
RC2=$(zoo_table "$OUT/table.md" "$OUT/run2.log")
"$PROJECT_PY" parity/check_zoo_table.py --stage second --dir "$OUT" --rows "$ROWS" \
    --missing "$MISSING" --exit_status "$RC2"
cat "$OUT/table.md"
