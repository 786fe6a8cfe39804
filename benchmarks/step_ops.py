r"""The training step's time op by op, ours beside the OD API's: same variant and CPU, one run.

  python benchmarks/step_ops.py --variant r50v1fpn [--steps 3]
  taskset -c 0 python benchmarks/step_ops.py --variant r50v2     # one core: op times add up

Ours: the jitted `train.make_train_step` of the variant's experiment (90 classes, 100 box
slots, random weights, a batch of 2 random images with 3 boxes each, as
`benchmarks/conv_models.py`), compiled as training compiles it, under `jax.profiler`. The OD
API's: `benchmarks/odapi_worker.py`'s training step (batch 2, 10 boxes, its random weights)
under `tf.profiler`, in the reference env (`tools/odapi_env.sh`). Each side's op times are
summed over its threads and averaged over `--steps` steps, after warm-up steps.

Prints two tables: the time per layer group (Keras layer names, which both sides share:
the stem, each ResNet stage, the MobileNetV2 blocks, the FPN or upsampling layers, the heads;
ops outside named layers, such as the targets, the loss, Adam and our stem's max pool, count as
"other"), and each side's time per kind of op. On two cores the libraries' own threads and
independent ops overlap, so op times add up to more than the step; on one core (`taskset`, which
the OD API worker inherits) they add up to it. docs/benchmarks.md, "The training step against
the OD API's, op by op", has what this found.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=wrong-import-position
from centernet_jax import host_memory
from centernet_jax import optimizer as optimizer_lib
from centernet_jax import performance
from centernet_jax import train
import interleaved
from machine import machine_kind
import vs_odapi

# (group, pattern) in order: the first that matches an op's layer path names its group. TF's
# FPN and upsampling layers are the feature extractor's own (`model_1/`, not its backbone's
# `model_1/model/`); TF's heads are `center_0/`, `box_scale_0/`, ..., ours `object_center_0/`.
GROUPS = (
    ('heads', r'(^|/)(object_)?center_0/|box_scale_0/|box_offset_0/|keypoint'),
    ('stem', r'(^|/)conv1_(conv|bn|relu|pad)|pool1_|(^|/)(bn_)?Conv1'),
    ('conv2', r'conv2_block'), ('conv3', r'conv3_block'), ('conv4', r'conv4_block'),
    ('conv5', r'conv5_block'),
    ('MobileNetV2 blocks', r'(^|/)(block_\d+_|expanded_conv|Conv_1)'),
    ('FPN / upsampling', r'fpn_|upsample|model_1/(?!model/)'),
)


def group_of(layer_path: str) -> str:
  for group, pattern in GROUPS:
    if re.search(pattern, layer_path):
      return group
  return 'other'


def tf_kind(name: str, op_type: str) -> str:
  """A TF op's kind: the three convolution passes, batch norm, ReLU's gradient, or other."""
  if 'conv2d' in op_type.lower():  # also the depthwise ones (DepthwiseConv2dNative...)
    if 'BackpropFilter' in op_type:
      return 'convolution weight gradient'
    if 'BackpropInput' in op_type:
      return 'convolution input gradient'
    return 'convolution forward (with fused bias, ReLU)'
  if 'BatchNorm' in op_type:
    return 'batch norm ' + ('gradient' if 'Grad' in op_type else 'forward')
  if op_type == 'ReluGrad':
    return 'ReLU gradient'
  del name
  return 'other ops (Adam, the loss, elementwise)'


def our_kind(instruction: str, fused: dict[str, str]) -> str:
  """An XLA instruction's kind: what its fused computation computes, and who runs it."""
  # The opcode is the first word before a '(' after the shape (a tuple shape has no word there).
  found = re.search(r' ([\w-]+)\(', instruction.split(' = ', 1)[1])
  op = found.group(1) if found else ''
  if op != 'fusion':
    return {'convolution': 'library convolution (XLA)', 'dot': 'matrix product'}.get(
        op, 'other (copies, concatenations)')
  body = fused.get(re.search(r'calls=%([\w.-]+)', instruction).group(1), '')
  library = '__ynn_fusion' in instruction
  if ' convolution(' in body:
    return 'library convolution (YNNPACK)' if library else 'library convolution (XLA)'
  if ' dot(' in body:
    return 'matrix product'
  if ' reduce(' in body:
    return 'reduction (YNNPACK)' if library else 'reduction (XLA)'
  return 'elementwise fusion (XLA)'


