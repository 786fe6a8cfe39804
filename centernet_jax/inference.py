"""One inference path: a restored (or exported) CenterNet run lazily over images.

  predictor = Predictor.from_workdir('runs/demo')        # or Predictor.from_export('out/jax')
  for result in predictor(['a.jpg', 'b.png', rgb_array]):
    result.detections['boxes']   # float32 [K, 4] y-first, pixels of result.image

Only what inference needs is restored: parameters, BN statistics, the config and the label
map (never the optimizer state). Images go through evaluation's own preprocessing:
`record_table.decode_image_file` (any PNG/JPEG/GIF/BMP; grayscale, RGBA and 16-bit PNG become RGB
uint8 exactly as in evaluation) and `pipeline.resize_and_pad` (keep-aspect legacy bilinear
resize, zero pad bottom/right to S x S, float32 raw 0..255), then the network + decoder that
evaluation jits (`predict.make_predict_fn`).

Memory stays bounded whatever the number of inputs: inputs are read one at a time as the
iterable is consumed, `batch_size` at a time, and each batch is run before the next is read.
Every batch has the same static shape: the last one is completed with evaluation's padding
example (zero image, true and original size S x S) whose detections are dropped.

Bad inputs raise `ImageError` naming the input: unreadable or non-image files, images with
more pixels than `max_image_pixels` (from the header, before decoding), arrays that are not
[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] uint8.
"""

import os
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import jax
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf

from centernet_jax import file_io
from centernet_jax import host_memory
from centernet_jax import keypoint_spec as kp_spec_lib
from centernet_jax import performance
from centernet_jax import predict
from centernet_jax import run_files
from centernet_jax.data import pipeline
from centernet_jax.data.sources import record_table

# An export directory holds its artifact, `label_map.json` and `export_meta.json`; a reader
# refuses a directory whose meta has another format version or format.
EXPORT_FORMAT_VERSION = 1
EXPORT_META = 'export_meta.json'
LABEL_MAP = 'label_map.json'
JAX_ARTIFACT = 'detector.jax_exported'
ONNX_ARTIFACT = 'model.onnx'


class ImageError(ValueError):
  """An input image that cannot be used; the message names it."""


class ExportError(ValueError):
  """An export directory that cannot be loaded (missing, other format or version)."""


class Result(NamedTuple):
  """One input's detections: `image` uint8 [H, W, 3] as decoded; `detections` one example of
  `predict.make_predict_fn`'s output (boxes [K, 4] y-first pixels of `image`, scores [K],
  classes [K] channels, keypoints [K, J, 2] (y, x) pixels and keypoint_scores [K, J])."""
  source: str
  image: np.ndarray
  detections: dict[str, np.ndarray]


def with_tta(run: run_files.InferenceRun, tta: str | None) -> run_files.InferenceRun:
  """`run` with `config.eval.tta` set to `tta` (None: the run's own setting, checked)."""
  if tta is not None:
    config = run.config.copy_and_resolve_references()
    with config.unlocked():
      config.eval.tta = tta
    run = run._replace(config=config)
  predict.tta_params(run.config, run.keypoint_spec)  # a bad mode fails here, named
  return run


def read_export_meta(path, fmt: str) -> dict[str, Any]:
  """The `export_meta.json` of an export directory, checked to be of `fmt` and this version."""
  meta_path = os.path.join(str(path), EXPORT_META)
  if not file_io.exists(meta_path):
    raise ExportError(f'{path}: not an export directory of centernet_jax ({EXPORT_META} is '
                      'missing; write one with python -m centernet_jax.export)')
  try:
    meta = file_io.read_json(meta_path)
  except Exception as e:  # pylint: disable=broad-except  # ValueError, OSError alike
    raise ExportError(f'{meta_path}: unreadable ({e})') from e
  version = meta.get('format_version') if isinstance(meta, dict) else None
  if version != EXPORT_FORMAT_VERSION:
    raise ExportError(f'{meta_path}: format_version {version!r}, this version reads '
                      f'{EXPORT_FORMAT_VERSION}; export the run again')
  if meta.get('format') != fmt:
    raise ExportError(f'{meta_path}: a {meta.get("format")!r} export, not a {fmt!r} one')
  return meta


