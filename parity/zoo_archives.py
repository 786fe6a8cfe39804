r"""Writes zoo-layout CenterNet archives with random weights and a tiny COCO val2017 set.

Runs INSIDE the OD API reference environment (tools/odapi_env.sh), never in the project env:

  PY=$(tools/odapi_env.sh | tail -n 1)
  $PY parity/zoo_archives.py --archives runs/zoo_table_odapi/archives \
      --coco_dir runs/zoo_table_odapi/coco [--rows NAME,NAME] [--with_r50]

What `make zoo-table-odapi` feeds to `python -m centernet_jax.zoo_table`
(parity/zoo_table_odapi.sh).

Per row, `--archives/<row>/` is laid out like the zoo's extracted tarball, written by the same
calls as the OD API exporter (`exporter_lib_v2.export_inference_graph`):
  checkpoint/ckpt-0.{index,data-00000-of-00001}, checkpoint/checkpoint
      `tf.train.CheckpointManager(tf.train.Checkpoint(model=model), ...).save(checkpoint_number=0)`
  pipeline.config
      `config_util.save_pipeline_config` of a `TrainEvalPipelineConfig` proto
No saved_model/: zoo_table and import_tf_checkpoint read only the checkpoint and the config.

The model is the zoo row's network assembled by parity/odapi_build.py (the variable names are
the archives'), with its random but well-conditioned weights (`randomize_and_calibrate`). The
sdist of the OD API ships no configs and the zoo archives' own pipeline.config files are not
available here, so the config is the `model { center_net }` block parity uses, completed as the
zoo's configs are (docs/odapi_reference.md, sections 5, 8 and 9): the per-joint std devs
(`keypoint_label_to_std`), the MobileNetV2 keypoint row's 1 class and 20 box predictions,
`depth_multiplier`, train/eval input readers, the training recipe and the OKS sigmas of the
keypoint metric. It goes through the OD API's proto classes and text writer, so the text is
what the OD API writes (field order, float formatting, map entries).

`--coco_dir` gets a deterministic COCO-format val2017 set in the official layout:
`annotations/instances_val2017.json` (persons, bicycles, cars, dogs; one crowd region with RLE
segmentation), `annotations/person_keypoints_val2017.json` (the person annotations with their
17 joints, some unlabelled; the person category with its joint names and skeleton) and
`val2017/<12-digit id>.jpg` (smooth random images of a few sizes and aspect ratios).
"""

import argparse
import json
import os

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image

from object_detection.protos import pipeline_pb2
from object_detection.utils import config_util

import odapi_build  # same folder: the zoo variants and the OD API model assembly

# zoo row (archive name) -> (odapi_build variant, input size)
ROW_VARIANTS = {
    'centernet_mobilenetv2fpn_512x512_coco17_od': ('mnv2fpn', 512),
    'centernet_mobilenetv2fpn_512x512_coco17_kpts': ('mnv2fpn_kpts', 512),
    'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8': ('r50v1fpn', 512),
    'centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8': ('r50v1fpn_kpts', 512),
    'centernet_resnet101_v1_fpn_512x512_coco17_tpu-8': ('r101v1fpn', 512),
    'centernet_resnet50_v2_512x512_coco17_tpu-8': ('r50v2', 512),
    'centernet_resnet50_v2_512x512_kpts_coco17_tpu-8': ('r50v2_kpts', 512),
    'centernet_hg104_512x512_coco17_tpu-8': ('hg104', 512),
    'centernet_hg104_512x512_kpts_coco17_tpu-32': ('hg104_kpts', 512),
    'centernet_hg104_1024x1024_coco17_tpu-32': ('hg104', 1024),
    'centernet_hg104_1024x1024_kpts_coco17_tpu-32': ('hg104_kpts', 1024),
}
MOBILENET_ROWS = ('centernet_mobilenetv2fpn_512x512_coco17_od',
                  'centernet_mobilenetv2fpn_512x512_coco17_kpts')
R50_ROW = 'centernet_resnet50_v1_fpn_512x512_coco17_tpu-8'
# The MobileNetV2 keypoint archive's quoted pipeline.config (docs/odapi_reference.md, 9).
MAX_BOX_PREDICTIONS = {'centernet_mobilenetv2fpn_512x512_coco17_kpts': 20}

# COCO's person keypoints: names in COCO order, skeleton (1-based joint pairs), OKS sigmas.
COCO_KEYPOINT_NAMES = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder',
    'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip', 'right_hip',
    'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
