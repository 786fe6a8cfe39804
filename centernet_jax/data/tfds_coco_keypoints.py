r"""A TFDS builder for COCO 2017 with person keypoints, from a manual-download directory.

TFDS's `coco/2017` has no keypoints, so the keypoint zoo rows need this builder:
`coco_keypoints/2017` holds every COCO 2017 instance (all 80 classes, as the OD API's
`create_coco_tf_record.py` merges them) and, for the person annotations of COCO's
`person_keypoints_*2017.json` (matched by annotation id), the 17 joints.

Manual directory layout (the official archives unpacked in one folder):
  <manual_dir>/annotations/instances_train2017.json
  <manual_dir>/annotations/instances_val2017.json
  <manual_dir>/annotations/person_keypoints_train2017.json
  <manual_dir>/annotations/person_keypoints_val2017.json
  <manual_dir>/train2017/*.jpg
  <manual_dir>/val2017/*.jpg

Build once (a few hours for train2017; writes ~20 GB of TFRecords):
  python -m centernet_jax.data.tfds_coco_keypoints --manual_dir /data/coco \
      --data_dir ~/tensorflow_datasets
then train with `--config.dataset.source=tfds --config.dataset.tfds_name=coco_keypoints/2017
--config.dataset.tfds_data_dir=~/tensorflow_datasets
--config.dataset.val_annotations=/data/coco/annotations/instances_val2017.json
--config.dataset.val_keypoint_annotations=/data/coco/annotations/person_keypoints_val2017.json`
(the keypoint experiments do this; evaluation always reads the official JSONs).

Features, like `coco/2017`'s so `tfds_coco.convert_example` reads both: `image` (the file's
bytes), `image/filename`, `image/id`, `objects/{id, area, bbox (normalized y-first BBox),
label (ClassLabel 0..79 in sorted category-id order), is_crowd}`, plus
`objects/keypoints` float32 [17, 2] (y, x) normalized to the image and
`objects/keypoint_visibility` int32 [17] (COCO's v: 0 unlabelled, 1 occluded, 2 visible;
objects of other classes, and persons without keypoint annotations, have all 0).

The joint names and skeleton are `keypoint_spec.COCO_KEYPOINT_NAMES` /
`COCO_SKELETON_1BASED` (the person category of the keypoint files), recorded in the dataset's
metadata. Images without annotations are kept, as in `coco/2017`.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from centernet_jax import file_io
from centernet_jax import keypoint_spec as kps
from centernet_jax.data import coco_categories

NUM_KEYPOINTS = len(kps.COCO_KEYPOINT_NAMES)
SPLITS = {'train': 'train2017', 'validation': 'val2017'}


def _manual_paths(root, folder):
  ann = file_io.join(root, 'annotations')
  return (file_io.join(ann, f'instances_{folder}.json'),
          file_io.join(ann, f'person_keypoints_{folder}.json'),
          file_io.join(root, folder))


class CocoKeypoints(tfds.core.GeneratorBasedBuilder):
  """COCO 2017 instances with person keypoints (manual download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Instances of all classes plus the 17 person joints.'}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name='2017', description='COCO 2017')]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Unpack the COCO 2017 train/val images and the 2017 train/val annotations into one '
      'folder: annotations/{instances,person_keypoints}_{train,val}2017.json, train2017/, '
      'val2017/; pass it as the manual_dir.')

  # tfds 4.9.10 resolves a builder's code path (for download checksums) through a backport it
  # only declares for old Pythons; this builder downloads nothing.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # pylint: disable=invalid-overridden-method
    return None

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            'image/filename': tfds.features.Text(),
            'image/id': np.int64,
            'objects': tfds.features.Sequence({
                'id': np.int64,
                'area': np.float32,
                'bbox': tfds.features.BBoxFeature(),
                'label': tfds.features.ClassLabel(
                    names=[name for _, name in coco_categories.COCO_CATEGORIES]),
                'is_crowd': np.bool_,
                'keypoints': tfds.features.Tensor(shape=(NUM_KEYPOINTS, 2), dtype=np.float32),
                'keypoint_visibility': tfds.features.Tensor(shape=(NUM_KEYPOINTS,),
                                                            dtype=np.int32),
            }),
        }),
        homepage='https://cocodataset.org',
        metadata=tfds.core.MetadataDict(
            keypoint_names=list(kps.COCO_KEYPOINT_NAMES),
            skeleton=[list(p) for p in kps.COCO_SKELETON_1BASED]),
    )

  def _split_generators(self, dl_manager):
    root = str(dl_manager.manual_dir)
    out = {}
    for split, folder in SPLITS.items():
      instances, keypoints, images = _manual_paths(root, folder)
      if file_io.exists(instances):
        out[split] = self._generate_examples(instances, keypoints, images)
    if not out:
      raise FileNotFoundError(f'{root}: no annotations/instances_{{train,val}}2017.json. '
                              + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return out

  # pylint: disable-next=arguments-differ
  def _generate_examples(self, instances_file, keypoints_file, image_dir):
    data = file_io.read_json(instances_file)
    label_of = {cid: i for i, (cid, _) in enumerate(coco_categories.COCO_CATEGORIES)}
    joints = {}
    if file_io.exists(keypoints_file):
      for ann in file_io.read_json(keypoints_file).get('annotations', []):
        if ann.get('keypoints'):
          joints[int(ann['id'])] = ann['keypoints']
    by_image = {}
    for ann in data.get('annotations', []):
      by_image.setdefault(int(ann['image_id']), []).append(ann)
    for image in data['images']:
      iid = int(image['id'])
      h, w = float(image['height']), float(image['width'])
      objects = []
      for ann in by_image.get(iid, []):
        x, y, bw, bh = (float(v) for v in ann['bbox'])
        ymin, xmin = np.clip([y / h, x / w], 0.0, 1.0)
        ymax, xmax = np.clip([(y + bh) / h, (x + bw) / w], 0.0, 1.0)
        kp = np.zeros((NUM_KEYPOINTS, 2), np.float32)
        vis = np.zeros((NUM_KEYPOINTS,), np.int32)
        raw = joints.get(int(ann['id']))
        if raw is not None:
          arr = np.asarray(raw, np.float64).reshape(NUM_KEYPOINTS, 3)
          vis = arr[:, 2].astype(np.int32)
          kp = np.where(vis[:, None] > 0, np.stack([arr[:, 1] / h, arr[:, 0] / w], axis=1),
                        0.0).astype(np.float32)
        objects.append({
            'id': int(ann['id']), 'area': float(ann.get('area', bw * bh)),
            'bbox': tfds.features.BBox(ymin, xmin, max(ymax, ymin), max(xmax, xmin)),
            'label': label_of[int(ann['category_id'])],
            'is_crowd': bool(ann.get('iscrowd', 0)),
            'keypoints': kp, 'keypoint_visibility': vis})
      yield iid, {'image': file_io.join(image_dir, image['file_name']),
                  'image/filename': image['file_name'], 'image/id': iid, 'objects': objects}


def build(manual_dir: str, data_dir: str) -> CocoKeypoints:
  """Builds (or finds) `coco_keypoints/2017` under `data_dir` from `manual_dir`."""
  builder = CocoKeypoints(config='2017', data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _main(argv):
  del argv
  f = flags.FLAGS
  builder = build(f.manual_dir, f.data_dir)
  print(builder.info)


if __name__ == '__main__':
  flags.DEFINE_string('manual_dir', None, 'Folder with annotations/ and the image folders.')
  flags.DEFINE_string('data_dir', os.path.expanduser('~/tensorflow_datasets'),
                      'TFDS data directory to write to.')
  flags.mark_flags_as_required(['manual_dir'])
  app.run(_main)
