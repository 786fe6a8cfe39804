r"""Dense convolutions on XLA:CPU: `lax.conv_general_dilated` against the same convolution written
as matrix products, each pass separately (forward, input gradient, weight gradient).

  python benchmarks/conv_cpu.py [--shapes head128,c2_3x3,...] [--repeats 5] [--options ours]
  python benchmarks/conv_cpu.py --shapes head128,fpn_c2,fpn_c3,c3_3x3,c4_3x3,fpn_c4,c5_3x3 \
      --formulations shift,winograd [--batch 8]

Formulations (NHWC input, HWIO kernel; explicit padding, any stride):
  library  `lax.conv_general_dilated`; its gradients are XLA's transposed convolutions.
  shift    k*k strided slices of the padded input, each `[B*Ho*Wo, Cin] @ [Cin, Cout]`, summed;
           its transposes: input gradient k*k dots `g @ w_ij^T` padded back and summed, weight
           gradient k*k dots `x_ij^T @ g`.
  im2col   the k*k slices concatenated on channels, one `[B*Ho*Wo, k*k*Cin] @ [k*k*Cin, Cout]`;
           weight gradient one `x_col^T @ g`, input gradient one `g @ w^T` then k*k pads.
  winograd F(4x4, 3x3) of `models/layers.py` (3x3 stride-1 SAME shapes only): each pass its own
           function there (docs/winograd.md), not a transpose.
Each pass but winograd's is timed as XLA compiles it inside autodiff: the input / weight gradient
is the linear transpose of the formulation in that argument. All programs of a row are compiled
first, then each round times one call of each (interleaved); the table gives medians, library /
formulation (> 1: the formulation is faster) and every round. `--options ours` compiles with
`performance.CPU_COMPILER_OPTIONS` (as predict does), `default` without (as the train step
does). The process keeps freed host memory as `main` does in training unless
`--glibc_defaults`.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=wrong-import-position
from centernet_jax import host_memory
from centernet_jax import performance
from centernet_jax.models import layers
from machine import machine_kind

# name: (batch, H, W, Cin, Cout, k, stride, padding). The ResNet50 V1 FPN 512 train step's
# shapes at batch 2 (heads, FPN, ResNet stages, the stem) and MobileNetV2's strided 3x3 stem.
SHAPES = {
    'head128': (2, 128, 128, 64, 256, 3, 1, 'SAME'),       # each head's conv_3x3
    'fpn_c2': (2, 128, 128, 64, 64, 3, 1, 'SAME'),         # fpn_c2_conv, conv2_x 3x3
    'fpn_c3': (2, 64, 64, 128, 64, 3, 1, 'SAME'),          # fpn_c3_conv
    'c3_3x3': (2, 64, 64, 128, 128, 3, 1, 'SAME'),         # conv3_x 3x3
    'c4_3x3': (2, 32, 32, 256, 256, 3, 1, 'SAME'),         # conv4_x 3x3
    'fpn_c4': (2, 32, 32, 256, 128, 3, 1, 'SAME'),         # fpn_c4_conv
    'c5_3x3': (2, 16, 16, 512, 512, 3, 1, 'SAME'),         # conv5_x 3x3
    'c2_1x1': (2, 128, 128, 256, 64, 1, 1, 'VALID'),       # conv2_x 1x1 reduce
    'c2_1x1e': (2, 128, 128, 64, 256, 1, 1, 'VALID'),      # conv2_x 1x1 expand
    'c3_1x1s2': (2, 128, 128, 256, 128, 1, 2, 'VALID'),    # conv3_block1 strided 1x1
    'c4_1x1': (2, 32, 32, 1024, 256, 1, 1, 'VALID'),       # conv4_x 1x1 reduce
    'c5_1x1': (2, 16, 16, 2048, 512, 1, 1, 'VALID'),       # conv5_x 1x1 reduce
    'c5_1x1s2': (2, 32, 32, 1024, 2048, 1, 2, 'VALID'),    # conv5_block1 strided projection
    'v2_up16': (2, 16, 16, 2048, 256, 3, 1, 'SAME'),       # ResNet50 V2's first upsampling conv
    'stem7': (2, 518, 518, 3, 64, 7, 2, 'VALID'),          # conv1 (input padded by 3)
    'mnv2_stem': (2, 512, 512, 3, 32, 3, 2, 'SAME'),       # MobileNetV2 Conv1
}
PASSES = ('fwd', 'dgrad', 'wgrad')


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.dot(a, b, preferred_element_type=jnp.float32)


def _windows(x, kh: int, kw: int, stride: int, padding):
  """The padded input's k*k strided windows, each `[B, Ho, Wo, Cin]`, row-major over (i, j)."""
  b, h, w, c = x.shape
  if padding == 'SAME':
    pads = (layers.same_padding(h, kh, stride), layers.same_padding(w, kw, stride))
  else:
    pads = ((0, 0), (0, 0))
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  oh = (xp.shape[1] - kh) // stride + 1
  ow = (xp.shape[2] - kw) // stride + 1
  out = []
  for i in range(kh):
    for j in range(kw):
      out.append(jax.lax.slice(xp, (0, i, j, 0), (b, i + (oh - 1) * stride + 1,
                                                  j + (ow - 1) * stride + 1, c),
                               (1, stride, stride, 1)))
  return out


