"""Broken inputs stop the run at start-up with the file, record and field named (or are skipped
and counted): config values, both splits' annotation JSONs, keypoint definitions, image files,
and images that stop decoding at run time. No model is built here."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from centernet_jax import config_base
from centernet_jax import config_check
from centernet_jax import experiments
from centernet_jax import startup
from centernet_jax.data import image_check
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from tests import tiny

JOINTS = ('nose', 'left_eye', 'right_eye')


@pytest.fixture
def cfg(tmp_path):
  return tiny.coco_json_config(str(tmp_path / 'data'))


@pytest.fixture
def kp_cfg(tmp_path):
  return tiny.coco_json_config(str(tmp_path / 'data'), keypoint_names=JOINTS)


def _json(c, split):
  path = c.dataset[f'{split}_annotations']
  with open(path) as f:
    return path, json.load(f)


def _check(c, tmp_path):
  """The splits the start-up check loaded."""
  return startup.check_before_build(c, str(tmp_path / 'work'))[1]


def test_a_good_set_passes_both_splits(cfg, tmp_path):
  datasets = _check(cfg, tmp_path)
  assert len(datasets['train'].records) == 3 and len(datasets['val'].records) == 3
  assert os.path.exists(tmp_path / 'work' / startup.IMAGE_CHECK_CACHE)


# ---- broken JSON files, both splits ----

_BROKEN = {
    'empty': (b'', 'the file is empty'),
    'whitespace': (b'  \n', 'the file is empty'),
    'truncated': (None, 'not valid JSON: .* line 1'),
    'garbage': (b'\x00\x01garbage{', 'not valid JSON'),
    'latin1': ('{"images": [], "categories": [{"id": 1, "name": "caf\u00e9"}]}'.encode('latin-1'),
               r'not UTF-8 text \(byte 0xe9'),
    'top_level_list': (b'[1, 2]', 'top level must be a JSON object'),
}


@pytest.mark.parametrize('split', ['train', 'val'])
@pytest.mark.parametrize('kind', sorted(_BROKEN))
def test_broken_json_names_the_file(cfg, tmp_path, split, kind):
  path = cfg.dataset[f'{split}_annotations']
  content, pattern = _BROKEN[kind]
  if content is None:
    content = open(path, 'rb').read()[:50]
  with open(path, 'wb') as f:
    f.write(content)
  with pytest.raises(ValueError, match=f'{split}.json: {pattern}'):
    _check(cfg, tmp_path)


def test_utf8_bom_is_accepted(cfg, tmp_path):
  path = cfg.dataset.val_annotations
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(b'\xef\xbb\xbf' + data)
  assert len(_check(cfg, tmp_path)['val'].records) == 3


def test_missing_annotation_file_names_the_config_field(cfg, tmp_path):
  cfg.dataset.val_annotations = str(tmp_path / 'nope.json')
  with pytest.raises(config_check.ConfigError,
                     match=r"dataset.val_annotations='.*nope.json': does not exist"):
    _check(cfg, tmp_path)


# ---- records of both splits ----

@pytest.mark.parametrize('field', ['area', 'iscrowd', 'id'])
def test_val_annotation_without_a_field_cocoeval_reads(cfg, tmp_path, field):
  path, data = _json(cfg, 'val')
  del data['annotations'][1][field]
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=rf"val.json: annotation .*\(index 1\): missing field "
                     rf"'{field}'"):
    _check(cfg, tmp_path)


def test_train_annotations_need_no_evaluation_fields(cfg, tmp_path):
  path, data = _json(cfg, 'train')
  for ann in data['annotations']:
    del ann['area'], ann['iscrowd'], ann['id']
  tiny.write_json(path, data)
  assert len(_check(cfg, tmp_path)['train'].records) == 3


def test_val_area_must_be_a_number(cfg, tmp_path):
  path, data = _json(cfg, 'val')
  data['annotations'][0]['area'] = 'big'
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=r"val.json: annotation id 100 \(index 0\): field 'area' "
                     'must be a number'):
    _check(cfg, tmp_path)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_duplicate_annotation_ids(cfg, tmp_path, split):
  path, data = _json(cfg, split)
  data['annotations'][2]['id'] = data['annotations'][0]['id']
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=rf"{split}.json: annotation id 100 \(index 2\): duplicate "
                     r"annotation field 'id' 100 \(also at index 0\)"):
    _check(cfg, tmp_path)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_duplicate_image_ids(cfg, tmp_path, split):
  path, data = _json(cfg, split)
  data['images'][1]['id'] = data['images'][0]['id']
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=rf"{split}.json: image id 1 \(index 1\): duplicate image "
                     r"field 'id' 1"):
    _check(cfg, tmp_path)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_image_listed_twice(cfg, tmp_path, split):
  path, data = _json(cfg, split)
  data['images'].append(dict(data['images'][0], id=99))
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=rf"{split}.json: image id 99 \(index 3\): field "
                     rf"'file_name' '{split}0.png' is already image id 1 \(index 0\)"):
    _check(cfg, tmp_path)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_annotation_of_an_unknown_image(cfg, tmp_path, split):
  path, data = _json(cfg, split)
  data['annotations'][1]['image_id'] = 42
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=rf"{split}.json: annotation id 101 \(index 1\): field "
                     r"'image_id' 42 is not an image"):
    _check(cfg, tmp_path)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_annotation_of_an_unknown_category(cfg, tmp_path, split):
  path, data = _json(cfg, split)
  data['annotations'][1]['category_id'] = 9
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=rf"{split}.json: annotation id 101 \(index 1\): field "
                     r"'category_id' 9 is not a known category id"):
    _check(cfg, tmp_path)


def test_huge_box_is_clipped_and_counted(cfg, tmp_path):
  path, data = _json(cfg, 'train')
  data['annotations'][0]['bbox'] = [0, 0, 1e30, 1e30]
  tiny.write_json(path, data)
  ds = _check(cfg, tmp_path)['train']
  assert ds.stats['clipped'] == 1
  np.testing.assert_allclose(ds.records[0].boxes, [[0, 0, 32, 32]])


# ---- keypoint definitions ----

def test_keypoint_set_passes(kp_cfg, tmp_path):
  ds = _check(kp_cfg, tmp_path)['train']
  assert ds.stats['keypoints_labelled'] == 2 * 3 and ds.stats['keypoints_outside_image'] == 0


def test_joint_order_differs_between_splits(kp_cfg, tmp_path):
  path, data = _json(kp_cfg, 'train')
  data['categories'][0]['keypoints'] = ['nose', 'right_eye', 'left_eye']
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=r"train.json: category id 1 \(index 0\): field "
                     r"'keypoints' lists 3 joints .* \(first difference at joint 1\)"):
    _check(kp_cfg, tmp_path)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_duplicate_joint_names(kp_cfg, tmp_path, split):
  path, data = _json(kp_cfg, split)
  data['categories'][0]['keypoints'] = ['nose', 'nose', 'right_eye']
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=rf"{split}.json: category id 1 \(index 0\): field "
                     r"'keypoints' names joint 'nose' 2 times"):
    _check(kp_cfg, tmp_path)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_non_string_joint_names(kp_cfg, tmp_path, split):
  path, data = _json(kp_cfg, split)
  data['categories'][0]['keypoints'] = ['nose', 7, 'right_eye']
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=rf"{split}.json: category id 1 \(index 0\): field "
                     r"'keypoints': joint 1 must be a non-empty string, got 7"):
    _check(kp_cfg, tmp_path)


def test_skeleton_outside_the_joints(kp_cfg, tmp_path):
  path, data = _json(kp_cfg, 'val')
  data['categories'][0]['skeleton'] = [[1, 4]]
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=r"val.json: category id 1 \(index 0\): field 'skeleton': "
                     r'pair \[1, 4\] must be two joint numbers in 1..3'):
    _check(kp_cfg, tmp_path)


def test_joints_far_outside_the_image_are_unlabelled_and_counted(kp_cfg, tmp_path):
  path, data = _json(kp_cfg, 'train')
  data['annotations'][0]['keypoints'][0:3] = [5000, 8, 2]  # x far right of the 32-pixel image
  data['annotations'][0]['keypoints'][3:6] = [6, -40, 2]
  tiny.write_json(path, data)
  ds = _check(kp_cfg, tmp_path)['train']
  assert ds.stats['keypoints_outside_image'] == 2
  kp = ds.records[0].keypoints[0]
  assert kp[0, 2] == 0 and kp[1, 2] == 0 and kp[2, 2] == 1


def test_separate_keypoint_file_with_other_joints(kp_cfg, tmp_path):
  path, data = _json(kp_cfg, 'val')
  data['categories'][0]['keypoints'] = ['nose', 'left_eye', 'chin']
  kp_path = str(tmp_path / 'val_kps.json')
  tiny.write_json(kp_path, data)
  kp_cfg.dataset.train_keypoint_annotations = kp_path
  kp_cfg.dataset.val_keypoint_annotations = kp_cfg.dataset.val_annotations
  with pytest.raises(ValueError, match=r"val_kps.json: category id 1 \(index 0\): field "
                     r"'keypoints' lists 3 joints .*first difference at joint 2"):
    _check(kp_cfg, tmp_path)


def test_keypoint_file_with_duplicate_annotation_ids(kp_cfg, tmp_path):
  path, data = _json(kp_cfg, 'val')
  data['annotations'][1]['id'] = data['annotations'][0]['id']
  kp_path = str(tmp_path / 'val_kps.json')
  tiny.write_json(kp_path, data)
  kp_cfg.dataset.val_keypoint_annotations = kp_path
  with pytest.raises(ValueError, match=r"val_kps.json: annotation id 100 \(index 1\): duplicate "
                     r"annotation field 'id' 100"):
    _check(kp_cfg, tmp_path)


# ---- image files ----

def _jpeg_bytes(size=32):
  import io  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(buf, 'JPEG')
  return buf.getvalue()


def _replace_image(c, split, index, content):
  path = os.path.join(c.dataset[f'{split}_images'], f'{split}{index}.png')
  with open(path, 'wb') as f:
    f.write(content)
  return path


@pytest.mark.parametrize('split', ['train', 'val'])
def test_truncated_jpeg_is_caught_by_decoding(cfg, tmp_path, split):
  data = _jpeg_bytes()
  _replace_image(cfg, split, 1, data[:len(data) * 2 // 3])
  with pytest.raises(ValueError, match=rf"{split}.json: image id 2 \(index 1\): image file "
                     rf".*{split}1.png.* cannot be read \(TensorFlow cannot decode it"):
    _check(cfg, tmp_path)


def test_header_check_is_the_fast_option_and_misses_broken_data(cfg, tmp_path):
  data = _jpeg_bytes()
  _replace_image(cfg, 'train', 1, data[:len(data) * 2 // 3])
  cfg.dataset.check_images = 'header'
  assert len(_check(cfg, tmp_path)['train'].records) == 3


def test_tiff_that_pil_opens_but_tf_cannot_decode(cfg, tmp_path):
  path = os.path.join(cfg.dataset.train_images, 'train2.png')
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path, 'TIFF')
  with pytest.raises(ValueError, match=r"train.json: image id 3 \(index 2\): image file "
                     r".*train2.png.* cannot be read \(TensorFlow cannot decode it"):
    _check(cfg, tmp_path)


def test_garbage_image_is_skipped_counted_and_listed(cfg, tmp_path):
  _replace_image(cfg, 'train', 0, b'\x89PNG\r\n\x1a\n' + b'garbage' * 20)
  cfg.dataset.skip_bad_images = True
  ds = _check(cfg, tmp_path)['train']
  assert [r.image_id for r in ds.records] == [2, 3] and ds.stats['corrupt_images'] == 1
  listed = (tmp_path / 'work' / startup.SKIPPED_IMAGES).read_text()
  assert 'train0.png' in listed and 'train.json: image id 1 (index 0)' in listed


def test_image_over_the_pixel_limit(cfg, tmp_path):
  cfg.dataset.max_image_pixels = 1000
  with pytest.raises(ValueError, match=r"train.json: image id 1 \(index 0\): image file "
                     r'.*train0.png.* cannot be read \(32x32 = 1024 pixels, more than '
                     r'dataset.max_image_pixels=1000'):
    _check(cfg, tmp_path)


def test_pil_decompression_bomb_guard_is_replaced_by_the_setting(tmp_path):
  path = str(tmp_path / 'wide.png')
  Image.fromarray(np.zeros((4, 3000), np.uint8)).save(path)
  old = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = 1000  # PIL would refuse 12000 pixels (more than twice this)
  try:
    checker = image_check.ImageChecker('decode', max_pixels=20000)
    assert checker([path]) == [((4, 3000), None)]
  finally:
    Image.MAX_IMAGE_PIXELS = old


def test_verdict_cache_answers_a_rerun_and_rechecks_changed_files(cfg, tmp_path):
  cache = str(tmp_path / 'cache.json')
  paths = [os.path.join(cfg.dataset.train_images, f'train{i}.png') for i in range(3)]
  checker = image_check.ImageChecker('decode', max_pixels=10**8, cache_file=cache)
  assert all(err is None for _, err in checker(paths)) and checker.num_checked == 3
  assert all(err is None for _, err in checker(paths)) and checker.num_checked == 0
  data = _jpeg_bytes()
  with open(paths[1], 'wb') as f:
    f.write(data[:100])
  results = checker(paths)
  assert checker.num_checked == 1 and results[1][0] is None and results[1][1]
  header = image_check.ImageChecker('header', max_pixels=10**8, cache_file=cache)
  header(paths)
  assert header.num_checked == 0  # decode verdicts also answer a header check
  other = str(tmp_path / 'not_written.json')
  image_check.ImageChecker('decode', max_pixels=10**8, cache_file=other, write_cache=False)(paths)
  assert not os.path.exists(other)  # processes other than 0 only read the cache


def test_size_disagrees_with_the_json(cfg, tmp_path):
  path = os.path.join(cfg.dataset.val_images, 'val2.png')
  Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(path)
  with pytest.raises(ValueError, match=r"val.json: image id 3 \(index 2\): field 'width' "
                     r'disagrees with image file .*val2.png'):
    _check(cfg, tmp_path)


def test_non_utf8_file_name_is_read(cfg, tmp_path):
  img_dir = cfg.dataset.train_images.encode()
  os.rename(os.path.join(img_dir, b'train1.png'), os.path.join(img_dir, b'caf\xe9.png'))
  path, data = _json(cfg, 'train')
  data['images'][1]['file_name'] = os.fsdecode(b'caf\xe9.png')  # how Python lists that file
  tiny.write_json(path, data)
  datasets = _check(cfg, tmp_path)
  cfg.num_train_steps = 1
  batch = next(pipeline.make_train_iterator(cfg, sources.resolve(cfg), dataset=datasets['train']))
  assert batch['image'].shape == (4, 64, 64, 3)


# ---- images that stop decoding after start-up ----

@pytest.mark.parametrize('cache_decoded', [False, True])
def test_image_broken_after_start_up_stops_naming_it(cfg, tmp_path, cache_decoded):
  cfg.dataset.cache_decoded = cache_decoded
  datasets = _check(cfg, tmp_path)
  data = _jpeg_bytes()
  for i in range(3):
    _replace_image(cfg, 'train', i, data[:len(data) * 2 // 3])
  batches = startup.TrainBatches(cfg, sources.resolve(cfg), start_step=0, process_index=0,
                                 process_count=1, dataset=datasets['train'],
                                 workdir=str(tmp_path / 'work')) if not cache_decoded else None
  with pytest.raises(ValueError, match=r"train.json: image id \d: image file .*train\d.png.* "
                     r"\(field 'file_name'\): TensorFlow cannot decode it.*"
                     'dataset.skip_bad_images=True'):
    it = batches or startup.TrainBatches(
        cfg, sources.resolve(cfg), start_step=0, process_index=0, process_count=1,
        dataset=datasets['train'], workdir=str(tmp_path / 'work'))
    next(it)


@pytest.mark.parametrize('cache_decoded', [False, True])
def test_image_broken_after_start_up_is_skipped_by_name(cfg, tmp_path, cache_decoded):
  cfg.dataset.cache_decoded = cache_decoded
  cfg.dataset.skip_bad_images = True
  datasets = _check(cfg, tmp_path)
  _replace_image(cfg, 'train', 1, b'\xff\xd8\xff' + b'\x00' * 50)
  it = startup.TrainBatches(cfg, sources.resolve(cfg), start_step=0, process_index=0,
                            process_count=1, dataset=datasets['train'],
                            workdir=str(tmp_path / 'work'))
  ids = np.concatenate([next(it)['image_id'] for _ in range(3)])
  assert it.num_skipped == 1 and it.step == 3
  assert 2 not in ids and set(ids) == {1, 3}
  listed = (tmp_path / 'work' / startup.SKIPPED_IMAGES).read_text()
  assert 'train1.png' in listed and 'image id 2' in listed


# ---- configuration ----

def _config_error(c, devices=4, processes=1):
  with pytest.raises(config_check.ConfigError) as e:
    config_check.check_config(c, num_devices=devices, num_processes=processes)
  return str(e.value)


@pytest.mark.parametrize('field, value, pattern', [
    ('keep_checkpoints', 0, 'keep_checkpoints=0: must be >= 1'),
    ('batch_size', 0, 'batch_size=0: must be >= 1'),
    ('eval.batch_size', 0, 'eval.batch_size=0: must be >= 1'),
    ('num_train_steps', 0, 'num_train_steps=0: must be >= 1'),
    ('log_every_steps', 0, 'log_every_steps=0: must be >= 1'),
    ('checkpoint_every_steps', -5, 'checkpoint_every_steps=-5: must be >= 1'),
    ('eval.max_detections', 0, 'eval.max_detections=0: must be >= 1'),
    ('dataset.max_boxes', 0, 'dataset.max_boxes=0: must be >= 1'),
    ('model.width_multiplier', 0.0, r'model.width_multiplier=0.0: must be > 0'),
    ('optimizer.warmup_steps', -1, r'optimizer.warmup_steps=-1: must be >= 0'),
    ('optimizer.learning_rate', 0.0, r'optimizer.learning_rate=0.0: must be > 0'),
    ('optimizer.manual_rates', ('abc',), r"optimizer.manual_rates=\('abc',\): every element "
                                         'must be a number'),
    ('input.augmentations', 'random_adjust_contrast(1.2, 0.8)',
     r'input.augmentations: op 0 random_adjust_contrast: min_delta=1.2, max_delta=0.8: must be'),
    ('input.augmentations', 'random_horizontal_flip|random_adjust_hue(0.7)',
     r'input.augmentations: op 1 random_adjust_hue: max_delta=0.7: must be in \[0, 0.5\]'),
    ('input.augmentations', 'random_flip', r"input.augmentations: op 0 'random_flip': unknown op"),
    ('input.augmentations', 'random_crop_image(area=0.5)',
     r"op 0 'random_crop_image\(area=0.5\)': no argument 'area'"),
    ('input.augmentations', 'random_crop_image(area_range=(0.2, 1.5))',
     r'op 0 random_crop_image: area_range=\(0.2, 1.5\): must be two numbers'),
    ('input.size', 30, 'input.size=30: must be a multiple of 4'),
    ('input.augmentations', 'random_crop_image(random_coef=1.5)',
     r'random_crop_image: random_coef=1.5: must be a number in \[0, 1\]'),
    ('targets.min_overlap', 1.0, 'targets.min_overlap=1.0: must be strictly between 0 and 1'),
    ('dataset.check_images', 'decoded', r"dataset.check_images='decoded': must be one of "
                                        r".* \(did you mean 'decode'\?\)"),
    ('model.backbone', 'resnet', "model.backbone='resnet': must be one of"),
    ('model.depth', 19, r"model.depth=19: model.backbone='resnet_v1_fpn' has depths"),
    ('model.dtype', 'float16', "model.dtype='float16': must be one of"),
    ('mesh.fsdp', 3, 'mesh.fsdp=3: must be >= 1 and divide the 4 devices'),
    ('batch_size', 6, r'batch_size=6: must be divisible by the 4 devices of the mesh'),
    ('eval.batch_size', 2, r'eval.batch_size=2: must be divisible by the 4 devices'),
])
def test_config_value_is_checked(field, value, pattern):
  c = tiny.tiny_config('unused')
  *parents, name = field.split('.')
  section = c
  for p in parents:
    section = section[p]
  with section.ignore_type():
    section[name] = value
  assert pattern and __import__('re').search(pattern, _config_error(c))


def test_config_type_mismatch_from_an_experiment_file():
  c = tiny.tiny_config('unused')
  with c.ignore_type():
    c.batch_size = '16'
  assert "batch_size='16': must be an integer" in _config_error(c)


def test_config_batch_not_divisible_by_processes():
  c = tiny.tiny_config('unused')
  c.batch_size = 6
  c.eval.batch_size = 4
  assert 'batch_size=6: must be divisible by the 4 processes' in _config_error(
      c, devices=2, processes=4) or 'must be divisible' in _config_error(c, devices=2,
                                                                        processes=4)


def test_unknown_field_in_an_experiment_file_names_the_nearest():
  c = tiny.tiny_config('unused')
  c.dataset.skip_bad_image = True
  assert ("dataset.skip_bad_image: not a config field (did you mean "
          "'dataset.skip_bad_images'?)") in _config_error(c)


def test_unknown_override_names_the_nearest():
  c = config_base.base_config()
  assert config_check.unknown_overrides(c, ['config.optimizer.learning_rte', 'config.batch_size',
                                            'config.foo']) == [
      "--config.optimizer.learning_rte: the config has no field 'optimizer.learning_rte' (did "
      "you mean 'optimizer.learning_rate'?)",
      "--config.foo: the config has no field 'foo'"]


def test_every_experiment_file_passes_the_config_check():
  import glob  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(os.path.dirname(__file__), '..', 'experiments', '*.py')))
  assert files
  for f in files:
    config_check.check_config(experiments.load_config(f), num_devices=1, num_processes=1)


def test_num_classes_that_disagrees_with_the_dataset(cfg, tmp_path):
  cfg.model.num_classes = 3
  with pytest.raises(config_check.ConfigError, match=r'model.num_classes=3: the dataset \(.*'
                     r'val.json\) has 2 class channels'):
    _check(cfg, tmp_path)
  cfg.model.num_classes = 2
  _check(cfg, tmp_path)


def test_zoo_layout_keeps_the_models_channels_on_a_subset_of_its_categories(cfg, tmp_path):
  """id_minus_one: a 90-channel model (a zoo archive) on a set whose max id is 2 keeps its 90
  channels, those past id 2 unused; fewer channels than the max id are still refused."""
  cfg.dataset.label_map_mode = 'id_minus_one'
  cfg.model.num_classes = 90
  facts, datasets = startup.check_before_build(cfg, str(tmp_path / 'work'))
  assert facts.num_classes == 90
  ids = facts.label_map.channel_to_id_array
  assert list(ids[:2]) == [1, 2] and len(ids) == 90 and (ids[2:] == -1).all()
  assert len(datasets['val'].records) == 3
  cfg.model.num_classes = 1
  with pytest.raises(config_check.ConfigError,
                     match=r'model.num_classes=1: the dataset .* has 2 class channels'):
    _check(cfg, tmp_path)


def test_training_split_without_usable_images(cfg, tmp_path):
  for i in range(3):
    _replace_image(cfg, 'train', i, b'not an image')
  cfg.dataset.skip_bad_images = True
  with pytest.raises(ValueError, match=r'train.json: the training split has no usable images '
                     r'\(3 skipped as unreadable\)'):
    _check(cfg, tmp_path)


def test_workdir_that_cannot_be_written(cfg, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(config_check.ConfigError, match=r'workdir .*file/work: cannot be written'):
    startup.check_before_build(cfg, str(blocker / 'work'))


def test_val_image_broken_after_start_up_names_the_file_during_evaluation(cfg, tmp_path):
  datasets = _check(cfg, tmp_path)
  data = _jpeg_bytes()
  _replace_image(cfg, 'val', 2, data[:len(data) // 2])
  inner, num_batches = pipeline.make_eval_iterator(cfg, sources.resolve(cfg),
                                                   dataset=datasets['val'])
  batches = startup.EvalBatches(inner, datasets['val'])
  assert num_batches == 1 and batches.num_examples == len(datasets['val'].records)
  with pytest.raises(ValueError, match=r"val.json: image id 3: image file .*val2.png.* \(field "
                     r"'file_name'\): .* -- during evaluation"):
    list(batches)


def test_trainer_checks_before_building_the_model(cfg, tmp_path, monkeypatch):
  from centernet_jax import models  # pylint: disable=g-import-not-at-top
  from centernet_jax import train  # pylint: disable=g-import-not-at-top

  def no_model(*args, **kwargs):
    raise AssertionError('the model was built before the data was checked')

  monkeypatch.setattr(models, 'build_model', no_model)
  path, data = _json(cfg, 'val')
  del data['annotations'][0]['area']
  tiny.write_json(path, data)
  with pytest.raises(ValueError, match=r"val.json: annotation id 100 \(index 0\): missing field "
                     "'area'"):
    train.Trainer(cfg, str(tmp_path / 'work'))
  cfg.keep_checkpoints = 0
  with pytest.raises(config_check.ConfigError, match='keep_checkpoints=0: must be >= 1'):
    train.train_and_evaluate(cfg, str(tmp_path / 'work'))


def test_tfds_source_checks_its_val_ground_truth_json(cfg, tmp_path):
  path, data = _json(cfg, 'val')
  data['annotations'][2]['id'] = data['annotations'][1]['id']
  data['categories'] = [{'id': 1, 'name': 'person'}, {'id': 2, 'name': 'bicycle'}]
  tiny.write_json(path, data)
  cfg.dataset.source = 'tfds'
  with pytest.raises(ValueError, match=r"val.json: annotation id 101 \(index 2\): duplicate "
                     "annotation field 'id'"):
    _check(cfg, tmp_path)
