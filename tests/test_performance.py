"""FLOPs from XLA's cost analysis, the images/s / TFLOP/s / MFU meter, the profile window and the
init compile options."""

import glob
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec as P

from centernet_jax import host_memory
from centernet_jax import performance
from centernet_jax import predict
from centernet_jax import train
from tests import tiny


def test_compiled_flops_is_per_device():
  """A [4n, k] x [k, m] matmul: 2*4n*k*m FLOPs on one device, a quarter on each of 4."""
  x = jnp.ones((64, 32), jnp.float32)
  w = jnp.ones((32, 16), jnp.float32)
  one = jax.jit(jnp.dot).lower(x, w).compile()
  assert performance.compiled_flops(one) == pytest.approx(2 * 64 * 32 * 16, rel=0.05)
  mesh = jax.make_mesh((4,), ('data',))
  xs = jax.device_put(x, NamedSharding(mesh, P('data')))
  four = jax.jit(jnp.dot).lower(xs, w).compile()
  assert performance.compiled_flops(four) == pytest.approx(2 * 16 * 32 * 16, rel=0.05)


def test_peak_table_and_override():
  class Dev:
    device_kind = 'TPU v5 lite'
  assert performance.peak_tflops(Dev(), 'bfloat16') == 197.0
  assert performance.peak_tflops(Dev(), 'bfloat16', override=3.5) == 3.5
  Dev.device_kind = 'cpu'
  assert performance.peak_tflops(Dev(), 'float32') == 0.0


def test_throughput_meter():
  meter = performance.Throughput(global_batch=8, flops_per_step_per_device=2e12,
                                 peak_tflops_per_device=4.0)
  assert meter.measure() == {}  # no step yet
  meter.add_steps(3)
  out = meter.measure()
  assert out['images_per_sec'] == pytest.approx(3 * 8 * out['steps_per_sec'] / 3)
  assert out['tflops_per_device'] == pytest.approx(2.0 * out['steps_per_sec'])
  assert out['mfu'] == pytest.approx(out['tflops_per_device'] / 4.0)
  no_peak = performance.Throughput(global_batch=8, flops_per_step_per_device=1e9,
                                   peak_tflops_per_device=0.0)
  no_peak.add_steps()
  assert 'mfu' not in no_peak.measure()


@pytest.mark.parametrize('steps', [(3,), (0, 2), (4, 4), (5, 2)])
def test_profile_steps_must_be_a_window(steps, tmp_path):
  with pytest.raises(ValueError, match='profile_steps'):
    performance.ProfileWindow(steps, tmp_path)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('synthetic')


def _scalars(workdir):
  tags = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.HasField('simple_value'):
          value = v.simple_value
        elif v.HasField('tensor') and v.tensor.dtype == tf.float32.as_datatype_enum:
          array = tf.make_ndarray(v.tensor)
          if array.size != 1:
            continue
          value = float(array.reshape(()))
        else:
          continue
        tags.setdefault(v.tag, []).append((event.step, value))
  return tags


@pytest.mark.slow  # a profiled training
def test_training_logs_speed_and_mfu_and_writes_the_profile(data_dir, tmp_path):
  config = tiny.tiny_config(data_dir)
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.eval.on_train_end = False
  config.profile_steps = (2, 4)
  config.peak_tflops_per_device = 0.5
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  tags = _scalars(workdir)
  for tag in ('train/images_per_sec', 'train/tflops_per_device', 'train/mfu'):
    assert [s for s, _ in tags[tag]] == [2, 4], tag
    assert all(np.isfinite(v) and v > 0 for _, v in tags[tag]), tags[tag]
  for (_, tflops), (_, mfu) in zip(tags['train/tflops_per_device'], tags['train/mfu']):
    assert mfu == pytest.approx(tflops / 0.5, rel=1e-5)
  traces = glob.glob(os.path.join(workdir, 'plugins', 'profile', '*', '*.xplane.pb'))
  assert traces, os.listdir(workdir)


def test_run_init_gives_the_default_compile_values():
  """The lower CPU optimisation level of init programs must not change the initial weights
  (a resumed or re-run experiment starts from exactly the same point)."""
  module = nn.Sequential([nn.Conv(8, (3, 3)), nn.BatchNorm(use_running_average=True),
                          nn.Dense(5)])
  init = lambda r: module.init(r, jnp.zeros((1, 8, 8, 3)))
  rng = jax.random.key(3)
  chex.assert_trees_all_equal(performance.run_init(init, rng), jax.jit(init)(rng))
  assert performance.init_compiler_options('cpu') == performance.CPU_INIT_COMPILER_OPTIONS
  assert performance.init_compiler_options('gpu') is None


