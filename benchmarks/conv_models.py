r"""Whole models with the library convolution against `layers.conv_general_dilated` (weight
gradients as matrix products on CPU), each under a named set of compiler options (`OPTIONS`);
same process, interleaved.

  python benchmarks/conv_models.py --row r50v1fpn --measure train \
      [--variants library+ours,dots+ours,dots+default] [--batch 2] [--repeats 3]
  python benchmarks/conv_models.py --row mnv2fpn --measure predict --batch 8
  python benchmarks/conv_models.py --row demo --measure train --batch 8 --repeats 20

A variant is
`<conv>+<options>[+flaxbn][+chain][+flaxpool][+stackkt][+autodw][+noprod][+bnx][+biasadd]
[+nophases]`: conv
`library` (`lax.conv_general_dilated` in every `nn.Conv`, the code before this change), `dots`
(the models as they are), `nowino` (the models without F(4x4, 3x3): before 2026-12-03 night),
`dots64` (also products only at maps of 64 x 64 pixels and more,
`layers.DOTS_MIN_WEIGHT_GRAD_FLOPS` ignored: the rule before 2026-12-02 evening) or
`deconvlib` (no F(4x4, 3x3), and the library call in transposed convolutions: ResNet50 V2
before `layers.ConvTranspose2D`); options `ours`
(`performance.CPU_COMPILER_OPTIONS`: YNNPACK's dot fusions off, oneDNN on), `train`
(`performance.CPU_TRAIN_COMPILER_OPTIONS`: XLA's defaults and oneDNN), `noonednn` (`ours`
without oneDNN) or `default` (XLA's); `flaxbn`
puts `nn.BatchNorm` (autodiff's gradient) where the models have `layers.BatchNorm` (its
written-out training gradient; the models before 2026-12-03 evening); `chain` leaves the
residual blocks' outputs to XLA's fusion (`layers.block_output` as the identity: the models
before 2026-12-03 late evening); `flaxpool` gives the ResNet stems' max pool Flax's
`nn.max_pool` instead of `layers.max_pool`; `stackkt` computes F(4x4, 3x3)'s kernel transform
and its transpose as sums of slices, stacked (before 2026-12-04), instead of one product;
`autodw` gives the depthwise convolutions autodiff's weight gradient (one reduction per tap of
a window of the padded input: before 2026-12-04 evening) instead of
`layers.depthwise_weight_grad`; `noprod` keeps the library's forward and input gradient in
training where `layers.conv_plan` gives tap products (before 2026-12-04 night); `bnx` keeps
the batch norm's input as its training residual (`input_residual_batch_norm_train`, before
2026-12-05) instead of the centred input; `biasadd` adds the convolutions' biases before their
batch norms in training too (`layers.conv_then_batch_norm` as the two layers, before
2026-12-05); `nophases` gives transposed convolutions the library's forward (the convolution
of the dilated input, before 2026-12-05 evening) instead of `layers.input_dilated_conv_phases`.
`train` is the jitted `train.make_train_step` (90 classes, 100 box slots, random He-normal
weights, a batch of random images with 3 boxes each, identity colour ops); `predict` is
`predict.make_predict_fn` (network + decoder, 100 detections). All variants are compiled first
(their results must agree: detections; or loss, gradient norm and the updated parameters),
then each round times one call of each; medians and every round. The process sets malloc up
as `main` would for the measure (`host_memory.set_up`: freed memory kept in training).
"""

import argparse
import functools
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=wrong-import-position
from centernet_jax import host_memory
from centernet_jax import optimizer as optimizer_lib
from centernet_jax import performance
from centernet_jax import predict
from centernet_jax import train
from centernet_jax.models import layers
import interleaved
from machine import machine_kind

ROWS = {**interleaved.ROWS,
        'demo': 'demo'}  # `make demo`'s narrow ResNet-18 FPN at 96 px (use --batch 8)
NUM_CLASSES = interleaved.NUM_CLASSES
MAX_BOXES = 100
DOTS_CONV = layers.conv_general_dilated
OUR_BATCH_NORM = layers.BatchNorm
OUR_BLOCK_OUTPUT = layers.BLOCK_OUTPUT_CPU
OUR_MAX_POOL = layers.max_pool


# The compiler options a variant's second part names. `ours` is what predict compiles with,
# `train` what the training step compiles with; the other two leave oneDNN out of them.
OPTIONS = {
    'ours': performance.CPU_COMPILER_OPTIONS,
    'train': performance.CPU_TRAIN_COMPILER_OPTIONS,
    'default': {},
    'noonednn': {k: v for k, v in performance.CPU_COMPILER_OPTIONS.items()
                 if k not in performance.ONEDNN_OPTIONS},
}


