r"""Exports a trained run for serving: a TF SavedModel with the OD API's signature, a
`jax.export` artifact, or an ONNX model.

  python -m centernet_jax.export --workdir RUN [--step N] --output DIR \
      --format saved_model|jax|onnx [--batch N] [--tta MODE]

Every export directory holds its artifact, `label_map.json` (the run's label map: class names,
COCO category ids, the keypoint task) and `export_meta.json` (`format_version`, format, step,
input size, batch, the run's config); readers check the version and the format.

What runs inside is evaluation's own jitted network + decoder (`predict.make_predict_fn`) with
the checkpoint's parameters and BN statistics (constants of the jax artifact and the ONNX
model, variables of the SavedModel; the optimizer state is never read).

- `jax`: `DIR/detector.jax_exported`, `jax.export.serialize` of
  `(image float32 [b, S, S, 3] raw 0..255 RGB resized + padded as evaluation does, true_size
  int32 [b, 2], original_size int32 [b, 2]) -> {'boxes' [b, K, 4] y-first original pixels,
  'scores' [b, K], 'classes' [b, K] int32 channels, +'keypoints' [b, K, J, 2] (y, x) pixels,
  'keypoint_scores' [b, K, J]}` with a symbolic batch `b` (or `--batch N`); lowered for CPU,
  CUDA and TPU. `jax.export.deserialize(bytes).call(...)` runs it without this repository.
  `inference.Predictor.from_export(DIR)` adds the preprocessing.
- `saved_model`: `DIR/` is a TF SavedModel whose `serving_default` signature is the TF2 OD
  API exporter's: `input_tensor` uint8 [N, H, W, 3] (any H, W; N = `--batch` or dynamic) ->
  `detection_boxes` float32 [N, K, 4] y-first normalized to the image, `detection_scores`
  [N, K], `detection_classes` [N, K] float COCO category ids (the label map's), `num_detections`
  [N] float (detections with a score > 0, as the OD API counts), `detection_multiclass_scores`
  [N, K, C] (every class's score at the detection's peak), and for keypoint models
  `detection_keypoints` [N, K, J, 2] (y, x) normalized to the image and
  `detection_keypoint_scores` [N, K, J]. The resize and pad run inside the graph with the
  pipeline's own function (`pipeline.resize_and_pad`: keep-aspect legacy bilinear without
  half-pixel centers, zero pad bottom/right), so preprocessing equals evaluation's. On a CPU,
  start the serving process with `performance.tf_cpu_serving_environment()` (logged by the
  export): TensorFlow's XLA then keeps the program's temporaries between calls, as ours does.
- `onnx`: `DIR/model.onnx` (opset `ONNX_OPSET`), batch N fixed (`--batch`, default 1):
  inputs `image` float32 [N, S, S, 3], `true_size` and `original_size` int32 [N, 2], exactly
  the jax artifact's (the client resizes and pads as docs/export.md "host-side resize" says);
  outputs the SavedModel's (`od_api_outputs`: `detection_boxes` normalized, ...).

Why this route (the maintained one, jax.export + XlaCallModule): `jax.export` lowers the
network + decoder to StableHLO, and the SavedModel's graph calls it through TF's `XlaCallModule`
op, exactly what `jax2tf.convert(..., native_serialization=True)` builds (jax2tf's graph-lowering
mode is gone from JAX). `jax2tf.convert` itself is not called because it serializes the
StableHLO version of this JAX (1.18 for JAX 0.12), which TF 2.21's XlaCallModule cannot read
(1.13); here the same module is serialized at the older of TF's and JAX's versions. A symbolic
batch does not run in TF 2.21 (its shape refinement does not enter the composite JAX lowers
`top_k` to), so a dynamic N maps the batch-1 module over the images; `--batch N` calls the
batch-N module once. The parameters are variables of the SavedModel, not graph constants
(which keeps large models under the 2 GiB GraphDef limit). orbax-export wraps jax2tf and would
add a dependency without changing what is exported.

Why jax2onnx for ONNX: it converts JAX's own primitives (convolutions, top_k, gathers) to ONNX
operators, so the same network + decoder function becomes one ONNX graph that onnxruntime runs
without JAX or TF; tf2onnx cannot (it needs plain TF ops, and the SavedModel holds an
XlaCallModule). Five things make jax2onnx 0.17 work with JAX 0.12 and these models: the function
is traced to a jaxpr here, with jit inlined (jax2onnx's jit lowering reads
`jax._src.core.ClosedJaxpr`, gone in JAX 0.12); jax2onnx converts that jaxpr's primitives
(`_replay`) rather than tracing the flax model itself; the stem's max pool over NHWC is
computed on a rank-3 view (`_max_pool_as_rank_3`), since onnxruntime pools at most 3 axes; and
`platform_dependent` (MobileNetV2's depthwise convolutions) takes its default branch, the
library convolution (an ONNX grouped Conv; jax2onnx cannot lower `platform_index`); and the
decoder's data-dependent `cond`s (`decoder.top_k_peaks`) run every branch and select
(`_cond_as_select`: jax2onnx's ONNX If is refused by onnxruntime). Multi-scale TTA is refused
(`ONNX_TTA_MODES`). jax2onnx is installed with `--no-deps`
(tools/requirements-onnx.txt, the Makefile): its metadata pins an orbax-checkpoint older than
ours, which it never imports.
"""