def profile_ours(variant: str, steps: int) -> tuple[dict, dict, float]:
  """(ms per layer group, ms per kind, median step ms) of our training step."""
  config = interleaved.row_config(interleaved.ROWS[variant])
  host_memory.set_up(config, training=True)
  config.dataset.max_boxes = 100
  model, variables, size = interleaved.row_model(config)
  tx, schedule = optimizer_lib.make_optimizer(config)
  images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3))
  state, batch = interleaved.train_inputs(config, variables, tx, images)
  step_fn = train.make_train_step(model, tx, schedule, config, interleaved.NUM_CLASSES)
  step = jax.jit(step_fn).lower(state, batch).compile(
      compiler_options=performance.train_compiler_options())
  times = []
  for _ in range(steps + 2):
    start = time.perf_counter()
    jax.block_until_ready(step(state, batch))
    times.append((time.perf_counter() - start) * 1e3)
  hlo = step.as_text()
  instructions, fused, current = {}, {}, None
  for line in hlo.splitlines():
    header = re.match(r'^(?:ENTRY )?%(\S+) .*\{$', line)
    if header:
      current = header.group(1)
      fused[current] = ''
      continue
    if current:
      fused[current] += line + '\n'
    m = re.match(r'\s*(?:ROOT )?%(\S+) = ', line)
    if m:
      instructions[m.group(1)] = line
  groups, kinds = collections.Counter(), collections.Counter()
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
      for _ in range(steps):
        jax.block_until_ready(step(state, batch))
    trace = glob.glob(os.path.join(logdir, '**', '*perfetto_trace.json.gz'), recursive=True)[0]
    with gzip.open(trace) as f:
      events = json.load(f)
  for event in events['traceEvents'] if isinstance(events, dict) else events:
    instruction = instructions.get(event.get('name')) if event.get('ph') == 'X' else None
    if instruction is None or 'dur' not in event:
      continue
    ms = event['dur'] / 1e3 / steps
    layer = re.search(r'op_name="([^"]*)"', instruction)
    groups[group_of(layer.group(1) if layer else '')] += ms
    kinds[our_kind(instruction, fused)] += ms
  return groups, kinds, float(np.median(times[2:]))


def profile_odapi(variant: str, steps: int, out_dir: str) -> tuple[dict, dict, float]:
  """(ms per layer group, ms per kind, median step ms) of the OD API's training step."""
  worker = vs_odapi.Worker(
      'OD API', vs_odapi.odapi_python() + [
          os.path.join(REPO, 'benchmarks', 'odapi_worker.py'), '--variant', variant, '--case',
          os.path.join(out_dir, variant), '--measures', 'train'],
      os.path.join(out_dir, f'{variant}.odapi.log'), timeout_s=1800)
  try:
    times = [worker.measure('train') for _ in range(steps + 1)][1:]
    ops = worker.ask(f'profile_train {steps}')['ops']
  finally:
    worker.close()
  groups, kinds = collections.Counter(), collections.Counter()
  for name, op_type, ms in ops:
    groups[group_of(name)] += ms
    kinds[tf_kind(name, op_type)] += ms
  return groups, kinds, float(np.median(times))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variant', default='r50v1fpn', choices=sorted(interleaved.ROWS))
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--out_dir', default=os.path.join(REPO, 'runs', 'step_ops'))
  args = parser.parse_args()
  os.makedirs(os.path.join(args.out_dir, args.variant), exist_ok=True)
  cores = len(os.sched_getaffinity(0))
  theirs = profile_odapi(args.variant, args.steps, args.out_dir)
  ours = profile_ours(args.variant, args.steps)
  print(f'Machine: {machine_kind()}; {cores} core(s) usable by both sides; JAX '
        f'{jax.__version__}; {args.variant} training step, batch 2, op times summed over '
        f'threads, averaged over {args.steps} steps. Step (median of {args.steps}, no '
        f'profiler): ours {ours[2]:.0f} ms, OD API {theirs[2]:.0f} ms.\n')
  print('| layer group | ours ms | OD API ms | ours - OD API |\n|---|---|---|---|')
  names = [g for g, _ in GROUPS] + ['other']
  for group in names:
    if group in ours[0] or group in theirs[0]:
      print(f'| {group} | {ours[0][group]:.1f} | {theirs[0][group]:.1f} | '
            f'{ours[0][group] - theirs[0][group]:+.1f} |')
  print(f'| all | {sum(ours[0].values()):.1f} | {sum(theirs[0].values()):.1f} | '
        f'{sum(ours[0].values()) - sum(theirs[0].values()):+.1f} |\n')
  for side, (_, kinds, _) in (('ours', ours), ('OD API', theirs)):
    print(f'| {side}: kind of op | ms per step |\n|---|---|')
    for kind, ms in kinds.most_common():
      print(f'| {kind} | {ms:.1f} |')
    print()
  return 0


if __name__ == '__main__':
  sys.exit(main())
