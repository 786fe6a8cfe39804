r"""Runs a trained CenterNet on image files and draws what it finds.

  python -m centernet_jax.detect --workdir runs/demo --images 'photos/*.jpg,extra.png' \
      --output_dir runs/demo/detections [--min_score 0.3] [--step N]

Writes `<output_dir>/<image stem>.png` (boxes, class names, scores drawn) and
`<output_dir>/detections.json` (every detection: COCO category id and name, score, the box as
y-first pixels and as COCO [x, y, w, h]). The model, its config and its label map all come from
the checkpoint, so no dataset is needed.

A keypoint model (its label map carries the keypoint task) also draws each drawn detection's
skeleton (limbs from the dataset's skeleton, joints coloured by side, hollow where the joint was
not snapped to a heatmap peak) and writes, for detections of the keypoint class,
`keypoints`: one {name, x, y, score} per joint in image pixels.
"""

import json
from typing import Any, Sequence

import jax
import numpy as np
from absl import app, flags, logging
from etils import epath
from PIL import Image
import tensorflow as tf

from centernet_jax import evaluate
from centernet_jax import file_io
from centernet_jax import run_files
from centernet_jax import visualize
from centernet_jax.data import pipeline

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.')
_IMAGES = flags.DEFINE_string('images', None, 'Comma-separated image paths or glob patterns.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where to write PNGs and detections.json.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (latest if unset).')
_MIN_SCORE = flags.DEFINE_float('min_score', 0.3, 'Drawing threshold (the JSON keeps all).')
_BATCH = flags.DEFINE_integer('batch_size', 4, 'Images per forward pass.')


class Detector:
  """A restored model plus its label map; `__call__` maps image arrays to detections."""

  def __init__(self, workdir: str, step: int | None = None, batch_size: int = 4):
    run = run_files.restore_for_inference(workdir, step)
    self.config = run.config
    self.label_map = run.label_map
    self.class_names = list(self.label_map['names'])
    self.category_ids = list(self.label_map['category_ids'])
    self.batch_size = batch_size
    self.input_size = self.config.input.size
    self.keypoint_spec = run.keypoint_spec
    self.model = run.model
    self.step = run.step
    self.variables = run.variables
    self.predict_fn = evaluate.make_predict_fn(
        self.model, input_size=self.input_size,
        max_detections=self.config.eval.max_detections,
        keypoint_params=evaluate.keypoint_decode_params(self.keypoint_spec, self.config))

  def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Detects on uint8 RGB [H, W, 3] images; boxes come back in each image's pixels."""
    results = []
    for start in range(0, len(images), self.batch_size):
      chunk = list(images[start:start + self.batch_size])
      prepared = [prepare_image(im, self.input_size) for im in chunk]
      # A fixed batch shape: the last chunk is padded by repeating its first image.
      prepared += [prepared[0]] * (self.batch_size - len(chunk))
      batch = {k: np.stack([p[k] for p in prepared]) for k in evaluate.PREDICT_KEYS}
      out = jax.device_get(self.predict_fn(self.variables, batch))
      results.extend({k: v[i] for k, v in out.items()} for i in range(len(chunk)))
    return results


def prepare_image(image: np.ndarray, input_size: int) -> dict[str, np.ndarray]:
  """uint8 [H, W, 3] RGB -> the model input with the eval pipeline's resize and padding."""
  padded, _, true_size = pipeline.resize_and_pad(
      tf.convert_to_tensor(image, tf.float32), tf.zeros([0, 4], tf.float32), input_size)
  return {'image': padded.numpy(), 'true_size': true_size.numpy().astype(np.int32),
          'original_size': np.asarray(image.shape[:2], np.int32)}


def expand_image_paths(spec: str) -> list[str]:
  """Splits a comma-separated list of paths/globs; raises if a part matches no file."""
  paths = []
  for part in (p.strip() for p in spec.split(',')):
    if not part:
      continue
    matches = sorted(tf.io.gfile.glob(part)) if any(ch in part for ch in '*?[') else [part]
    if not matches or not all(file_io.exists(m) for m in matches):
      raise FileNotFoundError(f'--images: no file matches {part!r}.')
    paths.extend(matches)
  if not paths:
    raise ValueError('--images is empty.')
  return paths


def load_rgb(path: str) -> np.ndarray:
  try:
    with file_io.open_file(path, 'rb') as f, Image.open(f) as im:
      return np.asarray(im.convert('RGB'))
  except Exception as e:  # PIL raises several types for unreadable files.
    raise ValueError(f'{path}: cannot read the image ({e}).') from e


def detect_files(workdir: str, image_paths: Sequence[str], output_dir: str, *,
                 step: int | None = None, min_score: float = 0.3,
                 batch_size: int = 4) -> list[dict[str, Any]]:
  """Runs the detector on files, writes annotated PNGs and detections.json; returns records."""
  detector = Detector(workdir, step, batch_size)
  out_dir = epath.Path(output_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  images = [load_rgb(p) for p in image_paths]
  records = []
  spec = detector.keypoint_spec
  for path, image, det in zip(image_paths, images, detector(images)):
    kp_args = {}
    if spec is not None:
      kp_args = dict(keypoints=det['keypoints'], keypoint_scores=det['keypoint_scores'],
                     skeleton=spec.skeleton, keypoint_channel=spec.channel,
                     flip_permutation=spec.flip_permutation,
                     snapped_threshold=float(detector.config.get('keypoints', {}).get(
                         'unmatched_score', 0.1)))
    picture = visualize.draw_detections(image, det['boxes'], det['scores'], det['classes'],
                                        detector.class_names, min_score, **kp_args)
    picture_path = out_dir / (epath.Path(path).stem + '.png')
    picture.save(picture_path)
    dets = []
    for k, (box, score, cls) in enumerate(zip(det['boxes'], det['scores'], det['classes'])):
      ymin, xmin, ymax, xmax = (float(v) for v in box)
      record = {'category_id': int(detector.category_ids[int(cls)]),
                'category_name': detector.class_names[int(cls)], 'score': float(score),
                'box_yxyx': [ymin, xmin, ymax, xmax],
                'bbox': [xmin, ymin, xmax - xmin, ymax - ymin]}
      if spec is not None and int(cls) == spec.channel:
        record['keypoints'] = [
            {'name': name, 'x': float(x), 'y': float(y), 'score': float(js)}
            for name, (y, x), js in zip(spec.names, det['keypoints'][k],
                                        det['keypoint_scores'][k])]
      dets.append(record)
    records.append({'image': str(path), 'height': int(image.shape[0]),
                    'width': int(image.shape[1]), 'picture': str(picture_path),
                    'detections': dets})
    shown = sum(d['score'] >= min_score for d in dets)
    logging.info('%s: %d detections with score >= %.2f -> %s', path, shown, min_score,
                 picture_path)
  (out_dir / 'detections.json').write_text(json.dumps(
      {'workdir': str(workdir), 'step': detector.step, 'images': records}, indent=1))
  return records


def main(argv):
  del argv
  detect_files(_WORKDIR.value, expand_image_paths(_IMAGES.value), _OUTPUT_DIR.value,
               step=_STEP.value, min_score=_MIN_SCORE.value, batch_size=_BATCH.value)


def run():
  flags.mark_flags_as_required(['workdir', 'images', 'output_dir'])
  app.run(main)


if __name__ == '__main__':
  run()