def test_cpu_compiler_options_give_onednn_the_products_and_convolutions():
  """On CPU both option sets hand XLA's library calls to oneDNN: a weight-gradient product
  (contracting the pixels' axis, which YNNPACK does not take) in the training step, and a
  convolution with its bias in inference. If a jaxlib stopped honouring the flags, the
  programs would silently lose the speed docs/benchmarks.md measured."""
  if jax.default_backend() != 'cpu':
    pytest.skip('XLA:CPU options')
  # XLA's rewriter leaves small products to its own dot: 1024 x 64 x 64 stays, 4096 goes.
  x = jnp.ones((4096, 64))
  g = jnp.ones((4096, 64))
  product = jax.jit(lambda a, b: a.T @ b).lower(x, g)
  assert '__onednn$matmul' in product.compile(
      compiler_options=performance.train_compiler_options()).as_text()
  assert '__onednn$matmul' not in product.compile().as_text()
  image = jnp.ones((1, 16, 16, 8))
  kernel = jnp.ones((3, 3, 8, 16))
  conv = jax.jit(lambda a, k: jax.lax.conv_general_dilated(
      a, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + 1.0).lower(
          image, kernel)
  assert '__onednn$convolution' in conv.compile(
      compiler_options=performance.compiler_options()).as_text()
  assert '__onednn$convolution' not in conv.compile().as_text()


def _temp_allocations(fn, args, options, dump_dir) -> list[int]:
  """Sizes in bytes of the temporaries' allocations of `fn` compiled with `options`, from XLA's
  buffer-assignment dump."""
  jax.jit(fn).lower(*args).compile(compiler_options={**options, 'xla_dump_to': str(dump_dir)})
  (path,) = glob.glob(os.path.join(str(dump_dir), '*after_optimizations-buffer-assignment.txt'))
  with open(path) as f:
    return [int(line.split('size ')[1].split(',')[0]) for line in f
            if line.startswith('allocation') and 'preallocated-temp' in line]


def test_cpu_predict_options_split_the_temporaries_into_heap_sized_blocks(tmp_path):
  """The predict function's temporaries come in blocks of at most INFERENCE_HEAP_BYTES, each
  of which glibc can keep in one per-thread heap between calls (host_memory.py); XLA's default
  is one block (here 120 MiB), which glibc maps afresh at every call."""
  if jax.default_backend() != 'cpu':
    pytest.skip('XLA:CPU options')
  def three_wide_products(x, w):  # three live 40 MiB products
    a, b, c = (jnp.tanh(x @ w[i]) for i in range(3))
    return (a @ w[0].T + b @ w[1].T + c @ w[2].T).sum() + (a * b * c).sum()
  args = (jnp.ones((2048, 8)), jnp.ones((3, 8, 5120)))
  split = _temp_allocations(three_wide_products, args, performance.compiler_options('cpu'),
                            tmp_path / 'split')
  whole = _temp_allocations(three_wide_products, args, {}, tmp_path / 'whole')
  assert len(whole) == 1 and whole[0] > host_memory.GLIBC_THREAD_HEAP_BYTES, whole
  assert len(split) > 1 and max(split) <= performance.INFERENCE_HEAP_BYTES, split
  assert sum(split) >= whole[0]


def test_cpu_compiler_options_reach_the_train_step_and_predict_function():
  """The predict function is compiled with `performance.compiler_options()` on CPU (YNNPACK's
  dot fusions off, oneDNN on), the training step with `train_compiler_options()` (XLA's
  defaults and oneDNN); a predict function traced inside another program (the exports)
  carries none, since JAX refuses compiler options on a nested jit."""
  assert performance.compiler_options('cpu') == performance.CPU_COMPILER_OPTIONS
  assert performance.compiler_options('gpu') is None
  assert performance.train_compiler_options('cpu') == performance.CPU_TRAIN_COMPILER_OPTIONS
  assert performance.train_compiler_options('gpu') is None
  batch = {'image': jnp.zeros((1, 4, 4, 3)), 'true_size': jnp.full((1, 2), 4),
           'original_size': jnp.full((1, 2), 4)}
  heads = lambda v, x, train: [{'object_center': jnp.zeros((x.shape[0], 1, 1, 2)),
                                'box/scale': jnp.ones((x.shape[0], 1, 1, 2)),
                                'box/offset': jnp.zeros((x.shape[0], 1, 1, 2))}]
  model = type('HeadsOnly', (), {'apply': staticmethod(heads)})()
  top = predict.make_predict_fn(model, input_size=4, max_detections=2)
  nested = predict.make_predict_fn(model, input_size=4, max_detections=2, top_level=False)
  assert top({}, batch)['boxes'].shape == (1, 2, 4)
  assert jax.jit(lambda b: nested({}, b)['scores'])(batch).shape == (1, 2)
  with pytest.raises(ValueError, match='compiler_options'):
    jax.jit(lambda b: top({}, b)['scores'])(batch)
