# Quick start: `make demo` and `make test`. Both create .venv themselves.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: venv test demo clean

venv: $(STAMP)

# The ONNX converter comes from a pinned list installed without dependency resolution: jax2onnx's
# metadata pins an orbax-checkpoint older than ours, which it never imports (docs/export.md).
# Installed with uv (from PyPI into the venv): the same packages and versions as pip resolves,
# in ~15 s instead of ~2.5 min, which is a quarter of the demo's 10-minute budget
# (docs/benchmarks.md, "Demo"). pip is the fallback when uv cannot be installed or fails.
PIP_INSTALL = $(PY) -m pip install -q -e '.[test]' && \
	  $(PY) -m pip install -q --no-deps -r tools/requirements-onnx.txt
UV_INSTALL = $(PY) -m pip install -q uv && \
	  $(VENV)/bin/uv pip install --python $(PY) -q -e '.[test]' && \
	  $(VENV)/bin/uv pip install --python $(PY) -q --no-deps -r tools/requirements-onnx.txt
$(STAMP): pyproject.toml tools/requirements-onnx.txt
	@if [ ! -x $(PY) ]; then \
	  PYBIN=$$(tools/find_python.sh) || exit 1; \
	  echo "creating $(VENV) with $$PYBIN"; \
	  $$PYBIN -m venv $(VENV) || exit 1; \
	fi
	@echo "installing the project and its dependencies into $(VENV)"
	@$(UV_INSTALL) || { echo "uv failed: installing with pip instead (a few minutes)"; $(PIP_INSTALL); }
	@touch $(STAMP)

# The whole suite, CPU only, with 4 simulated devices available to tests that ask for them.
# Whole files per worker, the files holding `slow` tests first (tests/conftest.py orders them;
# xdist's own reordering, by test count, is off).
test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Trains experiments/demo.py on the embedded synthetic set (generated and cached on first use),
# evaluates it with COCO metrics, and draws detections for a few val images.
demo: venv
	$(PY) -m centernet_jax.main --config experiments/demo.py --workdir $(DEMO_WORKDIR)
	$(PY) -m centernet_jax.detect --workdir $(DEMO_WORKDIR) --output_dir $(DEMO_WORKDIR)/detections \
	  --images "$$($(PY) -m centernet_jax.data.synthetic --print_val_images 6 --config experiments/demo.py)"
	@echo "demo done: metrics in $(DEMO_WORKDIR)/eval_metrics.json, pictures in $(DEMO_WORKDIR)/detections/"

clean:
	rm -rf $(VENV) runs

# Parity with the TF2 Object Detection API: builds its reference env under .odapi/
# (tools/odapi_env.sh, Python 3.11 + TF 2.15 from PyPI), builds every CenterNet zoo variant with
# random weights on a 480x640 image, converts its checkpoint and compares preprocessing, heads,
# detections, targets and losses with ours; writes docs/parity.md. PARITY_VARIANTS="r50v1fpn"
# limits the variants (its report then goes to $(PARITY_DIR)/parity.md); results go to
# $(PARITY_DIR).
PARITY_DIR ?= runs/parity
.PHONY: parity
parity: venv
	parity/run_all.sh $(PY) $(PARITY_DIR)

# zoo_table end to end on archives the OD API writes: builds the OD API env like `make parity`,
# writes zoo-layout archives with random weights (MobileNetV2 FPN box and keypoint rows) and a
# tiny COCO val2017 set under $(ZOO_TABLE_ODAPI_DIR), runs `python -m centernet_jax.zoo_table`
# twice (one archive moved aside in the first run, then back: missing, then done, the other
# rows not redone) and checks the tables (parity/zoo_table_odapi.sh). ZOO_ODAPI_R50=1 adds the
# ResNet50 V1 FPN box row. About 5 minutes on 2 cores.
ZOO_TABLE_ODAPI_DIR ?= runs/zoo_table_odapi
.PHONY: zoo-table-odapi
zoo-table-odapi: venv
	parity/zoo_table_odapi.sh $(PY) $(ZOO_TABLE_ODAPI_DIR)

