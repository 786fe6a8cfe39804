r"""Side by side with the TF2 OD API: same variant, same weights, same images, same CPU, one run.

  python benchmarks/vs_odapi.py [--variants r50v1fpn,r101v1fpn,r50v2,mnv2fpn] [--hourglass] \
      [--repeats 5] [--measures e2e1,e2e8,decode,train] [--ours main[,glibc_defaults]] \
      [--out runs/bench_odapi.md]

(`make bench-odapi` runs it after building the OD API env, like `make parity`.)

For each variant (at 512, 90 classes) two worker processes are started and kept alive:
  * the OD API's (benchmarks/odapi_worker.py in the reference env, tools/odapi_env.sh): it
    builds the zoo model with random weights and writes the checkpoint, the pipeline.config and
    the inputs (eight 480x640 uint8 images, a 2-image training batch with 10 boxes each);
  * ours (this file with --worker): it imports that checkpoint (`tf_checkpoint`, strict), so
    both sides run the same weights on the same inputs.
Then the orchestrator asks each worker in turn (A B A B ...) to run one measurement once,
`--repeats` rounds, and reports the median per side and the ratio (OD API ms / our ms: > 1
means we are faster):
  e2e1 / e2e8  inference end to end at batch 1 / 8: ours = evaluation's own preprocessing
               (`pipeline.preprocess` in a tf.function, per image, as the eval tf.data map
               runs it) + the jitted network and decoder (`evaluate.make_predict_fn`) +
               fetching the detections; OD API = tf.function(preprocess + predict +
               postprocess) on the uint8 batch.
  decode       the decoder alone on the network outputs of one image (ours:
               `decoder.decode_detections` jitted; OD API: `postprocess`).
  train        one training step at batch 2 with 10 boxes per image, per image (ours: the
               jitted `train.make_train_step` with its targets built on device, boxes padded to
               `dataset.max_boxes`; OD API: tf.function of provide_groundtruth + GradientTape
               over predict + loss + Adam).
Every figure is wall time of one call with its outputs on the host, after one warm-up call;
before each call the orchestrator pauses `SETTLE_S` and the worker collects Python's
garbage (both sides alike, as `timeit` keeps the collector out of its timings). Once all the
workers of a variant are up, `WARMUP_ROUNDS` untimed rounds run first (in the log only).
Our side is two processes, each set up as `main` sets up that kind of run: one answers `train`
with glibc keeping the host memory XLA:CPU frees (`config.keep_freed_host_memory`,
host_memory.py), the other the inference measures with inference's setting (the threads'
heaps kept, since 2026-12-06; malloc as it was before), as `main --mode eval`, `detect` and
`inference.Predictor` run (until 2026-12-04 night one process answered all four with the
training setting, which costs inference ~10 % at batch 8). `--ours
main,glibc_defaults` adds a side of ours without the setting (`OUR_SETTINGS`), asked in the
same rounds (its rows say so).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from machine import machine_kind

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

VARIANTS = ('r50v1fpn', 'r101v1fpn', 'r50v2', 'mnv2fpn')
HOURGLASS = 'hg104'
MEASURES = ('e2e1', 'e2e8', 'decode', 'train')
SETTLE_S = 0.5  # idle seconds before every timed call
# Untimed rounds once every worker of a variant is up. Each worker warms up once when it starts,
# but a worker started after ours (our training worker compiling for ~40 s, 6 GB) made our next
# batch-1 calls slow: ResNet50 V2 507 ms against 261-266 before it started and 277-291 from the
# second call on; in run 15 our first timed batch-1 round took 1.6-2.9x the later rounds'
# median in every variant, the OD API's 1.0-1.14x (docs/benchmarks.md, "Side by side").
WARMUP_ROUNDS = 1
# Our workers' config overrides (`--ours`): none, which is what `main` runs with, or glibc's
# malloc defaults (XLA:CPU's buffers mapped and unmapped at every call; docs/benchmarks.md,
# "The step's host memory").
OUR_SETTINGS = {'main': {}, 'glibc_defaults': {'keep_freed_host_memory': False}}
PER_IMAGE = {'train': 2}  # reported per image: the step's batch
LABELS = {'e2e1': 'inference end to end, batch 1 (ms)',
          'e2e8': 'inference end to end, batch 8 (ms per batch)',
          'decode': 'decoder alone vs postprocess, batch 1 (ms)',
          'train': 'training step, batch 2, 10 boxes (ms per image)'}


# ---------------------------------------------------------------------------------------------
# Our worker.


def our_worker(case: str, max_boxes: int, measures, setting: str) -> None:
  """Serves the measurements of our side (same protocol as odapi_worker.py) under
  `OUR_SETTINGS[setting]`; compiles only the `measures` it will be asked for."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from centernet_jax import config_base, decoder, evaluate, models, tf_checkpoint, train  # pylint: disable=g-import-not-at-top
  from centernet_jax import import_tf_checkpoint as importer  # pylint: disable=g-import-not-at-top
  from centernet_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from centernet_jax import colour_augment, host_memory, performance  # pylint: disable=g-import-not-at-top
  from centernet_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], 'GPU')
  with open(os.path.join(case, 'pipeline.config')) as f:
    zoo = importer.read_pipeline_config(f.read())
  config = config_base.base_config()
  config.update(OUR_SETTINGS[setting])
  training = 'train' in measures
  if training and len(measures) > 1:
    raise SystemExit(f'our worker: train with {measures}: a process of ours either trains or '
                     'runs inference, as main does')
  # As main sets up a training or an evaluation run, before the first computation.
  host_memory.set_up(config, training=training)
  config.model.update_from_flattened_dict(zoo.model_overrides())
  size, num_classes = zoo.input_size, zoo.num_classes
  config.input.size = size
  config.dataset.max_boxes = max_boxes
  model = models.build_model(config.model, num_classes)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                               jnp.zeros((1, size, size, 3)), train=False))
  tf_vars = tf_checkpoint.read_tf_checkpoint(
      tf_checkpoint.checkpoint_prefix(os.path.join(case, 'ckpt')))
  variables, _ = tf_checkpoint.convert_variables(tf_vars, abstract, config.model)
  variables = jax.device_put(jax.tree.map(jnp.asarray, variables))
  inputs = dict(np.load(os.path.join(case, 'inputs.npz')))

  @tf.function
  def prep(image_u8):
    return pipeline.preprocess({'image': image_u8, 'boxes': tf.zeros([0, 4]),
                                'classes': tf.zeros([0], tf.int32), 'image_id': 0},
                               config=config)
  predict = evaluate.make_predict_fn(model, input_size=size,
                                     max_detections=config.eval.max_detections)

  def end_to_end(images):
    examples = [prep(tf.constant(im)) for im in images]
    batch = {k: np.stack([ex[k].numpy() for ex in examples]) for k in evaluate.PREDICT_KEYS}
    return jax.device_get(predict(variables, batch))

  heads = jax.jit(lambda v, x: model.apply(v, x, train=False)[-1])(
      variables, jnp.asarray(inputs['train_images'][:1]))
  # Compiled with the options the predict function compiles the decoder with.
  decode = jax.jit(functools.partial(decoder.decode_detections, input_size=size,
                                     max_detections=config.eval.max_detections),
                   compiler_options=performance.compiler_options())
  sizes = jnp.asarray([[size, size]], jnp.int32)

  tx, schedule = optimizer_lib.make_optimizer(config)
  step_fn = jax.jit(train.make_train_step(model, tx, schedule, config, num_classes),
                    donate_argnums=(0,), compiler_options=performance.train_compiler_options())
  own = jax.tree.map(jnp.copy, variables)  # the step donates its state: not the shared weights
  holder = {'state': train.TrainState(
      step=jnp.zeros((), jnp.int32), params=own['params'], batch_stats=own['batch_stats'],
      opt_state=tx.init(own['params']))}
  b, n = inputs['train_boxes'].shape[:2]
  boxes = np.zeros((b, max_boxes, 4), np.float32)
  boxes[:, :n] = inputs['train_boxes']
  classes = np.zeros((b, max_boxes), np.int32)
  classes[:, :n] = inputs['train_classes']
  mask = np.zeros((b, max_boxes), np.float32)
  mask[:, :n] = 1.0
  # The OD API's step gets no augmentation: identity colour parameters (the ops still run).
  train_batch = {'image': inputs['train_images'], 'boxes': boxes, 'classes': classes,
                 'box_mask': mask, 'true_size': np.full((b, 2), size, np.int32),
                 **colour_augment.identity_batch(config.input.augmentations, b)}

  def train_once():
    holder['state'], metrics = step_fn(holder['state'], train_batch)
    return jax.device_get(metrics['loss'])

  runs = {
      'e2e1': lambda: end_to_end(inputs['images'][:1]),
      'e2e8': lambda: end_to_end(inputs['images'][:8]),
      'decode': lambda: jax.device_get(decode(heads, true_size=sizes, original_size=sizes)),
      'train': train_once,
  }
  t0 = time.perf_counter()
  for m in measures:
    runs[m]()
  print(json.dumps({'ready': True, 'warmup_s': time.perf_counter() - t0,
                    'jax_version': jax.__version__}), flush=True)
  answer_requests(runs)