import json
import os
from typing import Callable

import jax
import jax.extend.core as jax_core
from jax.extend.mlir.dialects import stablehlo as jax_stablehlo
import jax.numpy as jnp
import jax2onnx
import numpy as np
from absl import app, flags, logging
import tensorflow as tf
# Not TF's public API, but what jax2tf itself calls: the XlaCallModule op, and the StableHLO
# version this TF reads.
from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo
from tensorflow.compiler.tf2xla.python import xla as tfxla

from centernet_jax import file_io
from centernet_jax import inference
from centernet_jax import performance
from centernet_jax import predict
from centernet_jax import run_files
from centernet_jax import train_step
from centernet_jax import tta as tta_lib
from centernet_jax.data import pipeline

FORMATS = ('saved_model', 'jax', 'onnx')
# jax.export / jax2tf platform names: the artifact runs on any of them.
PLATFORMS = ('cpu', 'cuda', 'tpu')
# ONNX opset of `--format onnx`: jax2onnx 0.17's default; onnxruntime 1.32 runs it.
ONNX_OPSET = 23
ONNX_INPUTS = ('image', 'true_size', 'original_size')
# Multi-scale TTA is not offered in ONNX: jax2onnx 0.17 has no lowering for the `reshard` that
# its soft-NMS merge (a vmap) traces to.
ONNX_TTA_MODES = ('none', 'flip')

def check_batch(batch: int | None) -> None:
  if batch is not None and int(batch) < 1:
    raise ValueError(f'--batch={batch}: must be >= 1 (leave it unset for a dynamic batch)')


def detection_fn(run: run_files.InferenceRun, *, multiclass_scores: bool = False
                 ) -> Callable[..., dict[str, jax.Array]]:
  """`(variables, image, true_size, original_size) -> detections`: evaluation's predict_fn
  (`predict.make_predict_fn`) on the run's model, as positional arguments."""
  predict_fn = predict.make_predict_fn(
      run.model, input_size=int(run.config.input.size),
      max_detections=int(run.config.eval.max_detections),
      keypoint_params=predict.keypoint_decode_params(run.keypoint_spec, run.config),
      multiclass_scores=multiclass_scores, tta=predict.tta_params(run.config, run.keypoint_spec),
      top_level=False)

  def detect(variables, image, true_size, original_size):
    return predict_fn(variables, {'image': image, 'true_size': true_size,
                                  'original_size': original_size})

  return detect


