"""Training and evaluation loop: `train_and_evaluate(config, workdir)`.

One jitted step over a `('data', 'fsdp')` mesh of every device: the batch is sharded over all
devices, the state is replicated (or split over `fsdp`, see sharding.py), the state buffers are
donated. Resumes from the latest checkpoint in the workdir at
the same step with the data stream continuing where it stopped.
"""

import math
from typing import Any

import jax
import ml_collections
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from centernet_jax import checkpointing
from centernet_jax import evaluate
from centernet_jax import image_summaries
from centernet_jax import model_variables
from centernet_jax import optimizer as optimizer_lib
from centernet_jax import performance
from centernet_jax import run_files
from centernet_jax import sharding
# The step itself lives in train_step.py; its names stay reachable as train.* too.
from centernet_jax.train_step import (  # noqa: F401
    KEYPOINT_TRAIN_KEYS, TRAIN_KEYS, TrainState, create_train_state, make_train_step,
    output_size, safe_global_norm, train_keys, train_state_from_variables)
from centernet_jax import startup
from centernet_jax.data import pipeline


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or Inf; the run stops and keeps its last good checkpoint."""


def _check_finite(step: int, metrics: dict[str, float], workdir) -> None:
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    raise NonFiniteLossError(
        f'Non-finite training metrics at step {step}: {bad}. Training stopped; the last good '
        f'checkpoint in {checkpointing.checkpoint_dir(workdir)} is kept (no checkpoint is written '
        f'from a non-finite state). Lower optimizer.learning_rate or check the data.')


class Trainer:
  """Everything `train_and_evaluate` and the eval mode share: mesh, data, model, state."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               splits: tuple[str, ...] = ('train', 'val')):
    """`state` starts abstract (shapes and shardings only): `restore_or_initialize` restores a
    checkpoint onto it, and compiles and runs the init program only when there is none."""
    self.config = config
    self.workdir = epath.Path(workdir)
    # Config and data of `splits` are checked before anything is built or compiled.
    # The dataset's facts (label map, keypoint spec, files) are resolved once, there.
    self.facts, self.datasets = startup.check_before_build(config, workdir, splits=splits)
    self.mesh = sharding.make_mesh(config.mesh)
    self.replicated = sharding.replicated(self.mesh)
    self.label_map = self.facts.label_map
    self.num_classes = self.facts.num_classes
    self.keypoint_spec = self.facts.keypoint_spec
    self.model = run_files.build_model(run_files.RunFiles(
        config, run_files.label_map_json(self.label_map), self.keypoint_spec))
    self.tx, self.schedule = optimizer_lib.make_optimizer(config)
    abstract = model_variables.abstract_train_state(self.model, self.tx, config.input.size)
    self.state_shardings = sharding.state_shardings(self.mesh, abstract)
    self.state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
        self.state_shardings)
    self.manager = checkpointing.make_manager(self.workdir, keep=config.keep_checkpoints)
    self.predict_fn = evaluate.make_predict_fn(
        self.model, input_size=config.input.size, max_detections=config.eval.max_detections,
        keypoint_params=evaluate.keypoint_decode_params(self.keypoint_spec, config),
        tta=evaluate.tta_params(config, self.keypoint_spec))
    self.summary_fn = image_summaries.make_summary_fn(
        self.model, config, self.num_classes, self.keypoint_spec,
        evaluate.keypoint_decode_params(self.keypoint_spec, config))

  def restore_or_initialize(self) -> int:
    """Resumes from the workdir, else initialises (with the params of `init_checkpoint` if
    one is given). A resumed run neither compiles nor runs the init program: for a full-size
    model that compile is minutes of a CPU host's time."""
    config = self.config
    init_fn = lambda rng: create_train_state(rng, self.model, self.tx, config.input.size)
    self.state = run_files.restore_train_state(
        self.manager, self.state, init_checkpoint=config.init_checkpoint,
        initialize=lambda: performance.run_init(init_fn, jax.random.key(config.seed),
                                                self.state_shardings))
    return int(self.state.step)

  def variables(self) -> dict[str, Any]:
    return {'params': self.state.params, 'batch_stats': self.state.batch_stats}

  def evaluate(self, step: int, writer=None) -> dict[str, float] | None:
    config = self.config
    eval_iter, num_batches = pipeline.make_eval_iterator(
        config, self.facts, process_index=jax.process_index(), process_count=jax.process_count(),
        dataset=self.datasets.get('val'))
    eval_iter = startup.EvalBatches(eval_iter, self.datasets.get('val'))
    metrics = evaluate.run_evaluation(
        variables=self.variables(), predict_fn=self.predict_fn, eval_iterator=eval_iter,
        num_batches=num_batches, mesh=self.mesh, annotation_file=self.facts.ground_truth_file,
        channel_to_category_id=self.label_map.channel_to_id_array,
        keypoint_spec=self.keypoint_spec,
        keypoint_annotation_file=(self.facts.require_keypoint_ground_truth()
                                  if self.keypoint_spec is not None else None),
        output_dir=self.workdir, step=step)
    if jax.process_index() == 0 and metrics is not None:
      logging.info('Eval at step %d: %s (per class: eval_per_class.md)', step,
                   ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()
                             if not evaluate.is_per_class_key(k)))
      evaluate.write_metrics(self.workdir, step, metrics)
      if writer is not None:
        writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    if writer is not None and config.eval.image_summaries:
      image_summaries.write_image_summaries(
          writer, step, summary_fn=self.summary_fn, variables=self.variables(),
          eval_iterator=eval_iter, mesh=self.mesh,
          class_names=self.label_map.to_json_dict()['names'], config=config,
          keypoint_spec=self.keypoint_spec)
    return metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints) and evaluates it.

  Returns the last evaluation metrics (process 0), or the last training metrics if no
  evaluation ran.
  """
  trainer = Trainer(config, workdir)
  sharding.check_batch_size(config.batch_size, trainer.mesh, 'batch_size')
  sharding.check_batch_size(config.eval.batch_size, trainer.mesh, 'eval.batch_size')
  start_step = trainer.restore_or_initialize()
  run_files.write_run_files(trainer.workdir, config, trainer.label_map, trainer.keypoint_spec)
  writer = metric_writers.create_default_writer(
      str(trainer.workdir), just_logging=jax.process_index() > 0, asynchronous=True)
  num_params = sum(x.size for x in jax.tree.leaves(trainer.state.params))
  logging.info('Model %s with %d classes, %s parameters; mesh %s; global batch %d; '
               'train state %.1f MiB per device.', config.model.backbone,
               trainer.num_classes, f'{num_params:,}', dict(trainer.mesh.shape),
               config.batch_size,
               sharding.bytes_per_device(trainer.state, trainer.state_shardings) / 2**20)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in _flat_config(config).items()})

  train_step = jax.jit(
      make_train_step(trainer.model, trainer.tx, trainer.schedule, config,
                      trainer.num_classes, trainer.keypoint_spec),
      donate_argnums=(0,), out_shardings=(trainer.state_shardings, trainer.replicated),
      compiler_options=performance.train_compiler_options())
  train_iter = startup.TrainBatches(
      config, trainer.facts, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count(), dataset=trainer.datasets.get('train'),
      workdir=trainer.workdir)
  report = periodic_actions.ReportProgress(
      num_train_steps=config.num_train_steps, writer=writer,
      every_steps=config.log_every_steps)

  last_metrics: dict[str, float] = {}
  sums: dict[str, float] = {}
  count = 0
  # (step, device metrics) of the steps not read yet. Metrics stay on the device until a log,
  # checkpoint or evaluation step, so the host never waits on the step it just dispatched;
  # all of them are then read and checked in order, so a NaN still names its exact step and
  # no checkpoint is ever written from a state that followed a non-finite step.
  pending: list[tuple[int, Any]] = []
  eval_metrics = None
  step = start_step
  throughput = None
  profile = performance.ProfileWindow(tuple(config.profile_steps), trainer.workdir)

  def consume_pending() -> None:
    nonlocal sums, count, last_metrics
    fetched = jax.device_get([m for _, m in pending])
    steps = [s for s, _ in pending]
    pending.clear()
    for done_step, device_metrics in zip(steps, fetched):
      host = {k: float(v) for k, v in device_metrics.items()}
      _check_finite(done_step, host, workdir)
      for k, v in host.items():
        sums[k] = sums.get(k, 0.0) + v
      count += 1
      if done_step % config.log_every_steps == 0 or done_step == config.num_train_steps:
        last_metrics = {k: v / count for k, v in sums.items()}
        speed = {f'train/{k}': v for k, v in throughput.measure().items()}
        writer.write_scalars(done_step, {**{f'train/{k}': v for k, v in last_metrics.items()},
                                         **speed,
                                         'data/skipped_images': train_iter.num_skipped})
        sums, count = {}, 0

  try:
    for step in range(start_step + 1, config.num_train_steps + 1):
      profile.before_step(step)
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        batch = sharding.to_global(next(train_iter), trainer.mesh,
                                   train_keys(trainer.keypoint_spec))
        if throughput is None:
          train_step = train_step.lower(trainer.state, batch).compile()
          throughput = _throughput(config, train_step, trainer)
        trainer.state, metrics = train_step(trainer.state, batch)
      throughput.add_steps()
      profile.after_step(step, trainer.state)
      pending.append((step, metrics))
      report(step)
      is_last = step == config.num_train_steps
      save_now = step % config.checkpoint_every_steps == 0 or is_last
      eval_now = (config.eval_every_steps > 0 and step % config.eval_every_steps == 0) or (
          is_last and config.eval.on_train_end)
      if save_now or eval_now or step % config.log_every_steps == 0:
        consume_pending()  # a checkpoint is only written from a state with finite metrics
      checkpointing.check_saves(trainer.manager)  # a failed background save stops the run now
      if save_now:
        checkpointing.save(trainer.manager, step, trainer.state,
                           run_files.checkpoint_meta(config, trainer.label_map,
                                                     trainer.keypoint_spec, step))
      if eval_now:
        with report.timed('eval'):
          eval_metrics = trainer.evaluate(step, writer)
      if save_now or eval_now:
        throughput.reset()  # images/s and MFU count training time only
    if pending:
      consume_pending()
  finally:
    profile.close()
    checkpointing.close(trainer.manager)  # raises if the last save failed
    writer.flush()
  if start_step >= config.num_train_steps:
    logging.info('Nothing to train: the workdir is already at step %d.', start_step)
    if config.eval.on_train_end and not (trainer.workdir / 'eval_metrics.json').exists():
      eval_metrics = trainer.evaluate(start_step, writer)
  return eval_metrics if eval_metrics is not None else last_metrics


def _throughput(config, compiled_step, trainer) -> performance.Throughput:
  """Logs the compiled step's cost once and returns the meter of images/s, TFLOP/s, MFU."""
  flops = performance.compiled_flops(compiled_step)
  device = jax.devices()[0]
  peak = performance.peak_tflops(device, config.model.dtype, config.peak_tflops_per_device)
  logging.info('Train step: %.1f GFLOP per step per device (XLA cost analysis), %.2f GFLOP '
               'per image; peak %s TFLOP/s per %s device (%s).', flops / 1e9,
               flops * trainer.mesh.size / config.batch_size / 1e9, peak or 'unknown',
               device.device_kind, 'config.peak_tflops_per_device' if
               config.peak_tflops_per_device > 0 else 'table in performance.py')
  return performance.Throughput(global_batch=config.batch_size,
                                flops_per_step_per_device=flops, peak_tflops_per_device=peak)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: int | None = None) -> dict[str, float] | None:
  """Evaluates a saved checkpoint of `workdir` (the latest if `step` is None)."""
  trainer = Trainer(config, workdir, splits=('val',))
  if step is None and trainer.manager.latest_step() is None:
    raise FileNotFoundError(f'No checkpoint under {checkpointing.checkpoint_dir(workdir)}.')
  trainer.state = run_files.restore_train_state(trainer.manager, trainer.state, step=step)
  done_step = int(trainer.state.step)
  writer = metric_writers.create_default_writer(
      str(trainer.workdir), just_logging=jax.process_index() > 0)
  try:
    return trainer.evaluate(done_step, writer)
  finally:
    writer.flush()
    trainer.manager.close()


def _flat_config(config: ml_collections.ConfigDict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      flat.update(_flat_config(v, f'{prefix}{k}.'))
    elif isinstance(v, (int, float, str, bool)):
      flat[prefix + k] = v
    else:
      flat[prefix + k] = str(v)
  return flat
