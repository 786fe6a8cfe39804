r"""The center heatmap's focal loss with its gradient: the formulation before 2026-12-02
evening against `losses.penalty_reduced_focal_loss`, same process, interleaved.

  python benchmarks/focal_loss.py [--batch 2] [--side 128] [--classes 90] [--repeats 30]

`jax.value_and_grad` of the loss with respect to the logits, the heatmap built inside from 10
boxes per image (`targets.build_targets`, as the train step does), compiled with the train
step's options. Variants:
  float powers   `x ** 2.0` / `x ** 4.0` (XLA: exp(e * log x), and a power again in the
                 gradient), `log_sigmoid(x)` and `log_sigmoid(-x)` each with its own exp
                 and log1p, `p = exp(log p)`, `1 - p = exp(log(1 - p))` (the code before)
  ours           `losses.penalty_reduced_focal_loss`: integer powers as products, one exp
                 and one log1p per element for both signs
Checks that the losses agree to 1e-6 and the gradients to 1e-5 (relative to the largest),
then prints medians and the ratio (> 1: ours is faster).
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from centernet_jax import losses
from centernet_jax import performance
from centernet_jax import targets
import interleaved
from machine import machine_kind


def float_powers_focal_loss(logits, target_heatmap, *, alpha=2.0, beta=4.0, valid_mask=None):
  """The loss as computed until 2026-12-02 evening (same definition as the library's)."""
  x = jnp.asarray(logits, jnp.float32)
  y = jnp.asarray(target_heatmap, jnp.float32)
  log_lo, log_hi = jnp.log(jnp.float32(1e-4)), jnp.log1p(jnp.float32(-1e-4))
  log_p = jnp.clip(jax.nn.log_sigmoid(x), log_lo, log_hi)
  log_1mp = jnp.clip(jax.nn.log_sigmoid(-x), log_lo, log_hi)
  p = jnp.exp(log_p)
  one_minus_p = jnp.exp(log_1mp)
  pos_loss = -(one_minus_p ** alpha) * log_p
  neg_loss = -((1.0 - y) ** beta) * (p ** alpha) * log_1mp
  loss = jnp.where(y == 1.0, pos_loss, neg_loss) * valid_mask[..., None]
  return jnp.sum(loss)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--side', type=int, default=128)
  parser.add_argument('--classes', type=int, default=90)
  parser.add_argument('--repeats', type=int, default=30)
  args = parser.parse_args()
  b, side, c, m = args.batch, args.side, args.classes, 100
  rng = np.random.default_rng(0)
  # Two (y, x) corners per box, sorted per coordinate: [ymin, xmin], [ymax, xmax].
  corners = np.sort(rng.uniform(0, 1, (b, 10, 2, 2)), axis=2)
  boxes = np.zeros((b, m, 4), np.float32)
  boxes[:, :10] = np.concatenate([corners[:, :, 0], corners[:, :, 1]], axis=-1)
  classes = np.zeros((b, m), np.int32)
  classes[:, :10] = rng.integers(0, c, (b, 10))
  box_mask = np.zeros((b, m), np.float32)
  box_mask[:, :10] = 1.0
  logits = jnp.asarray(rng.normal(-3.0, 2.0, (b, side, side, c)), jnp.float32)
  valid = jnp.ones((b, side, side), jnp.float32)

  def with_targets(loss_fn):
    def fn(lg, bx, cl, mk):
      heatmap = targets.build_targets(bx, cl, mk, (side, side), num_classes=c)['heatmap']
      return loss_fn(lg, heatmap, valid_mask=valid)
    return jax.jit(jax.value_and_grad(fn),
                   compiler_options=performance.train_compiler_options())

  fns = {'float powers': with_targets(float_powers_focal_loss),
         'ours': with_targets(losses.penalty_reduced_focal_loss)}
  call_args = (logits, boxes, classes, box_mask)
  outs = {k: jax.device_get(f(*call_args)) for k, f in fns.items()}
  (ref_loss, ref_grad), (loss, grad) = outs['float powers'], outs['ours']
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-5 * np.abs(ref_grad).max())
  times = interleaved.time_in_turn(fns, call_args, args.repeats)
  med = interleaved.medians(times)
  print(f'# Focal loss + gradient, {machine_kind()}\n`python benchmarks/focal_loss.py '
        f'--batch {b} --side {side} --classes {c} --repeats {args.repeats}`: heatmap '
        f'[{b}, {side}, {side}, {c}] built from 10 boxes per image, medians of interleaved '
        'rounds.\n\n| formulation | median ms | float powers / this | every round (ms) |\n'
        '|---|---|---|---|')
  for k, t in times.items():
    print(f'| {k} | {med[k]:.1f} | {med["float powers"] / med[k]:.2f}x | '
          f'{interleaved.every_round(t)} |')


if __name__ == '__main__':
  main()