COCO_SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7),
                 (6, 8), (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5),
                 (4, 6), (5, 7))
COCO_OKS_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                   0.107, 0.107, 0.087, 0.087, 0.089, 0.089)
FLIP_PERMUTATION = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
# Joint positions in a person box as (x, y) fractions of its width and height, COCO order.
POSE = ((0.5, 0.08), (0.55, 0.06), (0.45, 0.06), (0.6, 0.08), (0.4, 0.08), (0.68, 0.22),
        (0.32, 0.22), (0.78, 0.38), (0.22, 0.38), (0.82, 0.52), (0.18, 0.52), (0.6, 0.55),
        (0.4, 0.55), (0.62, 0.75), (0.38, 0.75), (0.63, 0.95), (0.37, 0.95))
CATEGORIES = ({'supercategory': 'person', 'id': 1, 'name': 'person'},
              {'supercategory': 'vehicle', 'id': 2, 'name': 'bicycle'},
              {'supercategory': 'vehicle', 'id': 3, 'name': 'car'},
              {'supercategory': 'animal', 'id': 18, 'name': 'dog'})
# (height, width) of the val images: landscape, portrait, square, wide.
IMAGE_SIZES = ((240, 320), (320, 240), (256, 256), (200, 360))

TRAIN_TEXT = """
train_config {{
  batch_size: {batch_size}
  data_augmentation_options {{ random_horizontal_flip {{ {flip_permutation} }} }}
  {patch_gaussian}
  data_augmentation_options {{ random_crop_image {{ min_aspect_ratio: 0.5 max_aspect_ratio: 1.7
                                                   random_coef: 0.25 }} }}
  data_augmentation_options {{ random_adjust_hue {{ }} }}
  data_augmentation_options {{ random_adjust_contrast {{ }} }}
  data_augmentation_options {{ random_adjust_saturation {{ }} }}
  data_augmentation_options {{ random_adjust_brightness {{ }} }}
  data_augmentation_options {{ random_absolute_pad_image {{ max_height_padding: 200
                                                            max_width_padding: 200
                                                            pad_color: [0, 0, 0] }} }}
  optimizer {{
    adam_optimizer {{
      learning_rate {{
        cosine_decay_learning_rate {{
          learning_rate_base: 5e-3
          total_steps: 300000
          warmup_learning_rate: 1e-4
          warmup_steps: 5000
        }}
      }}
    }}
    use_moving_average: false
  }}
  num_steps: 300000
  max_number_of_boxes: 100
  unpad_groundtruth_tensors: false
  fine_tune_checkpoint_type: ""
  fine_tune_checkpoint_version: V2
}}
train_input_reader {{
  label_map_path: "PATH_TO_BE_CONFIGURED/label_map.txt"
  tf_record_input_reader {{ input_path: "PATH_TO_BE_CONFIGURED/train2017-?????-of-00256.tfrecord" }}
  {num_keypoints}
}}
eval_config {{
  metrics_set: "coco_detection_metrics"
  use_moving_averages: false
  batch_size: 1
}}
eval_input_reader {{
  label_map_path: "PATH_TO_BE_CONFIGURED/label_map.txt"
  shuffle: false
  num_epochs: 1
  tf_record_input_reader {{ input_path: "PATH_TO_BE_CONFIGURED/val2017-?????-of-00032.tfrecord" }}
  {num_keypoints}
}}
"""


