"""TFDS coco source: label -> category id -> channel conversion, and the stream on a tiny
hand-built TFDS dataset with coco/2017's feature layout (real COCO cannot be downloaded here,
and tfds.testing.mock_data gives misaligned object fields)."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from centernet_jax import config_base
from centernet_jax.data import coco_json
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from centernet_jax.data import tfds_coco


def test_official_table():
  ids = [cid for cid, _ in tfds_coco.COCO_CATEGORIES]
  assert len(ids) == 80 and ids == sorted(ids) and ids[-1] == 90
  assert set(range(1, 91)) - set(ids) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
  assert tfds_coco.COCO_CATEGORIES[0] == (1, 'person')
  assert tfds_coco.COCO_CATEGORIES[79] == (90, 'toothbrush')


def _fake_example(encoded=False):
  img = np.zeros((10, 20, 3), np.uint8)
  img[2:5, 4:8] = 200
  if encoded:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='PNG')
    image = tf.constant(buf.getvalue())
  else:
    image = tf.constant(img)
  return {
      'image': image,
      'image/id': tf.constant(4242, tf.int64),
      'objects': {
          'bbox': tf.constant([[0.1, 0.2, 0.5, 0.4], [0.0, 0.0, 1.0, 1.0],
                               [0.3, 0.3, 0.3, 0.6], [0.6, 0.5, 1.2, 0.9]], tf.float32),
          # TFDS labels: 0 person (id 1), 11 stop sign (id 13), 79 toothbrush (id 90), 60 dining
          # table (id 67).
          'label': tf.constant([11, 0, 79, 60], tf.int64),
          'is_crowd': tf.constant([False, True, False, False]),
          'id': tf.constant([1, 2, 3, 4], tf.int64),
          'area': tf.constant([1, 2, 3, 4], tf.int64),
      },
  }


@pytest.mark.parametrize('encoded', [False, True])
def test_convert_example(encoded):
  lm = coco_json.LabelMap(tfds_coco.COCO_CATEGORIES, 'contiguous')
  out = tfds_coco.convert_example(_fake_example(encoded), lm)
  # Crowd removed, the zero-height box dropped, the out-of-range box clipped.
  np.testing.assert_allclose(out['boxes'].numpy(), [[0.1, 0.2, 0.5, 0.4], [0.6, 0.5, 1.0, 0.9]])
  np.testing.assert_array_equal(out['classes'].numpy(), [11, 60])
  assert out['image_id'].numpy() == 4242 and out['image'].dtype == tf.uint8
  assert out['image'].shape == (10, 20, 3) and out['image'].numpy()[3, 5, 0] == 200
  lm90 = coco_json.LabelMap(tfds_coco.COCO_CATEGORIES, 'id_minus_one')
  out = tfds_coco.convert_example(_fake_example(encoded), lm90)
  np.testing.assert_array_equal(out['classes'].numpy(), [12, 66])  # ids 13, 67 minus one
  assert lm90.num_channels == 90


class FakeCocoForTests(tfds.core.GeneratorBasedBuilder):
  """coco/2017's feature layout, a handful of tiny PNG examples."""
  VERSION = tfds.core.Version('1.0.0')

  # tfds 4.9.10 resolves a builder's code path (for download checksums) through the
  # `importlib_resources` backport, which it only declares for Python < 3.9; this builder
  # downloads nothing, so it has no code path to resolve.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # pylint: disable=invalid-overridden-method
    return None

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
        'image/filename': tfds.features.Text(),
        'image/id': np.int64,
        'objects': tfds.features.Sequence({
            'id': np.int64,
            'area': np.int64,
            'bbox': tfds.features.BBoxFeature(),
            'label': tfds.features.ClassLabel(num_classes=80),
            'is_crowd': np.bool_,
        }),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(6, 0),
            'validation': self._generate_examples(5, 1000)}

  def _generate_examples(self, n, base):  # pylint: disable=arguments-differ
    for i in range(n):
      h, w = 16 + 2 * i, 20
      img = np.zeros((h, w, 3), np.uint8)
      img[2:10, 3:9] = 255
      objects = [{'id': 1, 'area': 48, 'label': i % 3,
                  'bbox': tfds.features.BBox(2 / h, 3 / w, 10 / h, 9 / w), 'is_crowd': False}]
      if i % 2:
        objects.append({'id': 2, 'area': 10, 'label': 5, 'is_crowd': True,
                        'bbox': tfds.features.BBox(0.0, 0.0, 0.5, 0.5)})
      yield f'{base + i}', {'image': img, 'image/filename': f'{i}.png',
                            'image/id': base + i + 1, 'objects': objects}


@pytest.fixture(scope='module')
def tfds_cfg(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  FakeCocoForTests(data_dir=data_dir).download_and_prepare()
  c = config_base.base_config()
  c.dataset.source = 'tfds'
  c.dataset.tfds_name = 'fake_coco_for_tests'
  c.dataset.tfds_data_dir = data_dir
  c.dataset.max_boxes = 4
  c.dataset.shuffle_buffer = 4
  c.input.size = 32
  c.input.augmentations = c.input.augmentations.replace('random_absolute_pad_image(200, 200)',
                                                        'random_absolute_pad_image(8, 8)')
  c.batch_size = 4
  c.eval.batch_size = 4
  c.num_train_steps = 10
  return c


def test_tfds_train_stream(tfds_cfg):
  it = pipeline.make_train_iterator(tfds_cfg, sources.resolve(tfds_cfg))
  batches = [next(it) for _ in range(4)]
  b = batches[0]
  assert b['image'].shape == (4, 32, 32, 3) and b['boxes'].shape == (4, 4, 4)
  assert b['image_id'].dtype == np.int32
  # Each epoch of 6 examples visits every image once; crowd objects never appear.
  ids = np.concatenate([x['image_id'] for x in batches])
  assert sorted(ids[:6]) == [1, 2, 3, 4, 5, 6] and sorted(ids[6:12]) == [1, 2, 3, 4, 5, 6]
  assert all(x['box_mask'].sum() == 4 for x in batches)
  # Deterministic and resumable.
  again = pipeline.make_train_iterator(tfds_cfg, sources.resolve(tfds_cfg), start_step=2)
  for a, b in zip(batches[2:], [next(again) for _ in range(2)]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert sources.resolve(tfds_cfg).num_classes == 80


def test_tfds_eval(tfds_cfg):
  seen = []
  for p in range(2):
    it, n = pipeline.make_eval_iterator(tfds_cfg, sources.resolve(tfds_cfg), process_index=p, process_count=2)
    bs = list(it)
    assert n == 2 and len(bs) == 2  # shares 3 and 2, local batch 2
    for b in bs:
      seen += [i for i, m in zip(b['image_id'], b['example_mask']) if m]
      assert np.all(b['image_id'][b['example_mask'] == 0] == -1)
      np.testing.assert_array_equal(b['classes'][b['box_mask'] > 0] <= 2, True)
  assert sorted(seen) == [1001, 1002, 1003, 1004, 1005]