def flax_max_pool(x, window, strides):
  """The `flaxpool` stem pool: `nn.max_pool` and autodiff's gradient (the models before
  2026-12-03 late evening)."""
  return nn.max_pool(x, window, strides=strides, padding='VALID')


def stacked_kernel_tiles(kernel):
  """The `stackkt` kernel transform `G w G^T`: 36 sums of slices, stacked."""
  return layers._transform_2d(layers._WINOGRAD_G, kernel).reshape((36,) + kernel.shape[2:])  # pylint: disable=protected-access


def stacked_kernel_tiles_transposed(tiles):
  """The `stackkt` transpose of the kernel transform, `G^T . G`, as sums of slices."""
  return layers._transform_2d(layers._WINOGRAD_G.T, tiles.reshape(6, 6, *tiles.shape[1:]))  # pylint: disable=protected-access


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def input_residual_batch_norm_train(x, scale, bias, epsilon, fast_variance):
  """The `bnx` batch norm: `layers.batch_norm_train` as it was before 2026-12-05, the same
  forward, its input as the residual and x_hat recomputed from it in the backward."""
  # pylint: disable-next=protected-access
  return layers._batch_norm_train_forward(x, scale, bias, epsilon, fast_variance)[:3]


def _bnx_fwd(x, scale, bias, epsilon, fast_variance):
  # pylint: disable-next=protected-access
  y, mean, var, inv, _ = layers._batch_norm_train_forward(x, scale, bias, epsilon,
                                                          fast_variance)
  return (y, mean, var), (x, mean, inv, scale)


def _bnx_bwd(epsilon, fast_variance, residuals, cotangents):
  del epsilon, fast_variance
  x, mean, inv, scale = residuals
  g = cotangents[0].astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  x_hat = (x.astype(jnp.float32) - mean) * inv
  d_bias = jnp.sum(g, axes)
  d_scale = jnp.sum(g * x_hat, axes)
  return ((scale * inv / n) * (n * g - d_bias - x_hat * d_scale)).astype(x.dtype), d_scale, d_bias


input_residual_batch_norm_train.defvjp(_bnx_fwd, _bnx_bwd)


def conv_plus_bias_then_batch_norm(conv, batch_norm, x, train):
  """The `biasadd` `layers.conv_then_batch_norm`: the two layers one after the other."""
  del train
  return batch_norm(conv(x))


def dots_but_library_transposed(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                **kwargs):
  """The `deconvlib` conv: the products everywhere except in transposed convolutions (input
  dilation), which get the library call (the code before `layers.ConvTranspose2D`)."""
  if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding,
                                        lhs_dilation=lhs_dilation, **kwargs)
  return DOTS_CONV(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, **kwargs)


def library_dilated_forward(x, kernel, lhs_dilation, pads):
  """The `nophases` forward of a transposed convolution: the library's."""
  # pylint: disable-next=protected-access
  return layers._conv_library(x, kernel, (1, 1), pads, lhs_dilation)