def od_api_outputs(det: dict[str, jax.Array], true_size: jax.Array, original_size: jax.Array,
                   category_ids: np.ndarray) -> dict[str, jax.Array]:
  """The OD API exporter's outputs from `predict_fn` detections (see the module docstring).

  Boxes and joints in original pixels / the original (h, w) = normalized to the image; the
  OD API normalizes by the resized unpadded size, the same fraction. `detection_boxes_strided`
  are the boxes in the output map's cells (input pixels / 4, y-first), as the OD API's
  postprocess gives them; ours come from the clipped boxes (the OD API's are not clipped).
  """
  hw = original_size.astype(jnp.float32)  # [N, 2]
  to_cells = true_size.astype(jnp.float32) / hw / train_step.OUTPUT_STRIDE  # [N, 2]
  out = {
      'detection_boxes': det['boxes'] / jnp.concatenate([hw, hw], axis=-1)[:, None, :],
      'detection_boxes_strided': det['boxes'] * jnp.concatenate(
          [to_cells, to_cells], axis=-1)[:, None, :],
      'detection_scores': det['scores'],
      'detection_classes': jnp.asarray(category_ids, jnp.float32)[det['classes']],
      'num_detections': jnp.sum(det['scores'] > 0, axis=1).astype(jnp.float32),
      'detection_multiclass_scores': det['multiclass_scores'],
  }
  if 'keypoints' in det:
    out['detection_keypoints'] = det['keypoints'] / hw[:, None, None, :]
    out['detection_keypoint_scores'] = det['keypoint_scores']
  return out


def od_api_detection_fn(run: run_files.InferenceRun
                        ) -> Callable[..., dict[str, jax.Array]]:
  """`(variables, image, true_size, original_size) -> od_api_outputs`: `detection_fn` with
  every class's score, mapped to the OD API exporter's outputs (the SavedModel's and the ONNX
  model's)."""
  category_ids = np.asarray(run.label_map['category_ids'], np.float32)
  detect = detection_fn(run, multiclass_scores=True)

  def od_api(variables, image, true_size, original_size):
    det = detect(variables, image, true_size, original_size)
    return od_api_outputs(det, true_size, original_size, category_ids)

  return od_api


def write_meta(output: str, fmt: str, run: run_files.InferenceRun, batch: int | None,
               workdir: str) -> None:
  """`label_map.json` and `export_meta.json` beside the artifact."""
  meta = {
      'format_version': inference.EXPORT_FORMAT_VERSION, 'format': fmt,
      'workdir': str(workdir), 'step': int(run.step),
      'input_size': int(run.config.input.size),
      'max_detections': int(run.config.eval.max_detections),
      'num_classes': len(run.label_map['names']), 'batch': batch,
      'keypoints': run.keypoint_spec is not None,
      'config': json.loads(run.config.to_json_best_effort()),
  }
  with file_io.open_file(os.path.join(output, inference.EXPORT_META), 'w') as f:
    f.write(json.dumps(meta, indent=1))
  with file_io.open_file(os.path.join(output, inference.LABEL_MAP), 'w') as f:
    f.write(json.dumps(run.label_map, indent=1))


def export_jax(run: run_files.InferenceRun, output: str, batch: int | None) -> str:
  """Writes `output/detector.jax_exported` (see the module docstring); returns its path."""
  detect = detection_fn(run)
  variables = run.variables
  size = int(run.config.input.size)
  b = jax.export.symbolic_shape('b')[0] if batch is None else int(batch)
  args = (jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32),
          jax.ShapeDtypeStruct((b, 2), jnp.int32), jax.ShapeDtypeStruct((b, 2), jnp.int32))
  exported = jax.export.export(
      jax.jit(lambda image, true_size, original_size: detect(
          variables, image, true_size, original_size)), platforms=PLATFORMS)(*args)
  path = os.path.join(output, inference.JAX_ARTIFACT)
  with file_io.open_file(path, 'wb') as f:
    f.write(exported.serialize())
  return path


