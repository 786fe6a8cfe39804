"""Optimizer and learning-rate schedules as the TF2 zoo configs define them.

All schedules are functions of the optimizer step (an integer count of updates).
"""

import ml_collections
import optax


def learning_rate_schedule(opt_config: ml_collections.ConfigDict,
                           num_train_steps: int) -> optax.Schedule:
  """Builds the zoo's schedule.

  'cosine' (`cosine_decay_with_warmup`): linear from `warmup_learning_rate` to `learning_rate`
  over `warmup_steps`, then 0.5 * base * (1 + cos(pi * (step - warmup) / (total - warmup))),
  and 0 after `num_train_steps`.
  'manual_steps' (`manual_step_learning_rate`): piecewise constant, `manual_rates[i]` until
  `manual_boundaries[i]`, no warmup.
  """
  kind = opt_config.schedule
  if kind == 'cosine':
    warmup = int(opt_config.warmup_steps)
    if warmup >= num_train_steps:
      raise ValueError(
          f'optimizer.warmup_steps ({warmup}) must be smaller than num_train_steps '
          f'({num_train_steps}).')
    warm = optax.linear_schedule(opt_config.warmup_learning_rate, opt_config.learning_rate,
                                 max(warmup, 1))
    decay = optax.cosine_decay_schedule(opt_config.learning_rate, num_train_steps - warmup)
    return optax.join_schedules([warm, decay], [warmup]) if warmup > 0 else decay
  if kind == 'manual_steps':
    boundaries = [int(b) for b in opt_config.manual_boundaries]
    rates = [float(r) for r in opt_config.manual_rates]
    if len(rates) != len(boundaries) + 1:
      raise ValueError(
          f'optimizer.manual_rates needs one more entry than manual_boundaries; got '
          f'{len(rates)} rates for {len(boundaries)} boundaries.')
    if list(boundaries) != sorted(boundaries):
      raise ValueError(f'optimizer.manual_boundaries must increase, got {boundaries}.')
    return optax.join_schedules([optax.constant_schedule(r) for r in rates], boundaries)
  raise ValueError(f"optimizer.schedule must be 'cosine' or 'manual_steps', got {kind!r}.")


def make_optimizer(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation,
                                                               optax.Schedule]:
  """Adam (beta 0.9/0.999, the config's epsilon, no weight decay) with the zoo schedule."""
  schedule = learning_rate_schedule(config.optimizer, config.num_train_steps)
  parts = []
  if config.optimizer.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.optimizer.grad_clip_norm))
  parts.append(optax.adam(schedule, b1=0.9, b2=0.999, eps=config.optimizer.adam_epsilon))
  return optax.chain(*parts), schedule