def lower(fn, args, overrides):
  """Lowers `fn(*args)` with the `layers` attributes in `overrides` (the convolution every
  `nn.Conv` of the models calls, the batch norm class, the bounds: all read when traced) set,
  restoring them after."""
  saved = {name: getattr(layers, name) for name in overrides}
  for name, value in overrides.items():
    setattr(layers, name, value)
  try:
    return fn.lower(*args)
  finally:
    for name, value in saved.items():
      setattr(layers, name, value)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--row', default='r50v1fpn', choices=sorted(ROWS))
  parser.add_argument('--measure', default='train', choices=('train', 'predict'))
  parser.add_argument('--variants', default='library+ours,dots+ours,dots+default')
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  config = interleaved.row_config(ROWS[args.row])
  # As main runs the row (freed memory kept in training only), before the first computation.
  host_memory.set_up(config, training=args.measure == 'train')
  config.dataset.max_boxes = MAX_BOXES
  model, variables, size = interleaved.row_model(config)
  b = args.batch
  if args.measure == 'train':
    tx, schedule = optimizer_lib.make_optimizer(config)
    # A new function per variant: jit caches its trace per function, and the conv is read then.
    make_fn = lambda: jax.jit(train.make_train_step(model, tx, schedule, config, NUM_CLASSES))
    images = np.random.default_rng(0).integers(0, 256, (b, size, size, 3))
    state, batch = interleaved.train_inputs(config, variables, tx, images)
    call_args = (state, batch)
  else:
    make_fn = lambda: predict.make_predict_fn(model, input_size=size, max_detections=100,
                                              top_level=False)
    call_args = (variables, interleaved.predict_inputs(size, b))
  print(f'Machine: {machine_kind()}; JAX {jax.__version__} on {jax.default_backend()}; '
        f'{args.row} {args.measure} batch {b}; {args.repeats} interleaved rounds\n', flush=True)
  compiled = {}
  for variant in args.variants.split(','):
    conv, options, *flags = variant.split('+')
    start = time.perf_counter()
    if conv not in ('library', 'dots', 'dots64', 'deconvlib', 'nowino'):
      raise SystemExit(f'--variants: unknown conv {conv!r} in {variant!r}')
    if options not in OPTIONS:
      raise SystemExit(f'--variants: unknown options {options!r} in {variant!r} '
                       f'(one of {", ".join(OPTIONS)})')
    flag_names = ('flaxbn', 'chain', 'flaxpool', 'stackkt', 'autodw', 'noprod', 'bnx',
                  'biasadd', 'nophases')
    if not set(flags) <= set(flag_names):
      raise SystemExit(f'--variants: {variant!r} may only end in '
                       + ', '.join(f'"+{f}"' for f in flag_names))
    overrides = {
        'conv_general_dilated': {'library': jax.lax.conv_general_dilated,
                                 'deconvlib': dots_but_library_transposed}.get(conv, DOTS_CONV),
        'BatchNorm': nn.BatchNorm if 'flaxbn' in flags else OUR_BATCH_NORM,
        'BLOCK_OUTPUT_CPU': (lambda x: x) if 'chain' in flags else OUR_BLOCK_OUTPUT,
        'max_pool': flax_max_pool if 'flaxpool' in flags else OUR_MAX_POOL}
    if 'stackkt' in flags:
      overrides['winograd_kernel_tiles'] = stacked_kernel_tiles
      overrides['winograd_kernel_tiles_transposed'] = stacked_kernel_tiles_transposed
    if 'autodw' in flags:
      # pylint: disable-next=protected-access
      overrides['depthwise_conv_shift_add'] = layers._depthwise_shift_add
    if 'bnx' in flags:
      overrides['batch_norm_train'] = input_residual_batch_norm_train
    if 'biasadd' in flags:
      overrides['conv_then_batch_norm'] = conv_plus_bias_then_batch_norm
    if 'nophases' in flags:
      overrides['input_dilated_conv_phases'] = library_dilated_forward
    if 'noprod' in flags:
      overrides['TRAIN_PRODUCTS_MIN_CHANNEL_PAIRS'] = float('inf')
      overrides['TRAIN_PRODUCTS_MIN_POINTWISE_FLOPS'] = float('inf')
    if conv == 'dots64':
      overrides['DOTS_MIN_WEIGHT_GRAD_FLOPS'] = float('inf')
    if conv in ('dots64', 'deconvlib', 'nowino'):
      overrides['WINOGRAD_MIN_CHANNELS'] = float('inf')
    lowered = lower(make_fn(), call_args, overrides)
    compiled[variant] = lowered.compile(
        compiler_options=dict(OPTIONS[options]))
    print(f'{variant}: compiled in {time.perf_counter() - start:.0f} s', flush=True)
  outs = {k: jax.device_get(f(*call_args)) for k, f in compiled.items()}
  first, ref = next(iter(outs.items()))
  for k, out in outs.items():
    if args.measure == 'train':  # (state, metrics)
      pairs = [(out[1][m], ref[1][m]) for m in ('loss', 'grad_norm')]
      # Adam's first update is about lr * sign(gradient): parameters whose gradient is small
      # against rounding flip by 2 lr between variants that round differently. The products
      # flip a handful (4 of ResNet101 V1 FPN's 44.3 M against the library); F(4x4, 3x3),
      # whose results differ by ~1e-5 relative (docs/winograd.md), 1.3 % of them. A wrong
      # gradient changes most of them: at most 2 % may differ.
      params = list(zip(jax.tree.leaves(out[0].params), jax.tree.leaves(ref[0].params)))
      off = sum(int(np.sum(~np.isclose(a, r, rtol=1e-3, atol=1e-3))) for a, r in params)
      total = sum(r.size for _, r in params)
      print(f'{k}: {off} of {total} updated parameters differ from {first}\'s', flush=True)
      if off > total // 50:
        raise AssertionError(f'{k}: {off} of {total} updated parameters differ from {first}')
    else:
      pairs = [(out['boxes'], ref['boxes']), (out['scores'], ref['scores'])]
    for a, r in pairs:
      np.testing.assert_allclose(a, r, rtol=1e-3, atol=1e-3, err_msg=k)
  times = interleaved.time_in_turn(compiled, call_args, args.repeats)
  base = statistics.median(times[first])
  print(f'\n| variant | median ms | {first} / variant | every round (ms) |\n|---|---|---|---|')
  for k, t in times.items():
    med = statistics.median(t)
    print(f'| {k} | {med:.0f} | {base / med:.2f}x | {", ".join(f"{x:.0f}" for x in t)} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