def conv_library(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def conv_shift(x, w, stride, padding):
  kh, kw, cin, cout = w.shape
  wins = _windows(x, kh, kw, stride, padding)
  b, oh, ow, _ = wins[0].shape
  out = None
  for n, win in enumerate(wins):
    y = _dot(win.reshape(-1, cin), w[n // kw, n % kw])
    out = y if out is None else out + y
  return out.reshape(b, oh, ow, cout).astype(x.dtype)


def conv_im2col(x, w, stride, padding):
  kh, kw, cin, cout = w.shape
  wins = _windows(x, kh, kw, stride, padding)
  b, oh, ow, _ = wins[0].shape
  col = jnp.concatenate(wins, axis=-1) if len(wins) > 1 else wins[0]
  out = _dot(col.reshape(-1, kh * kw * cin), w.reshape(kh * kw * cin, cout))
  return out.reshape(b, oh, ow, cout).astype(x.dtype)


FORMULATIONS = {'library': conv_library, 'shift': conv_shift, 'im2col': conv_im2col}
# F(4x4, 3x3) (docs/winograd.md): each pass is its own written-out function in models/layers.py,
# not a transpose of the forward; 3x3 stride-1 'SAME' convolutions only.
WINOGRAD_PASSES = {
    'fwd': lambda x, w, g: layers.winograd_conv3x3(x, w),
    'dgrad': lambda x, w, g: layers.winograd_conv3x3_input_grad(g, w),
    'wgrad': lambda x, w, g: layers.winograd_conv3x3_weight_grad(x, g),
}


def pass_fn(conv, which: str, stride: int, padding):
  """The function one pass runs: (x, w, g) -> forward output / input grad / weight grad."""
  if which == 'fwd':
    return lambda x, w, g: conv(x, w, stride, padding)
  if which == 'dgrad':
    return lambda x, w, g: jax.linear_transpose(lambda a: conv(a, w, stride, padding), x)(g)[0]
  return lambda x, w, g: jax.linear_transpose(lambda b: conv(x, b, stride, padding), w)(g)[0]


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shapes', default=','.join(SHAPES))
  parser.add_argument('--passes', default=','.join(PASSES))
  parser.add_argument('--formulations', default='shift,im2col')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--options', default='ours', choices=('ours', 'default'))
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--batch', type=int, default=None, help="instead of the shapes' batch")
  parser.add_argument('--glibc_defaults', action='store_true',
                      help="glibc's malloc defaults instead of keeping freed memory as `main` "
                           'does in training (config.keep_freed_host_memory; results before '
                           '2026-12-04 night were measured so)')
  args = parser.parse_args()
  if not args.glibc_defaults:
    host_memory.keep_freed_memory()  # before the first computation
  options = dict(performance.CPU_COMPILER_OPTIONS) if args.options == 'ours' else {}
  forms = args.formulations.split(',')
  dtype = jnp.dtype(args.dtype)
  print(f'Machine: {machine_kind()}; JAX {jax.__version__} on {jax.default_backend()}; '
        f'{args.repeats} interleaved rounds; compiler options: {options or "default"}; '
        f'{args.dtype}; freed memory '
        f'{"returned (glibc defaults)" if args.glibc_defaults else "kept"}\n')
  print('| shape (B,H,W,Cin,Cout,k,s,pad) | pass | library ms | '
        + ' | '.join(f'{f} ms | library / {f}' for f in forms) + ' | every round (ms) |')
  print('|---|---|---|' + '---|---|' * len(forms) + '---|')
  for name in args.shapes.split(','):
    b, h, w_, cin, cout, k, stride, padding = SHAPES[name]
    b = args.batch or b
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(b, h, w_, cin)), dtype)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin), dtype)
    y = conv_library(x, w, stride, padding)
    g = jnp.asarray(rng.normal(size=y.shape), dtype)
    for which in args.passes.split(','):
      compiled = {}
      for f in ['library'] + forms:
        if f == 'winograd':
          if (k, stride, padding) != (3, 1, 'SAME'):
            raise SystemExit(f'--formulations winograd: {name} is not a 3x3 stride-1 SAME conv')
          fn = jax.jit(WINOGRAD_PASSES[which])
        else:
          fn = jax.jit(pass_fn(FORMULATIONS[f], which, stride, padding))
        compiled[f] = fn.lower(x, w, g).compile(compiler_options=options)
      ref = np.asarray(compiled['library'](x, w, g), np.float32)
      for f in forms:
        out = np.asarray(compiled[f](x, w, g), np.float32)
        scale = float(np.max(np.abs(ref))) or 1.0
        err = float(np.max(np.abs(out - ref))) / scale
        assert err < (1e-4 if dtype == jnp.float32 else 3e-2), (name, which, f, err)
      times = {f: [] for f in compiled}
      for _ in range(args.repeats):
        for f, fn in compiled.items():
          start = time.perf_counter()
          jax.block_until_ready(fn(x, w, g))
          times[f].append(1000 * (time.perf_counter() - start))
      med = {f: statistics.median(t) for f, t in times.items()}
      cells = ' | '.join(f'{med[f]:.1f} | {med["library"] / med[f]:.2f}x' for f in forms)
      rounds = '; '.join(f'{f}: ' + ', '.join(f'{t:.0f}' for t in times[f]) for f in times)
      print(f'| {name} ({b},{h},{w_},{cin},{cout},{k},{stride},{padding}) | {which} | '
            f'{med["library"]:.1f} | {cells} | {rounds} |', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