def answer_requests(runs) -> None:
  """A worker's half of the protocol after its 'ready' line: runs `runs[request]` for each
  line of stdin and answers one JSON line {'what', 'ms'} (wall ms), until 'quit'."""
  for line in sys.stdin:
    what = line.strip()
    if what == 'quit':
      break
    # The previous call's Python garbage is collected before the clock starts, as `timeit`
    # keeps the collector out of its timings: a collection falling inside the decoder's call
    # took it from 2.1 to 3.2 ms (docs/benchmarks.md, "Decoder"). The OD API's worker does the
    # same.
    gc.collect()
    t0 = time.perf_counter()
    runs[what]()
    print(json.dumps({'what': what, 'ms': (time.perf_counter() - t0) * 1e3}), flush=True)


# ---------------------------------------------------------------------------------------------
# The orchestrator.


class Worker:
  """A long-lived measuring process speaking one JSON line per request."""

  def __init__(self, name: str, cmd: list[str], log_path: str, timeout_s: float,
               env: dict[str, str] | None = None):
    """`env`: the process environment (default: this one's)."""
    self.name = name
    self.log = open(log_path, 'w')
    self.timeout_s = timeout_s
    self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE,
                                 stderr=self.log, text=True, bufsize=1)
    self.info = self._reply()

  def _reply(self) -> dict:
    deadline = time.time() + self.timeout_s
    while time.time() < deadline:
      line = self.proc.stdout.readline()
      if not line:
        raise RuntimeError(f'{self.name} worker exited (status {self.proc.wait()}); see '
                           f'{self.log.name}')
      if line.startswith('{'):
        return json.loads(line)
    raise TimeoutError(f'{self.name} worker: no answer in {self.timeout_s} s')

  def ask(self, request: str) -> dict:
    """Sends one request line; returns the worker's JSON answer."""
    self.proc.stdin.write(request + '\n')
    self.proc.stdin.flush()
    return self._reply()

  def measure(self, what: str) -> float:
    return float(self.ask(what)['ms'])

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write('quit\n')
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()
    self.log.close()


