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

Training only: the one arena makes every thread's small allocations take the same lock, and
inference, whose buffers are smaller, was slower with it (the predict function at batch 8:
ResNet50 V1 FPN 512 1767-1773 ms with glibc's defaults against 1975-1978 ms kept, MobileNetV2
FPN 371-391 against 409-418 ms; docs/benchmarks.md, "Convolutions as tap products in
training"), so an evaluation-only process keeps glibc's defaults.

Only glibc has these settings; elsewhere (macOS, musl) `keep_freed_memory` logs and does
nothing. `main` calls `set_up`, which applies it to a training run when
`config.keep_freed_host_memory` is set (the base config's default); `--mode eval`, `detect`
and `inference.Predictor` leave malloc as it is.
"""

import ctypes
import os

from absl import logging

# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# mallopt takes an int; glibc stores the trim threshold as a size_t, so -1 is "never trim".
_NEVER = -1


def glibc_version() -> str | None:
  """'glibc 2.39' style string of the C library this process runs on, or None if not glibc."""
  try:
    return os.confstr('CS_GNU_LIBC_VERSION')
  except (ValueError, OSError, AttributeError):
    return None


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to keep freed memory for reuse (module docstring). Affects the whole
  process from this call on; call it before the first JAX computation, so that its threads
  find the one arena. Returns True when the settings took, False when this is not glibc."""
  version = glibc_version()
  if version is None:
    logging.info('keep_freed_host_memory: not running on glibc; malloc left as it is.')
    return False
  libc = ctypes.CDLL(None)
  for name, param, value in (('M_ARENA_MAX', _M_ARENA_MAX, 1), ('M_MMAP_MAX', _M_MMAP_MAX, 0),
                             ('M_TRIM_THRESHOLD', _M_TRIM_THRESHOLD, _NEVER)):
    if libc.mallopt(param, value) != 1:
      raise OSError(f'keep_freed_host_memory: {version} refused mallopt({name}, {value}).')
  logging.info('keep_freed_host_memory: %s keeps freed memory (one arena, no mmap, no trim).',
               version)
  return True


def set_up(config, *, training: bool) -> None:
  """What a process of this project does with `config.keep_freed_host_memory` (`main`, and the
  benchmarks that time ours as `main` runs): a training process keeps freed memory when it is
  set; an evaluation-only one (`training=False`) keeps glibc's defaults (module docstring).
  Call it before the first JAX computation."""
  if not config.keep_freed_host_memory:
    return
  if training:
    keep_freed_memory()
  else:
    logging.info('keep_freed_host_memory: not for evaluation alone; malloc left as it is.')
