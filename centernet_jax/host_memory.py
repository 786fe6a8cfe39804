"""glibc's malloc told to keep the host memory a process frees, so the next step reuses it.

Why (docs/benchmarks.md, "The step's host memory"): XLA:CPU mallocs every buffer of a program
at each execution and frees it afterwards; the ResNet50 V1 FPN 512 training step at batch 2
holds 2.4 GB of temporaries. glibc serves blocks that large with fresh mappings (anything
over its 32 MiB largest mmap threshold) and returns them to the kernel when freed, so every
step faults its temporaries in again, page by page: about 600 k page faults and over a second
of kernel time per step. An elementwise op writing a new 32 MiB array ran 4.5x faster once the
memory was kept. Measured in one process, toggling these settings between interleaved calls,
the ResNet50 V1 FPN step was 1.18x faster and the MobileNetV2 FPN step 1.59x faster.

How: three `mallopt` calls, the same as the `MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=<huge>` environment but set from inside the process (no re-exec):
  * one arena: XLA's worker threads otherwise allocate from per-thread arenas, whose heaps are
    separate 64 MiB mappings that come and go (keeping memory without this gained only 1.04x
    on the MobileNetV2 FPN step);
  * no mmap for large blocks: they come from the main heap, which can be reused;
  * no trimming: freed memory at the top of the heap stays mapped.
The cost: the process's resident memory stays at its high-water mark instead of falling
between steps. A training process reaches that mark every step anyway.

Inference keeps freed memory another way (`keep_freed_inference_memory`). The one arena makes
every thread's small allocations take the same lock, and the predict function was slower with
it (batch 8: ResNet50 V1 FPN 512 1767-1773 ms with glibc's defaults against 1975-1978 ms kept,
MobileNetV2 FPN 371-391 against 409-418 ms; docs/benchmarks.md, "Convolutions as tap products
in training"). Yet with glibc's defaults the predict function faults in all its temporaries at
every call (ResNet50 V1 FPN 512 at batch 1: one 132 MiB block, 33.8 k page faults and ~50 ms of
kernel time per call): XLA:CPU allocates them from the thread that runs the program, whose
arena's heaps cannot exceed 64 MiB, so glibc maps the block afresh each time. So the predict
function's temporaries come in blocks of at most `performance.INFERENCE_HEAP_BYTES` (48 MiB,
XLA's `xla_multiheap_size_constraint_per_heap`), each of which fits in one such heap, and
inference sets two `mallopt`s, every arena left as it is:
  * no mmap for large blocks: a block of up to 64 MiB then comes from the thread's heaps;
  * a top pad of one whole heap (64 MiB): a heap that empties is kept, not unmapped (glibc
    drops a per-thread heap only when it is empty beyond the pad).
Measured side by side (docs/benchmarks.md, "The predict function's temporaries in kept heaps"):
no page faults left, the predict function at batch 1 1.05x (ResNet50 V1 FPN 512) and 1.08x
(MobileNetV2 FPN 512) faster, at batch 8 1.00-1.02x. These
two settings act on every arena whenever they are set, so a library (`inference.Predictor`)
can set them after JAX has started its threads.

Only glibc has these settings; elsewhere (macOS, musl) both functions log and do nothing.
`set_up` applies the one that fits the process when `config.keep_freed_host_memory` is set
(the base config's default): `main` calls it (training, or `--mode eval` and `detect`), and so
does `inference.Predictor` when it restores a model.
"""

import ctypes
import os

from absl import logging

# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# mallopt takes an int; glibc stores the trim threshold as a size_t, so -1 is "never trim".
_NEVER = -1
# glibc's largest heap of a per-thread arena on 64-bit (HEAP_MAX_SIZE: twice its 32 MiB largest
# mmap threshold); a top pad this large keeps an emptied heap (module docstring).
GLIBC_THREAD_HEAP_BYTES = 64 << 20


def glibc_version() -> str | None:
  """'glibc 2.39' style string of the C library this process runs on, or None if not glibc."""
  try:
    return os.confstr('CS_GNU_LIBC_VERSION')
  except (ValueError, OSError, AttributeError):
    return None


def _mallopt(settings: tuple[tuple[str, int, int], ...], what: str) -> bool:
  """`mallopt(param, value)` for each (name, param, value); False (and a log line) if this is not
  glibc. Raises OSError naming the setting glibc refuses."""
  version = glibc_version()
  if version is None:
    logging.info('keep_freed_host_memory: not running on glibc; malloc left as it is.')
    return False
  libc = ctypes.CDLL(None)
  for name, param, value in settings:
    if libc.mallopt(param, value) != 1:
      raise OSError(f'keep_freed_host_memory: {version} refused mallopt({name}, {value}).')
  logging.info('keep_freed_host_memory: %s keeps freed memory (%s).', version, what)
  return True


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to keep freed memory for reuse in training (module docstring). Affects
  the whole process from this call on; call it before the first JAX computation, so that its
  threads find the one arena. Returns True when the settings took, False when this is not
  glibc."""
  return _mallopt((('M_ARENA_MAX', _M_ARENA_MAX, 1), ('M_MMAP_MAX', _M_MMAP_MAX, 0),
                   ('M_TRIM_THRESHOLD', _M_TRIM_THRESHOLD, _NEVER)),
                  'one arena, no mmap, no trim')


# Inference's settings (module docstring): (mallopt name, its parameter, value, the same
# setting's GLIBC_TUNABLES name for a process started with it).
_INFERENCE_SETTINGS = (('M_MMAP_MAX', _M_MMAP_MAX, 0, 'glibc.malloc.mmap_max'),
                       ('M_TOP_PAD', _M_TOP_PAD, GLIBC_THREAD_HEAP_BYTES,
                        'glibc.malloc.top_pad'))


def keep_freed_inference_memory() -> bool:
  """Sets glibc's malloc to keep the heaps the predict function's temporaries come from (module
  docstring): no mmap, a top pad of one per-thread heap. Affects the whole process from this
  call on, at any time. Returns True when the settings took, False when this is not glibc."""
  return _mallopt(tuple(setting[:3] for setting in _INFERENCE_SETTINGS),
                  'inference: no mmap, heaps kept')


def inference_glibc_tunables() -> str:
  """`keep_freed_inference_memory`'s settings as a GLIBC_TUNABLES value, for a process this
  project does not start (`performance.tf_cpu_serving_environment`)."""
  return ':'.join(f'{tunable}={value}' for _, _, value, tunable in _INFERENCE_SETTINGS)


def set_up(config, *, training: bool) -> None:
  """What a process of this project does with `config.keep_freed_host_memory` (`main`,
  `inference.Predictor`, and the benchmarks that time ours as those run): when it is set, a
  training process keeps freed memory in one arena (`keep_freed_memory`), an inference-only one
  (`training=False`) keeps its threads' heaps (`keep_freed_inference_memory`). Call it before
  the first JAX computation."""
  if not config.keep_freed_host_memory:
    return
  if training:
    keep_freed_memory()
  else:
    keep_freed_inference_memory()
