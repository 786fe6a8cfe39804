"""What the in-process A/B benchmarks share: the zoo rows they build and the interleaved timer."""

import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import jax

# Short names of the zoo experiments (experiments/<name>.py) the benchmarks build at full size.
ROWS = {
    'r50v1fpn': 'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8',
    'r101v1fpn': 'centernet_resnet101_v1_fpn_512x512_coco17_tpu-8',
    'r50v2': 'centernet_resnet50_v2_512x512_coco17_tpu-8',
    'mnv2fpn': 'centernet_mobilenetv2fpn_512x512_coco17_od',
    'hg104': 'centernet_hg104_512x512_coco17_tpu-8',
}


def time_in_turn(fns: Mapping[str, Callable[..., Any]], args: Sequence[Any],
                 repeats: int) -> dict[str, list[float]]:
  """ms of one call of each function, round after round in turn (A B A B), outputs waited for.

  Returns:
    {name: [ms of round 1, ..., ms of round `repeats`]}.
  """
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, f in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(f(*args))
      times[k].append(1000 * (time.perf_counter() - start))
  return times


def medians(times: Mapping[str, Sequence[float]]) -> dict[str, float]:
  return {k: statistics.median(v) for k, v in times.items()}


def every_round(ms: Sequence[float]) -> str:
  return ', '.join(f'{x:.0f}' for x in ms)