def _max_pool_as_rank_3(x: jax.Array, params) -> jax.Array | None:
  """A `reduce_window_max` eqn's result computed as the same max over a rank-3 view
  `[others, *pooled axes]` of `x` (None if `x` has rank <= 3 or pools more than 2 axes).

  jax2onnx lowers `reduce_window_max` to an ONNX MaxPool over all of the operand's axes, which
  onnxruntime runs for at most 3 of them: the network's stem pool over NHWC [B, H, W, C] is 4.
  A max is exact in any order, so the rewrite changes no value.
  """
  window, strides = params['window_dimensions'], params['window_strides']
  padding = [tuple(p) for p in params['padding']]
  base_dilation, window_dilation = params['base_dilation'], params['window_dilation']
  pooled = [i for i in range(x.ndim) if (window[i], strides[i], padding[i], base_dilation[i],
                                         window_dilation[i]) != (1, 1, (0, 0), 1, 1)]
  if x.ndim <= 3 or len(pooled) > 2 or any(base_dilation[i] != 1 for i in pooled):
    return None
  kept = [i for i in range(x.ndim) if i not in pooled]
  y = jax.lax.transpose(x, kept + pooled)
  y = jax.lax.reshape(y, (int(np.prod([x.shape[i] for i in kept])),) +
                      tuple(x.shape[i] for i in pooled))
  y = jax.lax.reduce_window(
      y, np.array(-np.inf, x.dtype), jax.lax.max, (1,) + tuple(window[i] for i in pooled),
      (1,) + tuple(strides[i] for i in pooled), [(0, 0)] + [padding[i] for i in pooled],
      window_dilation=(1,) + tuple(window_dilation[i] for i in pooled))
  y = jax.lax.reshape(y, tuple(x.shape[i] for i in kept) + y.shape[1:])
  return jax.lax.transpose(y, tuple(int(i) for i in np.argsort(kept + pooled)))


def _cond_as_select(index: jax.Array, branches, operands) -> list[jax.Array]:
  """A `cond` on a traced index as every branch evaluated, then the chosen one's outputs
  selected: jax2onnx 0.17 turns a `cond` into an ONNX If whose branches use outer values in an
  order onnxruntime refuses ("Nodes in a graph must be topologically sorted"). The decoder's
  only such `cond`s pick between computations of the same detections (`decoder.top_k_peaks`:
  its first stage, its second, the whole map), so the ONNX graph runs them all and gives the
  same outputs."""
  outs = [_replay(branch, *operands) for branch in branches]
  chosen = outs[0]
  for i, branch_outs in enumerate(outs[1:], start=1):
    chosen = [jnp.where(index == i, b, a) for a, b in zip(chosen, branch_outs)]
  return chosen


def _replay(closed: jax_core.ClosedJaxpr, *args) -> list[jax.Array]:
  """Evaluates a traced jaxpr's primitives one by one on `args`, with three substitutions
  for ONNX: `_max_pool_as_rank_3`; `jax.lax.platform_dependent` (`platform_index` + `cond`)
  resolved to its default branch, inlined (`models/layers.depthwise_conv`: the library
  convolution, an ONNX grouped Conv; the shift-add branch exists for XLA:CPU's speed); and a
  `cond` on a traced index as `_cond_as_select`."""
  env = {}
  read = lambda v: v.val if isinstance(v, jax_core.Literal) else env[v]
  env.update(zip(closed.jaxpr.constvars, closed.consts))
  env.update(zip(closed.jaxpr.invars, args))
  for eqn in closed.jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name, out = eqn.primitive.name, None
    if name == 'reduce_window_max':
      out = _max_pool_as_rank_3(invals[0], eqn.params)
    elif name == 'platform_index':
      if None not in eqn.params['platforms']:
        raise ValueError(f'platform_dependent without a default branch '
                         f'({eqn.params["platforms"]}): no branch to export to ONNX')
      out = np.int32(eqn.params['platforms'].index(None))
    elif name == 'cond' and isinstance(invals[0], np.generic):
      out = _replay(eqn.params['branches'][int(invals[0])], *invals[1:])
    elif name == 'cond':
      out = _cond_as_select(invals[0], eqn.params['branches'], invals[1:])
    if out is None:
      out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    env.update(zip(eqn.outvars, out if eqn.primitive.multiple_results else [out]))
  return [read(v) for v in closed.jaxpr.outvars]