def read_image(path, max_pixels: int) -> np.ndarray:
  """uint8 [H, W, 3] RGB of an image file, decoded as evaluation decodes it.

  The size is read from the header first: an image of more than `max_pixels` pixels (0: no
  limit) is refused before anything is decoded.
  """
  path = str(path)
  Image.MAX_IMAGE_PIXELS = None  # our own limit applies, from the same header
  try:
    with file_io.open_file(path, 'rb') as f, Image.open(f) as im:
      width, height = im.size
  except FileNotFoundError as e:
    raise ImageError(f'{path}: no such file') from e
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many kinds
    raise ImageError(f'{path}: not an image file ({type(e).__name__}: {e})') from e
  if max_pixels and height * width > max_pixels:
    raise ImageError(f'{path}: {height}x{width} = {height * width} pixels, more than '
                     f'max_image_pixels={max_pixels} (refused from its header; raise the '
                     'limit to accept it)')
  try:
    image = record_table.decode_image_file(path).numpy()
  except tf.errors.OpError as e:
    raise ImageError(f'{path}: TensorFlow cannot decode it '
                     f'({e.message.strip().splitlines()[0]})') from e
  if image.shape[:2] != (height, width):
    raise ImageError(f'{path}: the header says {height}x{width} but {image.shape[0]}x'
                     f'{image.shape[1]} was decoded')
  return image


def as_rgb(array: np.ndarray, name: str) -> np.ndarray:
  """uint8 [H, W, 3] from a uint8 [H, W], [H, W, 1] (repeated) or [H, W, 4] (alpha dropped)
  array, as `tf.io.decode_image(channels=3)` converts decoded files."""
  a = np.asarray(array)
  if a.dtype != np.uint8:
    raise ImageError(f'{name}: dtype {a.dtype}, expected uint8 RGB values 0..255')
  if a.ndim == 2:
    a = a[:, :, None]
  if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
    raise ImageError(f'{name}: shape {a.shape}, expected [H, W], [H, W, 1], [H, W, 3] or '
                     '[H, W, 4]')
  if a.shape[2] == 1:
    return np.repeat(a, 3, axis=2)
  return a[:, :, :3]


