"""Cost and utilisation of the training step: FLOPs, images/s, TFLOP/s per device, MFU; the
XLA:CPU compiler options the step is built with; the profiler window.

docs/benchmarks.md says how each figure is measured and what the CPU options changed.
"""

import time
from typing import Any, Callable

import jax
from absl import logging
from etils import epath

from centernet_jax import host_memory

# Dense peak TFLOP/s per device (one chip, or one GPU), by compute dtype, from the vendors'
# data sheets (dense, no sparsity). Matched against `device.device_kind` by prefix, longest
# first. `config.peak_tflops_per_device` > 0 overrides the table (e.g. for a CPU).
PEAK_TFLOPS = {
    'TPU v4': {'bfloat16': 275.0, 'float32': 275.0},
    'TPU v5 lite': {'bfloat16': 197.0, 'float32': 197.0},
    'TPU v5e': {'bfloat16': 197.0, 'float32': 197.0},
    'TPU v5p': {'bfloat16': 459.0, 'float32': 459.0},
    'TPU v5': {'bfloat16': 459.0, 'float32': 459.0},
    'TPU v6 lite': {'bfloat16': 918.0, 'float32': 918.0},
    'TPU v6e': {'bfloat16': 918.0, 'float32': 918.0},
    'NVIDIA H100': {'bfloat16': 989.0, 'float32': 494.0},  # float32: TF32 tensor cores
    'NVIDIA H200': {'bfloat16': 989.0, 'float32': 494.0},
    'NVIDIA A100': {'bfloat16': 312.0, 'float32': 156.0},
    'NVIDIA L4': {'bfloat16': 121.0, 'float32': 60.0},
}

# XLA:CPU compiles the inference programs without YNNPACK's individual-dot fusions: the
# forward network + decoder ran 1.2x faster at batch 1 and 8 (ResNet50 V1 FPN 512; MobileNetV2
# FPN the same either way); same process, interleaved (docs/benchmarks.md, "Hot paths").
# YNNPACK's reduce fusions are on: XLA:CPU's own reduce over a minor axis of 90 classes runs
# one element at a time, YNNPACK's vectorizes it, and the decoder's per-pixel class maximum
# ran 0.5 against 0.7 ms (the whole decoder 7-14 % faster, cold; the predict function at
# batch 1 and 8 unchanged; docs/benchmarks.md, "Decoder").
#
# Both programs also hand XLA:CPU's library calls to oneDNN where its rewriter takes them
# (`xla_cpu_use_onednn` with `xla_cpu_experimental_onednn_custom_call`): in inference the
# convolutions, each with its bias add fused in, and the matrix products YNNPACK is not given;
# in training the weight-gradient products that YNNPACK does not take (contracting the pixels'
# axis, which XLA's own dot ran at 81-146 GFLOP/s; YNNPACK keeps the others and the
# convolutions). Same process, interleaved, Intel Xeon with AVX-512: training steps 1.09-1.10x
# faster (ResNet50 V1 FPN, ResNet50 V2, MobileNetV2 FPN 512; the demo's model 1.01x), predict
# 0.99-1.15x at batch 1 and 1.02-1.11x at batch 8 (the four 512 rows); with oneDNN and XLA
# limited to AVX2 (`ONEDNN_MAX_CPU_ISA`, `xla_cpu_max_isa`) the ResNet50 V1 FPN step 1.04x and
# its predict 1.04x (docs/benchmarks.md, "oneDNN for XLA:CPU's library calls").
ONEDNN_OPTIONS = {'xla_cpu_use_onednn': True, 'xla_cpu_experimental_onednn_custom_call': True}
# The inference programs' temporaries in blocks of at most this many bytes instead of one, so
# that each fits in one heap of the executing thread's malloc arena, which glibc then keeps
# between calls (host_memory.py, `keep_freed_inference_memory`): under glibc's 64 MiB per-thread
# heap, above the largest single buffer of the zoo's 512 rows (F(4x4, 3x3)'s 36 MiB tiles of a
# 256-channel convolution at 128 x 128), which XLA would otherwise log as too large for a heap.
INFERENCE_HEAP_BYTES = 48 << 20
INFERENCE_HEAP_OPTIONS = {'xla_multiheap_size_constraint_per_heap': INFERENCE_HEAP_BYTES}
CPU_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE',
                        **INFERENCE_HEAP_OPTIONS, **ONEDNN_OPTIONS}

# The training step keeps XLA's default YNNPACK fusions (its dots on), plus oneDNN (above).
# Those dots were slow only for the library convolutions' weight gradients (XLA rewrites them
# to dots YNNPACK ran at ~6-9 GFLOP/s), which `models.layers.conv_general_dilated` now computes
# as k*k plain matrix products on CPU; YNNPACK runs those, and the library forward and
# input-gradient convolutions, faster than XLA's own kernels: ResNet50 V1 FPN 512 train step
# 1.27x, measured with the products at every map size (now maps of >= 64 x 64 pixels or >= 0.2
# GFLOP of weight gradient per image, `layers.conv_general_dilated`; docs/benchmarks.md,
# "Hot paths").
CPU_TRAIN_COMPILER_OPTIONS: dict[str, Any] = dict(ONEDNN_OPTIONS)