def pipeline_config(row: str, variant: str,
                    input_size: int) -> pipeline_pb2.TrainEvalPipelineConfig:
  """The row's TrainEvalPipelineConfig: parity's model block, completed as the zoo's are."""
  keypoints = variant in odapi_build.KEYPOINT_VARIANTS
  base = odapi_build.KEYPOINT_VARIANTS.get(variant, variant)
  fe_text, num_classes, extra, _, _ = odapi_build.VARIANTS[base]
  num_classes = odapi_build.KEYPOINT_NUM_CLASSES.get(variant, num_classes)
  if keypoints:
    extra += odapi_build.KEYPOINT_TASK_TEXT
  model_text = odapi_build.MODEL_TEMPLATE.format(num_classes=num_classes,
                                                 feature_extractor=fe_text, extra=extra,
                                                 size=input_size)
  mobilenet = base == 'mnv2fpn'
  train_text = TRAIN_TEXT.format(
      # docs/odapi_reference.md, 9: 512 for the MobileNetV2 keypoint row, 128 for the others.
      batch_size=512 if row == 'centernet_mobilenetv2fpn_512x512_coco17_kpts' else 128,
      flip_permutation=' '.join(f'keypoint_flip_permutation: {p}' for p in FLIP_PERMUTATION)
      if keypoints else '',
      patch_gaussian=('data_augmentation_options { random_patch_gaussian { random_coef: 0.0 '
                      'min_patch_size: 1 max_patch_size: 250 min_gaussian_stddev: 0.0 '
                      'max_gaussian_stddev: 1.0 } }') if mobilenet else '',
      num_keypoints='num_keypoints: 17' if keypoints else '')
  config = pipeline_pb2.TrainEvalPipelineConfig()
  text_format.Merge('model {' + model_text + '}\n' + train_text, config)
  center_net = config.model.center_net
  if mobilenet:
    center_net.feature_extractor.depth_multiplier = 1.0
  if row in MAX_BOX_PREDICTIONS:
    center_net.object_center_params.max_box_predictions = MAX_BOX_PREDICTIONS[row]
  if keypoints:
    task = center_net.keypoint_estimation_task[0]
    for name, std in zip(COCO_KEYPOINT_NAMES, odapi_build.KEYPOINT_STD):
      task.keypoint_label_to_std[name] = std
    metric = config.eval_config.parameterized_metric.add().coco_keypoint_metrics
    metric.class_label = 'person'
    for name, sigma in zip(COCO_KEYPOINT_NAMES, COCO_OKS_SIGMAS):
      metric.keypoint_label_to_sigmas[name] = sigma
    for start, end in COCO_SKELETON:
      edge = config.eval_config.keypoint_edge.add()
      edge.start, edge.end = start - 1, end - 1
  return config


def write_archive(row: str, folder: str, seed: int) -> dict:
  """`folder/checkpoint/ckpt-0.*` and `folder/pipeline.config` of one row; returns facts."""
  variant, input_size = ROW_VARIANTS[row]
  keypoints = variant in odapi_build.KEYPOINT_VARIANTS
  base = odapi_build.KEYPOINT_VARIANTS.get(variant, variant)
  _, num_classes, _, make_fe, use_depthwise = odapi_build.VARIANTS[base]
  num_classes = odapi_build.KEYPOINT_NUM_CLASSES.get(variant, num_classes)
  config = pipeline_config(row, variant, input_size)
  tf.random.set_seed(seed)
  model = odapi_build.make_model(argparse.Namespace(input_size=input_size), num_classes,
                                 make_fe, use_depthwise, keypoints)
  images = tf.constant(odapi_build.smooth_image(480, 640, seed)[None].astype(np.float32))
  preprocessed, true_shapes = model.preprocess(images)
  model.predict(preprocessed, true_shapes)  # creates the variables
  odapi_build.randomize_and_calibrate(model, preprocessed, seed + 1)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                       os.path.join(folder, 'checkpoint'), max_to_keep=1)
  prefix = manager.save(checkpoint_number=0)
  config_util.save_pipeline_config(config, folder)
  return {'row': row, 'variant': variant, 'input_size': input_size, 'num_classes': num_classes,
          'checkpoint': os.path.relpath(prefix, folder),
          'num_checkpoint_variables': len(tf.train.list_variables(prefix))}


def person_keypoints(rng: np.random.RandomState, box, image_hw) -> list:
  """COCO [x, y, v] * 17 for a person box [x, y, w, h]: the POSE layout jittered, about a
  fifth of the joints unlabelled (0, 0, 0), some labelled but occluded (v = 1)."""
  x, y, w, h = box
  out = []
  for fx, fy in POSE:
    if rng.uniform() < 0.2:
      out += [0, 0, 0]
      continue
    px = min(max(x + (fx + rng.uniform(-0.04, 0.04)) * w, 0.0), image_hw[1] - 1.0)
    py = min(max(y + (fy + rng.uniform(-0.03, 0.03)) * h, 0.0), image_hw[0] - 1.0)
    out += [round(px, 2), round(py, 2), 1 if rng.uniform() < 0.2 else 2]
  return out