# Keypoints: trains experiments/demo_keypoints.py (a narrow ResNet-18 FPN with the keypoint
# heads) on the embedded synthetic stick-figure set (generated and cached on first use),
# evaluates box and keypoint (OKS) AP, and draws detections with skeletons for a few val images.
DEMO_KEYPOINTS_WORKDIR ?= runs/demo_keypoints
.PHONY: demo-keypoints
demo-keypoints: venv
	$(PY) -m centernet_jax.main --config experiments/demo_keypoints.py --workdir $(DEMO_KEYPOINTS_WORKDIR)
	$(PY) -m centernet_jax.detect --workdir $(DEMO_KEYPOINTS_WORKDIR) --output_dir $(DEMO_KEYPOINTS_WORKDIR)/detections \
	  --images "$$($(PY) -m centernet_jax.data.synthetic_keypoints --print_val_images 6 --config experiments/demo_keypoints.py)"
	@echo "demo-keypoints done: metrics in $(DEMO_KEYPOINTS_WORKDIR)/eval_metrics.json (keypoints/AP, ...), pictures in $(DEMO_KEYPOINTS_WORKDIR)/detections/"

# Speed of every zoo row at its full resolution: forward latency at batch 1 and training step
# time per image, float32 and bfloat16, on whatever JAX backend this machine has; prints the
# table beside the zoo's speed column and writes it to $(ZOO_SPEED_OUT). About 40 minutes on a
# 2-core CPU (the Hourglass-104 rows dominate); ZOO_SPEED_ARGS="--rows mobilenetv2fpn_512x512_coco17_od"
# limits the rows.
ZOO_SPEED_OUT ?= runs/zoo_speed.md
ZOO_SPEED_ARGS ?=
.PHONY: zoo-speed
zoo-speed: venv
	$(PY) benchmarks/zoo_speed.py --out $(ZOO_SPEED_OUT) $(ZOO_SPEED_ARGS)

# The two Hourglass-104 1024 rows at their own input size (same networks as the 512 variants
# of `make parity`, 4x the pixels); writes docs/parity_1024.md. About 8 minutes on 2 cores.
.PHONY: parity-1024
parity-1024: venv
	PARITY_VARIANTS="hg104 hg104_kpts" PARITY_INPUT_SIZE=1024 PARITY_REPORT=docs/parity_1024.md \
	  parity/run_all.sh $(PY) $(PARITY_DIR)_1024

# Speed side by side with the TF2 OD API on this machine (builds the OD API env like `make
# parity`): per backbone family at 512, inference end to end at batch 1 and 8, the decoder
# alone, one training step; interleaved rounds, medians and ratios. BENCH_ODAPI_ARGS="--variants
# r50v1fpn --repeats 3" or "--hourglass" changes the rows. About 15-25 minutes on 2 cores.
BENCH_ODAPI_OUT ?= runs/bench_odapi.md
BENCH_ODAPI_ARGS ?=
# The OD API exporter's SavedModel signature (names, dtypes, ranks), exported live in the
# reference env and checked against tests/data/odapi_serving_signature.json, the record our
# export is tested against (tests/test_export.py). About 4 minutes.
.PHONY: export-signature
export-signature: venv
	parity/export_signature.sh $(PY) runs/odapi_export

.PHONY: bench-odapi
bench-odapi: venv
	tools/odapi_env.sh > /dev/null
	$(PY) benchmarks/vs_odapi.py --out $(BENCH_ODAPI_OUT) $(BENCH_ODAPI_ARGS)

# Serving side by side with the OD API's own exported SavedModel (builds the OD API env like
# `make parity`): our SavedModel export (batch 1 and 8), the OD API exporter's (batch 1 only)
# and our in-process Predictor, ResNet50 V1 FPN and MobileNetV2 FPN at 512, 8 different
# 480x640 images, interleaved rounds, medians and ratios; docs/serving.md. BENCH_SERVING_ARGS=
# "--variants mnv2fpn --rounds 3" or "--threads 1" changes the run.
BENCH_SERVING_OUT ?= runs/bench_serving.md
BENCH_SERVING_ARGS ?=
.PHONY: bench-serving
bench-serving: venv
	tools/odapi_env.sh > /dev/null
	$(PY) benchmarks/serving.py --out $(BENCH_SERVING_OUT) $(BENCH_SERVING_ARGS)

# Training input pipeline throughput per stage on 1 and 2 cores (COCO-sized JPEGs, zoo recipe).
.PHONY: bench-input
bench-input: venv
	$(PY) benchmarks/input_pipeline.py --cores 1,2 --out runs/input_pipeline.md

# The accelerator suite (benchmarks/device_suite.sh): run it first on a lent GPU machine;
# `make device-suite-tiny` is its CPU check.
.PHONY: device-suite device-suite-tiny
device-suite:
	benchmarks/device_suite.sh runs/device_suite
device-suite-tiny: venv
	PYTHON=$(PY) benchmarks/device_suite.sh --tiny runs/device_suite_tiny