def tf_cpu_serving_environment() -> dict[str, str]:
  """The environment a TensorFlow process serving our SavedModel on CPU should start with:
  {'XLA_FLAGS': ..., 'GLIBC_TUNABLES': ...}. TensorFlow's XLA compiles the exported program with
  its own options, and its malloc is the process's, so neither the predict function's heap
  option nor `host_memory.keep_freed_inference_memory` reaches it from the artifact; these two
  variables give it the same (MobileNetV2 FPN 512, batch 1 under TF 2.21: 106 -> 96 ms, no page
  faults left; docs/serving.md, "Serving our SavedModel on a CPU"). glibc ignores the tunables
  elsewhere; merge XLA_FLAGS with any the process already has."""
  return {'XLA_FLAGS': ' '.join(f'--{k}={v}' for k, v in INFERENCE_HEAP_OPTIONS.items()),
          'GLIBC_TUNABLES': host_memory.inference_glibc_tunables()}


def _on_cpu(options: dict[str, Any], backend: str | None) -> dict[str, Any] | None:
  """A copy of `options` when `backend` (default: JAX's) is the CPU; None elsewhere."""
  return dict(options) if (backend or jax.default_backend()) == 'cpu' else None


def compiler_options(backend: str | None = None) -> dict[str, Any] | None:
  """The compiler options of the jitted predict function on `backend` (default: JAX's)."""
  return _on_cpu(CPU_COMPILER_OPTIONS, backend)


def train_compiler_options(backend: str | None = None) -> dict[str, Any] | None:
  """The compiler options of the jitted training step on `backend` (default: JAX's)."""
  return _on_cpu(CPU_TRAIN_COMPILER_OPTIONS, backend)


# Initialisation runs once, but its program is almost all threefry random-number generation,
# which LLVM at XLA:CPU's default optimisation level takes minutes to compile. Level 1 gives the
# same values (integer bit mixing) and nearly the same run time: ResNet50 V1 FPN 512 init
# compiled in 128 s and ran in 1.4 s at the default level, 38 s and 1.9 s at level 1; the tests'
# tiny ResNet-18 128 s -> 17 s (docs/benchmarks.md, "Start-up").
CPU_INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


def init_compiler_options(backend: str | None = None) -> dict[str, Any] | None:
  """The compiler options of one-shot initialisation programs on `backend` (default: JAX's)."""
  return _on_cpu(CPU_INIT_COMPILER_OPTIONS, backend)


def run_init(init_fn: Callable[[jax.Array], Any], rng: jax.Array, out_shardings: Any = None):
  """`jax.jit(init_fn, out_shardings=...)(rng)`, compiled with `init_compiler_options`."""
  compiled = jax.jit(init_fn, out_shardings=out_shardings).lower(rng).compile(
      compiler_options=init_compiler_options())
  return compiled(rng)


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled executable, from XLA's cost analysis (0 if unknown).

  For a step partitioned over a mesh XLA analyses the per-device program, so this is already
  per device (tests/test_performance.py checks it on 1 and 4 CPU devices).
  """
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return 0.0
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


def peak_tflops(device, dtype: str, override: float = 0.0) -> float:
  """Peak dense TFLOP/s of one `device` in `dtype` (0 when unknown and not overridden)."""
  if override > 0:
    return float(override)
  kind = getattr(device, 'device_kind', '')
  for prefix in sorted(PEAK_TFLOPS, key=len, reverse=True):
    if kind.startswith(prefix):
      return PEAK_TFLOPS[prefix].get(dtype, 0.0)
  return 0.0


class Throughput:
  """Images/s, TFLOP/s per device and MFU between two `measure` calls (host wall time)."""

  def __init__(self, *, global_batch: int, flops_per_step_per_device: float,
               peak_tflops_per_device: float):
    self.global_batch = global_batch
    self.flops = flops_per_step_per_device
    self.peak = peak_tflops_per_device
    self._t = time.perf_counter()
    self._steps = 0

  def reset(self) -> None:
    """Restarts the clock (after an evaluation or a checkpoint, which are not training)."""
    self._t = time.perf_counter()
    self._steps = 0

  def add_steps(self, n: int = 1) -> None:
    self._steps += n

  def measure(self) -> dict[str, float]:
    """The figures since the last `measure`/`reset`; {} if no step ran."""
    elapsed = time.perf_counter() - self._t
    steps, self._steps, self._t = self._steps, 0, time.perf_counter()
    if steps == 0 or elapsed <= 0:
      return {}
    out = {'images_per_sec': steps * self.global_batch / elapsed,
           'steps_per_sec': steps / elapsed}
    if self.flops > 0:
      tflops = steps * self.flops / elapsed / 1e12
      out['tflops_per_device'] = tflops
      if self.peak > 0:
        out['mfu'] = tflops / self.peak
    return out


class ProfileWindow:
  """Writes a `jax.profiler` trace of steps `[start, stop)` under `<workdir>/plugins/profile`
  (TensorBoard's profile plugin reads it: `tensorboard --logdir <workdir>`)."""

  def __init__(self, steps: tuple[int, ...], workdir):
    if steps and (len(steps) != 2 or not 0 < steps[0] < steps[1]):
      raise ValueError(f'profile_steps must be () or (start, stop) with 0 < start < stop, '
                       f'got {tuple(steps)!r}')
    self.start, self.stop = (int(steps[0]), int(steps[1])) if steps else (0, 0)
    self.workdir = epath.Path(workdir)
    self.active = False

  def before_step(self, step: int) -> None:
    if self.start and step == self.start and not self.active:
      logging.info('Profiling steps [%d, %d) into %s/plugins/profile.', self.start, self.stop,
                   self.workdir)
      jax.profiler.start_trace(str(self.workdir))
      self.active = True

  def after_step(self, step: int, state) -> None:
    if self.active and step + 1 >= self.stop:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
      logging.info('Profile written under %s/plugins/profile.', self.workdir)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