def export_onnx(run: run_files.InferenceRun, output: str, batch: int) -> str:
  """Writes `output/model.onnx` (docs/export.md, "ONNX"); returns its path.

  Inputs `image` float32 [N, S, S, 3] (resized and padded on the host as evaluation does),
  `true_size` and `original_size` int32 [N, 2] (h, w) pixels, N = `batch` (fixed); outputs
  `od_api_outputs`' names and shapes.
  """
  detect = od_api_detection_fn(run)
  variables = run.variables
  size, n = int(run.config.input.size), int(batch)
  specs = (jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32),
           jax.ShapeDtypeStruct((n, 2), jnp.int32), jax.ShapeDtypeStruct((n, 2), jnp.int32))
  # jit inlined: jax2onnx 0.17 lowers a jit call through `jax._src.core.ClosedJaxpr`, which
  # JAX 0.12 no longer has.
  with jax.disable_jit():
    closed, shapes = jax.make_jaxpr(
        lambda *inputs: detect(variables, *inputs), return_shape=True)(*specs)
  names = [path[0].key for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]]
  # jax2onnx converts the replayed primitives, not the flax model: tracing through flax, it
  # swaps `linen` layers and functions for its own, which for this network gave a graph
  # onnxruntime refuses (NCHW / NHWC shape mismatches).
  model = jax2onnx.to_onnx(lambda *inputs: _replay(closed, *inputs), specs,
                           model_name='centernet',
                           opset=ONNX_OPSET, input_names=ONNX_INPUTS, output_names=names)
  path = os.path.join(output, inference.ONNX_ARTIFACT)
  with file_io.open_file(path, 'wb') as f:
    f.write(model.SerializeToString())
  return path


def _serialize_for_tf(exported: jax.export.Exported) -> bytes:
  """The exported StableHLO module as a portable artifact of a version TF's XlaCallModule
  reads: the older of TF's and JAX's StableHLO versions (JAX writes a newer one by default)."""
  target = tf_stablehlo.get_smaller_version(tf_stablehlo.get_current_version(),
                                            jax_stablehlo.get_current_version())
  return jax_stablehlo.serialize_portable_artifact_str(exported.mlir_module(), target)


def _call_in_tf(exported: jax.export.Exported, module: bytes, args_flat: list[tf.Tensor]):
  """Runs an exported function inside a TF graph (the XlaCallModule op jax2tf emits); returns
  its output pytree of tensors."""
  kept = [args_flat[i] for i in sorted(exported.module_kept_var_idx)]
  results = tfxla.call_module(
      kept, version=exported.calling_convention_version, module=module,
      Tout=[a.dtype for a in exported.out_avals],
      Sout=[tuple(d if isinstance(d, int) else None for d in a.shape)
            for a in exported.out_avals],
      platforms=[p.upper() for p in exported.platforms],
      disabled_checks=[str(c) for c in exported.disabled_safety_checks])
  return jax.tree.unflatten(exported.out_tree, results)


class _Serving(tf.Module):
  """The SavedModel's root: the parameters as variables and the serving function."""

  def __init__(self, run: run_files.InferenceRun, batch: int | None):
    super().__init__()
    leaves, treedef = jax.tree.flatten(run.variables)
    self.weights = [tf.Variable(np.asarray(x), trainable=False) for x in leaves]
    size = int(run.config.input.size)
    detect = od_api_detection_fn(run)

    def od_api(weights, image, true_size, original_size):
      return detect(jax.tree.unflatten(treedef, weights), image, true_size, original_size)

    # A fixed batch: TF's shape refinement cannot see through the composite JAX lowers
    # top_k to, so a symbolic batch does not run in TF; a dynamic N maps the batch-1 module.
    n = 1 if batch is None else int(batch)
    exported = jax.export.export(jax.jit(od_api), platforms=PLATFORMS)(
        [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
        jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32),
        jax.ShapeDtypeStruct((n, 2), jnp.int32), jax.ShapeDtypeStruct((n, 2), jnp.int32))
    module = _serialize_for_tf(exported)
    out_specs = {name: tf.TensorSpec(a.shape[1:], a.dtype) for name, a in
                 jax.tree.unflatten(exported.out_tree, exported.out_avals).items()}

    def preprocess(image):  # float32 [H, W, 3] -> evaluation's model input
      padded, _, true_size = pipeline.resize_and_pad(image, tf.zeros([0, 4], tf.float32), size)
      return padded, true_size

    def run_module(padded, true_size, original_size):
      return _call_in_tf(exported, module,
                         list(self.weights) + [padded, true_size, original_size])

    @tf.function(input_signature=[tf.TensorSpec([batch, None, None, 3], tf.uint8,
                                                name='input_tensor')], autograph=False)
    def serve(input_tensor):
      images = tf.cast(input_tensor, tf.float32)
      padded, true_size = tf.map_fn(preprocess, images, fn_output_signature=(
          tf.TensorSpec([size, size, 3], tf.float32), tf.TensorSpec([2], tf.int32)))
      shape = tf.shape(input_tensor)
      original_size = tf.tile(shape[tf.newaxis, 1:3], [shape[0], 1])
      if batch is not None:
        return run_module(padded, true_size, original_size)
      one = lambda x: {k: v[0] for k, v in run_module(
          x[0][tf.newaxis], x[1][tf.newaxis], x[2][tf.newaxis]).items()}
      return tf.map_fn(one, (padded, true_size, original_size), fn_output_signature=out_specs)

    self.serve = serve