class Predictor:
  """Runs a restored or exported CenterNet over an iterable of images or paths, lazily.

  `predict_fn(variables, batch) -> detections` is evaluation's jitted network + decoder (or an
  exported copy of it); batches are `batch_size` examples of `predict.PREDICT_KEYS`.
  """

  def __init__(self, *, config: ml_collections.ConfigDict, label_map: dict[str, Any],
               keypoint_spec, predict_fn: Callable[..., Any], variables: Any, step: int,
               source: str, batch_size: int = 4, max_image_pixels: int | None = None):
    if int(batch_size) < 1:
      raise ValueError(f'batch_size={batch_size}: must be >= 1')
    self.config = config
    self.label_map = label_map
    self.class_names = list(label_map['names'])
    self.category_ids = [int(i) for i in label_map['category_ids']]
    self.keypoint_spec = keypoint_spec
    self.predict_fn = predict_fn
    self.variables = variables
    self.step = int(step)
    self.source = source
    self.batch_size = int(batch_size)
    self.input_size = int(config.input.size)
    self.max_image_pixels = int(config.dataset.max_image_pixels if max_image_pixels is None
                                else max_image_pixels)
    pipeline.hide_gpus_from_tf()
    # As `main --mode eval` runs: the predict function's temporaries kept between calls.
    host_memory.set_up(config, training=False)
    size = self.input_size
    # One traced graph for every image size, the ops evaluation's tf.data map runs.
    self._resize = tf.function(
        lambda image: pipeline.resize_and_pad(image, tf.zeros([0, 4], tf.float32), size),
        input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])

  @classmethod
  def from_workdir(cls, workdir, step: int | None = None, tta: str | None = None,
                   **kwargs) -> 'Predictor':
    """From a training workdir's checkpoint (the latest, or `step`); `tta` overrides the run's
    `eval.tta` ('none', 'flip', 'multiscale', 'flip_multiscale'; docs/tta.md)."""
    run = with_tta(run_files.restore_for_inference(workdir, step), tta)
    predict_fn = predict.make_predict_fn(
        run.model, input_size=int(run.config.input.size),
        max_detections=int(run.config.eval.max_detections),
        keypoint_params=predict.keypoint_decode_params(run.keypoint_spec, run.config),
        tta=predict.tta_params(run.config, run.keypoint_spec))
    return cls(config=run.config, label_map=run.label_map, keypoint_spec=run.keypoint_spec,
               predict_fn=predict_fn, variables=run.variables, step=run.step,
               source=str(workdir), **kwargs)

  @classmethod
  def from_export(cls, path, **kwargs) -> 'Predictor':
    """From a `--format jax` export directory (export.py): no model code is run."""
    meta = read_export_meta(path, 'jax')
    label_map = file_io.read_json(os.path.join(str(path), LABEL_MAP))
    if len(label_map['names']) != int(meta['num_classes']):
      raise ExportError(f'{path}: {LABEL_MAP} has {len(label_map["names"])} classes, the '
                        f'exported model {meta["num_classes"]}')
    with file_io.open_file(os.path.join(str(path), JAX_ARTIFACT), 'rb') as f:
      exported = jax.export.deserialize(bytearray(f.read()))
    kp = label_map.get('keypoints')
    spec = kp_spec_lib.KeypointSpec.from_json_dict(kp) if kp else None
    # The options `predict.make_predict_fn` compiles with; the artifact carries none.
    call = jax.jit(lambda variables, batch: exported.call(
        batch['image'], batch['true_size'], batch['original_size']),
                   compiler_options=performance.compiler_options())
    return cls(config=run_files.config_from_json(meta['config'], str(path)), label_map=label_map,
               keypoint_spec=spec, predict_fn=call, variables={}, step=int(meta['step']),
               source=str(path), **kwargs)

  def prepare(self, image: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 [H, W, 3] -> one example of `predict.PREDICT_KEYS` (evaluation's resize + pad)."""
    padded, _, true_size = self._resize(tf.convert_to_tensor(image, tf.float32))
    return {'image': padded.numpy(), 'true_size': true_size.numpy().astype(np.int32),
            'original_size': np.asarray(image.shape[:2], np.int32)}

  def _padding_example(self) -> dict[str, np.ndarray]:
    s = self.input_size
    return {'image': np.zeros([s, s, 3], np.float32),
            'true_size': np.asarray([s, s], np.int32),
            'original_size': np.asarray([s, s], np.int32)}

  def load(self, item, index: int) -> tuple[str, np.ndarray]:
    """(name, uint8 [H, W, 3]) of a path or an array input."""
    if isinstance(item, (str, os.PathLike)):
      return str(item), read_image(item, self.max_image_pixels)
    name = f'input #{index}'
    return name, as_rgb(item, name)

  def run_batch(self, examples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Detections of up to `batch_size` prepared examples (padded to the static batch)."""
    n = len(examples)
    examples = examples + [self._padding_example()] * (self.batch_size - n)
    batch = {k: np.stack([e[k] for e in examples]) for k in predict.PREDICT_KEYS}
    out = jax.device_get(self.predict_fn(self.variables, batch))
    return [{k: np.asarray(v[i]) for k, v in out.items()} for i in range(n)]

  def __call__(self, items: Iterable[Any]) -> Iterator[Result]:
    """Yields a `Result` per input (paths or uint8 arrays), in order, reading lazily."""
    pending: list[tuple[str, np.ndarray, dict[str, np.ndarray]]] = []
    for index, item in enumerate(items):
      name, image = self.load(item, index)
      pending.append((name, image, self.prepare(image)))
      if len(pending) == self.batch_size:
        yield from self._flush(pending)
        pending = []
    if pending:
      yield from self._flush(pending)

  def _flush(self, pending) -> Iterator[Result]:
    for (name, image, _), det in zip(pending, self.run_batch([p[2] for p in pending])):
      yield Result(name, image, det)