class OurSide:
  """Our side of one variant: a worker per kind of run ('train', 'inference'), each asked the
  measures it was started for."""

  def __init__(self, workers: dict[str, Worker]):
    self.workers = workers
    self.info = next(iter(workers.values())).info

  def measure(self, what: str) -> float:
    return self.workers['train' if what == 'train' else 'inference'].measure(what)

  def close(self) -> None:
    for worker in self.workers.values():
      worker.close()


def odapi_python() -> list[str]:
  """The OD API env's python command (builds the env on first use)."""
  out = subprocess.run([os.path.join(REPO, 'tools', 'odapi_env.sh')], check=True,
                       capture_output=True, text=True).stdout
  return out.strip().splitlines()[-1].split()


def run_variant(variant: str, measures, repeats: int, out_dir: str, odapi_py: list[str],
                max_boxes: int, timeout_s: float, our_settings=('main',)) -> dict:
  """One OD API worker and one of ours per name in `our_settings` (`OUR_SETTINGS`), asked in
  turn, round after round. Returns {'variant', 'times': {measure: {side: [ms, ...]}}, ...},
  sides 'ours' (the first setting), 'ours <setting>' (the others) and 'odapi'."""
  case = os.path.join(out_dir, variant)
  os.makedirs(case, exist_ok=True)
  print(f'[{variant}] building the OD API model and its inputs ...', flush=True)
  theirs = Worker('OD API', odapi_py + [os.path.join(REPO, 'benchmarks', 'odapi_worker.py'),
                                        '--variant', variant, '--case', case,
                                        '--measures', ','.join(measures)],
                  os.path.join(out_dir, f'{variant}.odapi.log'), timeout_s)
  ours = {}
  try:
    for i, setting in enumerate(our_settings):
      side = 'ours' if i == 0 else f'ours {setting}'
      print(f'[{variant}] importing its checkpoint on our side ({setting}) ...', flush=True)
      ours[side] = OurSide({
          phase: Worker(f'{side} {phase}',
                        [sys.executable, os.path.abspath(__file__), '--worker', '--case', case,
                         '--max_boxes', str(max_boxes), '--measures', ','.join(group),
                         '--ours', setting],
                        os.path.join(out_dir, f'{variant}.ours.{setting}.{phase}.log'),
                        timeout_s)
          for phase, group in (('inference', [m for m in measures if m != 'train']),
                               ('train', [m for m in measures if m == 'train'])) if group})
    sides = {**ours, 'odapi': theirs}
    times = {m: {side: [] for side in sides} for m in measures}
    for r in range(-WARMUP_ROUNDS, repeats):
      this_round = {m: {} for m in measures}
      for m in measures:
        # A B A B ...: each round runs every side back to back, each after a pause: TF's
        # thread pools spin for a while after a call, which took the cores from the decoder
        # timed next in the other process (9.7 ms for ours after the OD API's batch of 8,
        # 2.3 ms after a pause; docs/benchmarks.md).
        for side, worker in sides.items():
          time.sleep(SETTLE_S)
          this_round[m][side] = worker.measure(m) / PER_IMAGE.get(m, 1)
      label = 'warm-up round' if r < 0 else f'round {r + 1}/{repeats}'
      print(f'[{variant}] {label}: ' + ', '.join(
          f'{m} ' + '/'.join(f'{ms:.0f}' for ms in per_side.values()) + ' ms'
          for m, per_side in this_round.items()), flush=True)
      if r >= 0:  # the warm-up rounds are in the log only
        for m, per_side in this_round.items():
          for side, ms in per_side.items():
            times[m][side].append(ms)
    return {'variant': variant, 'times': times, 'odapi_info': theirs.info,
            'ours_info': ours['ours'].info}
  finally:
    theirs.close()
    for worker in ours.values():
      worker.close()