def export_saved_model(run: run_files.InferenceRun, output: str, batch: int | None) -> str:
  """Writes the SavedModel into `output` (see the module docstring); returns `output`."""
  pipeline.hide_gpus_from_tf()
  module = _Serving(run, batch)
  tf.saved_model.save(module, output, signatures={'serving_default': module.serve})
  env = performance.tf_cpu_serving_environment()
  logging.info('Serving %s on a CPU: start the TensorFlow process with %s (docs/serving.md, '
               '"Serving our SavedModel on a CPU").', output,
               ' '.join(f'{k}={v}' for k, v in env.items()))
  return output


def signature_summary(saved_model_dir: str) -> dict[str, tuple[str, int]]:
  """{name: (dtype name, rank)} of the inputs and outputs of a SavedModel's `serving_default`
  signature (ours or the OD API exporter's, to compare them)."""
  signature = tf.saved_model.load(saved_model_dir).signatures['serving_default']
  _, inputs = signature.structured_input_signature
  summary = {name: (spec.dtype.name, spec.shape.rank) for name, spec in inputs.items()}
  summary.update({name: (spec.dtype.name, spec.shape.rank)
                  for name, spec in signature.structured_outputs.items()})
  return summary


def export(workdir: str, output: str, fmt: str, *, step: int | None = None,
           batch: int | None = None, tta: str | None = None) -> str:
  """Exports the checkpoint of `workdir` (latest, or `step`) as `fmt` into `output`; `tta`
  overrides the run's `eval.tta` (the test-time augmentation runs inside the artifact)."""
  if fmt not in FORMATS:
    raise ValueError(f'--format={fmt!r}: one of {", ".join(FORMATS)}')
  check_batch(batch)
  run = inference.with_tta(run_files.restore_for_inference(workdir, step), tta)
  if fmt == 'onnx' and run.config.eval.tta not in ONNX_TTA_MODES:
    raise ValueError(f'--tta={run.config.eval.tta!r} (--tta, or the run\'s eval.tta): '
                     f'--format onnx exports {" or ".join(ONNX_TTA_MODES)} only')
  file_io.makedirs(output)
  if fmt == 'onnx' and batch is None:
    batch = 1  # the ONNX model's batch is fixed: 1 unless --batch says otherwise
  exporter = {'jax': export_jax, 'saved_model': export_saved_model, 'onnx': export_onnx}[fmt]
  path = exporter(run, output, batch)
  write_meta(output, fmt, run, batch, workdir)
  return path


def _define_flags() -> dict[str, flags.FlagHolder]:
  """The command's flags, defined when it runs: importing this module next to `detect` or
  `main` (tests, notebooks) must not define their `--workdir` / `--step` a second time."""
  return {
      'workdir': flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.'),
      'step': flags.DEFINE_integer('step', None, 'Checkpoint step (latest if unset).'),
      'output': flags.DEFINE_string('output', None, 'Export directory (created).'),
      'format': flags.DEFINE_enum('format', None, FORMATS, 'What to export.'),
      'batch': flags.DEFINE_integer('batch', None,
                                    'Fixed batch size N >= 1; unset: dynamic batch '
                                    '(onnx: 1).'),
      'tta': flags.DEFINE_enum('tta', None, list(tta_lib.MODES),
                               "Test-time augmentation inside the artifact (default: the "
                               "run's eval.tta); docs/tta.md."),
  }


def run():
  f = _define_flags()
  flags.mark_flags_as_required(['workdir', 'output', 'format'])

  def main(argv):
    del argv
    print(export(f['workdir'].value, f['output'].value, f['format'].value,
                 step=f['step'].value, batch=f['batch'].value, tta=f['tta'].value))

  app.run(main)


if __name__ == '__main__':
  run()
