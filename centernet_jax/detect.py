r"""Runs a trained CenterNet on image files and draws what it finds.

  python -m centernet_jax.detect --workdir runs/demo --images 'photos/*.jpg,extra.png' \
      --output_dir runs/demo/detections [--min_score 0.3] [--step N]

Writes `<output_dir>/<image stem>.png` (boxes, class names, scores drawn) and
`<output_dir>/detections.json` (every detection: COCO category id and name, score, the box as
y-first pixels and as COCO [x, y, w, h]). The model, its config and its label map all come from
the checkpoint, so no dataset is needed. A thin command over `inference.Predictor` (evaluation's
preprocessing and jitted network + decoder, images read lazily, memory bounded); `--images`
takes files, globs and folders.

A keypoint model (its label map carries the keypoint task) also draws each drawn detection's
skeleton (limbs from the dataset's skeleton, joints coloured by side, hollow where the joint was
not snapped to a heatmap peak) and writes, for detections of the keypoint class,
`keypoints`: one {name, x, y, score} per joint in image pixels.
"""

import itertools
import json
import os
from typing import Any, Iterable, Iterator

from absl import app, flags, logging
from etils import epath
import tensorflow as tf

from centernet_jax import file_io
from centernet_jax import inference
from centernet_jax import tta
from centernet_jax import visualize

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.')
_IMAGES = flags.DEFINE_string('images', None,
                              'Comma-separated image paths, glob patterns or folders.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where to write PNGs and detections.json.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (latest if unset).')
_MIN_SCORE = flags.DEFINE_float('min_score', 0.3, 'Drawing threshold (the JSON keeps all).')
_BATCH = flags.DEFINE_integer('batch_size', 4, 'Images per forward pass.')
_TTA = flags.DEFINE_enum('tta', None, list(tta.MODES),
                         "Test-time augmentation (default: the run's eval.tta); docs/tta.md.")

# What a folder given to --images contributes (other files in it are not looked at).
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')


def expand_image_paths(spec: str) -> list[str]:
  """Splits a comma-separated list of paths/globs/folders into files (a folder: its image
  files by extension, sorted); raises naming the part that matches no file."""
  paths = []
  for part in (p.strip() for p in spec.split(',')):
    if not part:
      continue
    if tf.io.gfile.isdir(part):
      names = sorted(tf.io.gfile.listdir(part))
      images = [file_io.join(part, n) for n in names
                if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
      if not images:
        raise ValueError(f'--images: folder {part!r} holds no image file '
                         f'({"empty" if not names else f"{len(names)} other files"}; '
                         f'image extensions: {", ".join(IMAGE_EXTENSIONS)})')
      paths.extend(images)
      continue
    matches = sorted(tf.io.gfile.glob(part)) if any(ch in part for ch in '*?[') else [part]
    if not matches or not all(file_io.exists(m) for m in matches):
      raise FileNotFoundError(f'--images: no file matches {part!r}.')
    paths.extend(matches)
  if not paths:
    raise ValueError('--images is empty.')
  return paths


def detection_records(predictor: inference.Predictor, results: Iterable[inference.Result],
                      output_dir: epath.Path, min_score: float) -> Iterator[dict[str, Any]]:
  """Draws each result into `output_dir/<stem>.png` and yields its detections.json record."""
  spec = predictor.keypoint_spec
  for result in results:
    image, det = result.image, result.detections
    kp_args = {}
    if spec is not None:
      kp_args = dict(keypoints=det['keypoints'], keypoint_scores=det['keypoint_scores'],
                     skeleton=spec.skeleton, keypoint_channel=spec.channel,
                     flip_permutation=spec.flip_permutation,
                     snapped_threshold=float(predictor.config.keypoints.unmatched_score))
    picture = visualize.draw_detections(image, det['boxes'], det['scores'], det['classes'],
                                        predictor.class_names, min_score, **kp_args)
    picture_path = output_dir / (epath.Path(result.source).stem + '.png')
    picture.save(picture_path)
    dets = []
    for k, (box, score, cls) in enumerate(zip(det['boxes'], det['scores'], det['classes'])):
      ymin, xmin, ymax, xmax = (float(v) for v in box)
      record = {'category_id': predictor.category_ids[int(cls)],
                'category_name': predictor.class_names[int(cls)], 'score': float(score),
                'box_yxyx': [ymin, xmin, ymax, xmax],
                'bbox': [xmin, ymin, xmax - xmin, ymax - ymin]}
      if spec is not None and int(cls) == spec.channel:
        record['keypoints'] = [
            {'name': name, 'x': float(x), 'y': float(y), 'score': float(js)}
            for name, (y, x), js in zip(spec.names, det['keypoints'][k],
                                        det['keypoint_scores'][k])]
      dets.append(record)
    shown = sum(d['score'] >= min_score for d in dets)
    logging.info('%s: %d detections with score >= %.2f -> %s', result.source, shown, min_score,
                 picture_path)
    yield {'image': result.source, 'height': int(image.shape[0]),
           'width': int(image.shape[1]), 'picture': str(picture_path), 'detections': dets}


def detect_files(workdir: str, image_paths: Iterable[str], output_dir: str, *,
                 step: int | None = None, min_score: float = 0.3,
                 batch_size: int = 4, tta: str | None = None) -> int:
  """Runs `inference.Predictor` on files, writes annotated PNGs and detections.json; returns
  the number of images. Images are read, run and written batch by batch, and detections.json
  is written as it goes, so memory does not grow with the number of images."""
  if int(batch_size) < 1:
    raise ValueError(f'--batch_size={batch_size}: must be >= 1')
  predictor = inference.Predictor.from_workdir(workdir, step, tta=tta, batch_size=batch_size)
  results = predictor(image_paths)
  first = next(results, None)
  if first is None:
    raise ValueError('detect: no image was given')
  out_dir = epath.Path(output_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  count = 0
  records = detection_records(predictor, itertools.chain([first], results), out_dir, min_score)
  with (out_dir / 'detections.json').open('w') as f:
    f.write(json.dumps({'workdir': str(workdir), 'step': predictor.step})[:-1] +
            ', "images": [\n')
    for record in records:
      f.write((',\n' if count else '') + json.dumps(record))
      count += 1
    f.write('\n]}\n')
  return count


def main(argv):
  del argv
  detect_files(_WORKDIR.value, expand_image_paths(_IMAGES.value), _OUTPUT_DIR.value,
               step=_STEP.value, min_score=_MIN_SCORE.value, batch_size=_BATCH.value,
               tta=_TTA.value)


def run():
  flags.mark_flags_as_required(['workdir', 'images', 'output_dir'])
  app.run(main)


if __name__ == '__main__':
  run()