def table(results: list[dict], measures) -> str:
  lines = ['| variant | measurement | ours median ms | OD API median ms | OD API / ours | '
           'ours all (ms) | OD API all (ms) |', '|---|---|---|---|---|---|---|']
  for res in results:
    if 'error' in res:
      lines.append(f'| {res["variant"]} | failed: {res["error"]} | | | | | |')
      continue
    for m in measures:
      b = res['times'][m]['odapi']
      mb = statistics.median(b)
      for side, a in res['times'][m].items():
        if side == 'odapi':
          continue
        label = LABELS[m] + ('' if side == 'ours' else f', {side}')
        ma = statistics.median(a)
        lines.append(f'| {res["variant"]} | {label} | {ma:.1f} | {mb:.1f} | '
                     f'**{mb / ma:.2f}x** | {", ".join(f"{x:.0f}" for x in a)} | '
                     f'{", ".join(f"{x:.0f}" for x in b)} |')
  return '\n'.join(lines)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--hourglass', action='store_true', help=f'add {HOURGLASS}')
  parser.add_argument('--measures', default=','.join(MEASURES))
  parser.add_argument('--ours', default='main',
                      help=f'our worker(s), one per process setting, among '
                           f'{sorted(OUR_SETTINGS)}; the first is the table\'s "ours"')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--max_boxes', type=int, default=100,
                      help='our padded boxes per image (dataset.max_boxes of a COCO run)')
  parser.add_argument('--out_dir', default=os.path.join(REPO, 'runs', 'bench_odapi'))
  parser.add_argument('--out', default=os.path.join(REPO, 'runs', 'bench_odapi.md'))
  parser.add_argument('--timeout_s', type=float, default=1800.0,
                      help='per worker start-up (build + compile) and per request')
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--case', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  measures = [m for m in args.measures.split(',') if m]
  if args.worker:
    our_worker(args.case, args.max_boxes, measures, args.ours)
    return 0
  unknown = sorted(set(measures) - set(MEASURES))
  if unknown:
    parser.error(f'--measures: unknown {unknown}; choose from {MEASURES}')
  if args.repeats < 1:
    parser.error('--repeats must be >= 1')
  our_settings = [o for o in args.ours.split(',') if o]
  unknown = sorted(set(our_settings) - set(OUR_SETTINGS))
  if unknown or not our_settings:
    parser.error(f'--ours: unknown {unknown}; choose from {sorted(OUR_SETTINGS)}')
  variants = [v for v in args.variants.split(',') if v] + ([HOURGLASS] if args.hourglass else [])
  os.makedirs(args.out_dir, exist_ok=True)
  odapi_py = odapi_python()
  kind = machine_kind()
  started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
  results = []
  for v in variants:
    try:
      results.append(run_variant(v, measures, args.repeats, args.out_dir, odapi_py,
                                 args.max_boxes, args.timeout_s, our_settings))
    except (RuntimeError, TimeoutError, OSError) as e:
      print(f'[{v}] failed: {e}', flush=True)
      results.append({'variant': v, 'error': str(e)})
  info = next((r for r in results if 'error' not in r), {})
  header = (f'Machine: {kind} (at the start). Started {started}; {args.repeats} interleaved '
            f'rounds (ours, OD API, ours, ...) after {WARMUP_ROUNDS} untimed, median per side. '
            f'Ours: jax '
            f'{info.get("ours_info", {}).get("jax_version", "?")}; OD API: TF '
            f'{info.get("odapi_info", {}).get("tf_version", "?")}. Command: '
            f'`python benchmarks/vs_odapi.py --variants {",".join(variants)} --repeats '
            f'{args.repeats} --measures {",".join(measures)}'
            f'{"" if our_settings == ["main"] else " --ours " + ",".join(our_settings)}`'
            f'; ours under the process setting {our_settings[0]!r} unless named')
  text = header + '\n\n' + table(results, measures) + '\n'
  print('\n' + text)
  with open(args.out, 'w') as f:
    f.write(text)
  with open(os.path.splitext(args.out)[0] + '.json', 'w') as f:
    json.dump({'machine': kind, 'started': started, 'results': results}, f, indent=1)
  return 1 if any('error' in r for r in results) else 0


if __name__ == '__main__':
  sys.exit(main())
