r"""The box decoder's parts on this machine: the plain formulation against the project's.

  python benchmarks/decoder.py [--size 128] [--classes 90] [--batch 1] [--repeats 20] [--broad]

One process, random heads of one image at the given output size (128 x 128 x 90 is a 512
input's COCO map: i.i.d. logits, or with --broad one broad maximum per class, whose slopes
fill the top scores, so `top_k_peaks` falls back to the whole map), every function jitted
once, then timed round after round in turn (A B A B);
medians in ms. Rows:
  peak pool   the 3x3 SAME max-pool: `lax.reduce_window` | shifted slices, H then W (the
              decoder before 2026-12-02) | shifted slices, W then H (`decoder.max_pool_same`)
  class max   the max over the C classes of each pixel, without YNNPACK's reduce fusions:
              `jnp.max(x, -1)` | maxima of 16-wide slices (the decoder from 2026-12-02 to
              2026-12-04); with them (the project's options): `jnp.max(x, -1)` (the decoder)
  top-k       one `lax.top_k` over the flattened H*W*C map | `decoder.top_k_pixels_classes`
  peaks top-k sigmoid, peak test of the whole map, then `top_k_pixels_classes` (the
              definition) | `decoder.top_k_peaks` (every class of the top pixels peak-tested)
  decode      `decoder.decode_detections` with the plain parts (reduce_window pool, one flat
              top-k, the whole map peak-tested) | with the project's parts
Everything else is compiled with the options the predict function uses
(`performance.compiler_options()`). Each pair is checked for equal outputs before it is
timed. The table goes to stdout and
--out (markdown).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time

import numpy as np

from machine import machine_kind

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

from centernet_jax import decoder  # pylint: disable=g-import-not-at-top,wrong-import-position
from centernet_jax import performance  # pylint: disable=g-import-not-at-top,wrong-import-position


def pool_reduce_window(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), 'SAME')


def pool_h_then_w(x):
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0)), constant_values=-jnp.inf)
  x = functools.reduce(jnp.maximum, [xp[:, i:i + h] for i in range(3)])
  xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)), constant_values=-jnp.inf)
  return functools.reduce(jnp.maximum, [xp[:, :, j:j + w] for j in range(3)])


def top_k_flat(scores, k):
  b, p, c = scores.shape
  values, idx = jax.lax.top_k(scores.reshape(b, p * c), k)
  return values, (idx // c).astype(jnp.int32), (idx % c).astype(jnp.int32)


def max_over_16_lanes(x):
  """`jnp.max(x, -1)` as elementwise maxima of 16-wide slices of the classes (one AVX-512
  register of float32) and one reduce of 16: what XLA:CPU ran fastest before YNNPACK's
  reduce fusions were turned on for inference."""
  n, r = divmod(x.shape[-1], 16)
  slices = [x[..., 16 * i:16 * (i + 1)] for i in range(n)]
  if r:
    slices.append(jnp.pad(x[..., 16 * n:], [(0, 0)] * (x.ndim - 1) + [(0, 16 - r)],
                          constant_values=-jnp.inf))
  return jnp.max(functools.reduce(jnp.maximum, slices), axis=-1)


@contextlib.contextmanager
def plain_parts():
  """decode_detections with the plain pool and top-k while traced inside this block."""
  saved = decoder.max_pool_same, decoder.top_k_pixels_classes, decoder.top_k_peaks
  decoder.max_pool_same, decoder.top_k_pixels_classes = pool_reduce_window, top_k_flat
  decoder.top_k_peaks = decoder.top_k_peaks_whole_map
  try:
    yield
  finally:
    decoder.max_pool_same, decoder.top_k_pixels_classes, decoder.top_k_peaks = saved


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', type=int, default=128)
  parser.add_argument('--classes', type=int, default=90)
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--max_detections', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--broad', action='store_true',
                      help='one broad maximum per class: the top_k_peaks fallback')
  parser.add_argument('--out', default='')
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  b, s, c, k = args.batch, args.size, args.classes, args.max_detections
  logits = rng.normal(-4.0, 2.0, (b, s, s, c))
  if args.broad:
    yy, xx = np.mgrid[0:s, 0:s]
    centers = rng.uniform(0, s, (b, c, 2))
    logits = -6.0 + 10 * np.exp(-((yy[None, :, :, None] - centers[:, None, None, :, 0]) ** 2 +
                                  (xx[None, :, :, None] - centers[:, None, None, :, 1]) ** 2)
                                / (2 * (s / 10) ** 2))
  heads = {'object_center': jnp.asarray(logits, jnp.float32),
           'box/scale': jnp.asarray(rng.uniform(1, 20, (b, s, s, 2)), jnp.float32),
           'box/offset': jnp.asarray(rng.uniform(0, 1, (b, s, s, 2)), jnp.float32)}
  sizes = jnp.asarray([[4 * s, 4 * s]] * b, jnp.int32)
  prob = jax.nn.sigmoid(heads['object_center'])
  masked = (prob * decoder.peak_mask(prob)).reshape(b, s * s, c)

  def decode_fn():  # a new function per variant: jax.jit shares traces of one function
    return lambda h: decoder.decode_detections(h, true_size=sizes, original_size=sizes,
                                               input_size=4 * s, max_detections=k)

  # Compiled as the predict function compiles the decoder (performance.compiler_options).
  options = performance.compiler_options()
  jit = functools.partial(jax.jit, compiler_options=options)
  # The class-max row's baselines: XLA:CPU without YNNPACK's reduce fusions (other backends
  # take no CPU options: there they compile as `jit`).
  no_reduce = functools.partial(jax.jit, compiler_options=None if options is None else {
      **options, 'xla_cpu_experimental_ynn_fusion_type': ''})
  decode_project = jit(decode_fn()).lower(heads).compile()
  with plain_parts():
    decode_plain = jit(decode_fn()).lower(heads).compile()
  rows = [
      ('peak pool', [('reduce_window', jit(pool_reduce_window)),
                     ('shifted, H then W', jit(pool_h_then_w)),
                     ('shifted, W then H (ours)', jit(decoder.max_pool_same))], (prob,)),
      ('class max', [('jnp.max, no YNNPACK reduce', no_reduce(lambda x: jnp.max(x, axis=-1))),
                     ('16-wide slices, no YNNPACK reduce', no_reduce(max_over_16_lanes)),
                     ('jnp.max (ours)', jit(lambda x: jnp.max(x, axis=-1)))], (masked,)),
      ('top-k', [('one flat lax.top_k', jit(top_k_flat, static_argnums=1)),
                 ('two stages (ours)', jit(decoder.top_k_pixels_classes,
                                               static_argnums=1))], (masked, k)),
      ('peaks top-k', [('whole map peak-tested',
                        jit(decoder.top_k_peaks_whole_map, static_argnums=1)),
                       ('top pixels peak-tested (ours)',
                        jit(decoder.top_k_peaks, static_argnums=1))],
       (heads['object_center'], k)),
      ('decode_detections', [('plain parts', decode_plain),
                             ('project parts (ours)', decode_project)], (heads,)),
  ]
  for name, variants, call_args in rows:
    outs = [jax.device_get(fn(*call_args)) for _, fn in variants]
    for (label, _), out in zip(variants[1:], outs[1:]):
      for a, o in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(out)):
        if not np.array_equal(a, o):
          raise SystemExit(f'{name}: {label} differs from {variants[0][0]}')
  times = {(name, label): [] for name, variants, _ in rows for label, _ in variants}
  for _ in range(args.repeats):
    for name, variants, call_args in rows:
      for label, fn in variants:
        start = time.perf_counter()
        jax.block_until_ready(fn(*call_args))
        times[(name, label)].append((time.perf_counter() - start) * 1e3)

  lines = [f'# Decoder parts, {machine_kind()}',
           f'`python benchmarks/decoder.py --size {s} --classes {c} --batch {b} '
           f'--repeats {args.repeats}{" --broad" if args.broad else ""}`: {s}x{s}x{c} map '
           f'({"broad maxima" if args.broad else "i.i.d. logits"}), top {k}, medians of '
           'interleaved rounds.',
           '', '| part | formulation | median ms | first / this |', '|---|---|---|---|']
  for name, variants, _ in rows:
    base = float(np.median(times[(name, variants[0][0])]))
    for label, _ in variants:
      med = float(np.median(times[(name, label)]))
      lines.append(f'| {name} | {label} | {med:.2f} | {base / med:.2f}x |')
  text = '\n'.join(lines) + '\n'
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  main()