def polygon(box) -> list:
  x, y, w, h = box
  return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def write_coco(coco_dir: str, seed: int) -> dict:
  """The tiny val2017 set (see the module docstring); returns counts."""
  rng = np.random.RandomState(seed)
  image_dir = os.path.join(coco_dir, 'val2017')
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(os.path.join(coco_dir, 'annotations'), exist_ok=True)
  images, instances, persons = [], [], []
  ann_id = 900100
  for i, (height, width) in enumerate(IMAGE_SIZES):
    image_id = 397133 + 1117 * i
    name = f'{image_id:012d}.jpg'
    Image.fromarray(odapi_build.smooth_image(height, width, seed + 10 + i)).save(
        os.path.join(image_dir, name), quality=90)
    images.append({'license': 4, 'file_name': name, 'height': height, 'width': width,
                   'date_captured': '2013-11-14 17:02:52', 'id': image_id})
    category_ids = [1, 1] + [int(c) for c in rng.choice([1, 2, 3, 18], size=1 + i % 3)]
    for category_id in category_ids:
      w = round(float(rng.uniform(0.15, 0.5) * width), 2)
      h = round(float(rng.uniform(0.25, 0.7) * height), 2)
      x = round(float(rng.uniform(0, width - w)), 2)
      y = round(float(rng.uniform(0, height - h)), 2)
      ann_id += 1
      ann = {'segmentation': polygon([x, y, w, h]), 'area': round(w * h, 4), 'iscrowd': 0,
             'image_id': image_id, 'bbox': [x, y, w, h], 'category_id': category_id,
             'id': ann_id}
      instances.append(ann)
      if category_id == 1:
        kp = person_keypoints(rng, ann['bbox'], (height, width))
        persons.append(dict(ann, keypoints=kp, num_keypoints=sum(v > 0 for v in kp[2::3])))
    if i == 1:  # a crowd of persons: RLE segmentation, no joints, an ignore region for COCOeval
      ann_id += 1
      w, h = width // 4, height // 5
      rle = {'counts': [h * 2, h * w, height * width - h * 2 - h * w], 'size': [height, width]}
      crowd = {'segmentation': rle, 'area': float(w * h), 'iscrowd': 1, 'image_id': image_id,
               'bbox': [0.0, 2.0, float(w), float(h)], 'category_id': 1, 'id': ann_id}
      instances.append(crowd)
      persons.append(dict(crowd, keypoints=[0] * 51, num_keypoints=0))
  info = {'description': 'centernet-jax tiny COCO-format val2017 (parity/zoo_archives.py)',
          'version': '1.0', 'year': 2017}
  licenses = [{'url': 'http://creativecommons.org/licenses/by/2.0/', 'id': 4,
               'name': 'Attribution License'}]
  person_category = dict(CATEGORIES[0], keypoints=list(COCO_KEYPOINT_NAMES),
                         skeleton=[list(pair) for pair in COCO_SKELETON])
  files = {'instances_val2017.json': {'info': info, 'licenses': licenses, 'images': images,
                                      'annotations': instances,
                                      'categories': list(CATEGORIES)},
           'person_keypoints_val2017.json': {'info': info, 'licenses': licenses,
                                             'images': images, 'annotations': persons,
                                             'categories': [person_category]}}
  for name, data in files.items():
    with open(os.path.join(coco_dir, 'annotations', name), 'w') as f:
      json.dump(data, f)
  return {'images': len(images), 'instances': len(instances), 'persons': len(persons)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--archives', required=True, help='Folder to write <row>/ into.')
  parser.add_argument('--coco_dir', required=True, help='Folder to write the tiny set into.')
  parser.add_argument('--rows', default=','.join(MOBILENET_ROWS),
                      help=f'Comma-separated rows, of: {", ".join(ROW_VARIANTS)}.')
  parser.add_argument('--with_r50', action='store_true',
                      help=f'Also write {R50_ROW} (about 3x the MobileNetV2 time and size).')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  rows = [r.strip() for r in args.rows.split(',') if r.strip()]
  if args.with_r50 and R50_ROW not in rows:
    rows.append(R50_ROW)
  unknown = [r for r in rows if r not in ROW_VARIANTS]
  if unknown:
    parser.error(f'--rows: unknown rows {unknown}; known: {sorted(ROW_VARIANTS)}')
  odapi_build.no_download_mobilenet()
  summary = {'coco': write_coco(args.coco_dir, args.seed), 'archives': []}
  for row in rows:
    folder = os.path.join(args.archives, row)
    if os.path.exists(folder):
      raise SystemExit(f'{folder} exists; remove it first (archives are written once).')
    summary['archives'].append(write_archive(row, folder, args.seed))
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
