#!/usr/bin/env bash
# The OD API exporter's serving_default signature, live: exports a CenterNet box model and a
# keypoint model with the OD API's own exporter_lib_v2 module in the reference env
# (parity/odapi_export.py) and checks that their names, dtypes and ranks equal
# tests/data/odapi_serving_signature.json, the record tests/test_export.py holds our
# SavedModel export to. (what `make export-signature` runs)
#
#   parity/export_signature.sh PROJECT_PYTHON [OUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROJECT_PY="${1:?usage: parity/export_signature.sh PROJECT_PYTHON [OUT_DIR]}"
OUT="$(cd "$ROOT" && mkdir -p "${2:-runs/odapi_export}" && cd "${2:-runs/odapi_export}" && pwd)"
ODAPI_PY="$(tools/odapi_env.sh | tail -n 1)"
for v in r50v1fpn r50v1fpn_kpts; do
  echo "=== OD API export of $v"
  # shellcheck disable=SC2086  # ODAPI_PY is "env VAR=... python"
  (cd parity && $ODAPI_PY odapi_export.py --variant "$v" --out "$OUT/$v" --input_size 128 \
      > "$OUT/$v.log" 2>&1) || { echo "failed; see $OUT/$v.log"; exit 1; }
done
"$PROJECT_PY" - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
recorded = json.load(open('tests/data/odapi_serving_signature.json'))
status = 0
for variant, key in (('r50v1fpn', 'box'), ('r50v1fpn_kpts', 'keypoints')):
  live = json.load(open(os.path.join(out, variant, 'signature.json')))
  same = live == recorded[key]
  status |= not same
  print(f"{key}: OD API exporter {'==' if same else '!='} tests/data/odapi_serving_signature.json")
  for name in sorted(set(live) | set(recorded[key])):
    print(f'  {name:32s} OD API {live.get(name)}  recorded {recorded[key].get(name)}')
sys.exit(status)
PY
echo "ours == recorded: tests/test_export.py::test_signature_equals_the_od_api_exporters"
