"""What every benchmark table states first: the machine it was measured on."""

import os
import platform


def machine_kind() -> str:
  """CPU model, AVX-512 or AVX2-only, cores, load average now."""
  model, flags = '', ''
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name') and not model:
          model = line.split(':', 1)[1].strip()
        if line.startswith('flags') and not flags:
          flags = line
  except OSError:
    pass
  isa = 'AVX-512' if 'avx512f' in flags else ('AVX2 only' if 'avx2' in flags else 'no AVX2')
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  return (f'{model or platform.processor() or "?"}, {isa}, {os.cpu_count()} cores, '
          f'load average {load:.1f}')
