"""COCO-JSON reader and LabelMap."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from centernet_jax.data import coco_json

CATS = [{'id': 3, 'name': 'c3'}, {'id': 1, 'name': 'c1'}, {'id': 7, 'name': 'c7'}]


def _write_png(path, h, w, mode='RGB'):
  arr = np.zeros((h, w, {'RGB': 3, 'RGBA': 4, 'L': 1}[mode]), np.uint8)
  Image.fromarray(arr.squeeze(-1) if mode == 'L' else arr, mode).save(path)


def _make(tmp_path, images, annotations, categories=CATS, write_images=True):
  img_dir = tmp_path / 'img'
  img_dir.mkdir(exist_ok=True)
  if write_images:
    for im in images:
      _write_png(img_dir / im['file_name'], im['height'], im['width'])
  ann = tmp_path / 'instances_val.json'
  ann.write_text(json.dumps({'images': images, 'annotations': annotations,
                             'categories': categories}))
  return str(ann), str(img_dir)


def _img(i, h=20, w=30):
  return {'id': i, 'file_name': f'{i}.png', 'height': h, 'width': w}


def _ann(aid, iid, cid, bbox, crowd=0):
  return {'id': aid, 'image_id': iid, 'category_id': cid, 'bbox': bbox, 'iscrowd': crowd,
          'area': 1.0}


def test_label_map_contiguous_and_id_minus_one():
  lm = coco_json.LabelMap(CATS, 'contiguous')
  assert lm.ids == (1, 3, 7) and lm.num_channels == 3
  assert [lm.id_to_channel(i) for i in (1, 3, 7)] == [0, 1, 2]
  assert [lm.channel_to_id(c) for c in range(3)] == [1, 3, 7]
  assert lm.channel_to_name(2) == 'c7' and lm.id_to_name(3) == 'c3'
  np.testing.assert_array_equal(lm.channel_to_id_array, [1, 3, 7])
  lm2 = coco_json.LabelMap(CATS, 'id_minus_one')
  assert lm2.num_channels == 7
  assert [lm2.id_to_channel(i) for i in (1, 3, 7)] == [0, 2, 6]
  assert lm2.channel_to_id(6) == 7
  np.testing.assert_array_equal(lm2.channel_to_id_array, [1, -1, 3, -1, -1, -1, 7])
  with pytest.raises(ValueError, match='channel 1 has no category'):
    lm2.channel_to_id(1)
  with pytest.raises(ValueError, match='unknown category id 5'):
    lm.id_to_channel(5)
  with pytest.raises(ValueError, match='label_map_mode'):
    coco_json.LabelMap(CATS, 'bogus')
  d = json.loads(json.dumps(lm2.to_json_dict()))
  assert d['names'] == ['c1', 'unused_2', 'c3', 'unused_4', 'unused_5', 'unused_6', 'c7']
  assert d['category_ids'] == [1, -1, 3, -1, -1, -1, 7] and d['num_channels'] == 7
  assert coco_json.LabelMap.from_json_dict(d) == lm2
  assert coco_json.LabelMap.from_json_dict(lm.to_json_dict()) == lm


def test_id_minus_one_label_map_with_more_channels_than_its_max_id():
  """A zoo model's 90 channels on a set naming ids up to 7: channels past 7 are unused."""
  lm = coco_json.LabelMap(CATS, 'id_minus_one', 90)
  assert lm.num_channels == 90 and lm.id_to_channel(7) == 6
  np.testing.assert_array_equal(lm.channel_to_id_array[:7], [1, -1, 3, -1, -1, -1, 7])
  assert (lm.channel_to_id_array[7:] == -1).all() and len(lm.channel_to_id_array) == 90
  d = json.loads(json.dumps(lm.to_json_dict()))
  assert d['num_channels'] == 90 and d['names'][89] == 'unused_90'
  back = coco_json.LabelMap.from_json_dict(d)
  assert back.num_channels == 90 and back == lm
  with pytest.raises(ValueError, match=r'num_channels 6 does not fit .* ids \[1, 3, 7\]'):
    coco_json.LabelMap(CATS, 'id_minus_one', 6)
  with pytest.raises(ValueError, match='num_channels 4 does not fit'):
    coco_json.LabelMap(CATS, 'contiguous', 4)
  with pytest.raises(ValueError, match='label map: num_channels 5 does not fit'):
    coco_json.LabelMap.from_json_dict(dict(d, num_channels=5))


def test_records_crowd_empty_degenerate(tmp_path):
  images = [_img(10), _img(11), _img(12, 40, 16)]
  anns = [
      _ann(1, 10, 3, [2.0, 4.0, 10.0, 6.0]),
      _ann(2, 10, 7, [25.0, 15.0, 10.0, 10.0]),  # clipped to x 25..30, y 15..20
      _ann(3, 10, 1, [0, 0, 30, 20], crowd=1),  # crowd: excluded
      _ann(4, 12, 1, [5, 5, 0, 3]),  # zero width: degenerate
      _ann(5, 12, 1, [20, 5, 4, 3]),  # x 20..24 outside 16 wide image: degenerate
      _ann(6, 12, 7, [1, 2, 3, 4]),
  ]
  ann, img_dir = _make(tmp_path, images, anns)
  ds = coco_json.load_coco_json(ann, img_dir)
  assert [r.image_id for r in ds.records] == [10, 11, 12]
  r0, r1, r2 = ds.records
  np.testing.assert_allclose(r0.boxes, [[4, 2, 10, 12], [15, 25, 20, 30]])
  np.testing.assert_array_equal(r0.classes, [1, 2])
  assert r0.num_crowd == 1 and r0.height == 20 and r0.width == 30
  assert r0.path == os.path.join(img_dir, '10.png')
  assert r1.boxes.shape == (0, 4) and r1.classes.shape == (0,)  # empty image kept
  np.testing.assert_allclose(r2.boxes, [[2, 1, 6, 4]])
  assert r2.num_degenerate == 2
  assert ds.stats['crowd'] == 1 and ds.stats['degenerate'] == 2
  assert ds.stats['images_without_objects'] == 1 and ds.stats['boxes'] == 3
  # id_minus_one channels.
  ds2 = coco_json.load_coco_json(ann, img_dir, label_map_mode='id_minus_one')
  np.testing.assert_array_equal(ds2.records[0].classes, [2, 6])


@pytest.mark.parametrize('bad, pattern', [
    ({'bbox': [1, 2]}, r"annotation id 17 \(index 0\): field 'bbox' must be 4 numbers, got \[1, 2\]"),
    ({'bbox': [1, 2, 'a', 4]}, r"annotation id 17 \(index 0\): field 'bbox' must be 4 numbers"),
    ({'category_id': 5}, r"annotation id 17 \(index 0\): field 'category_id' 5 is not a known"),
    ({'image_id': 99}, r"annotation id 17 \(index 0\): field 'image_id' 99 is not an image"),
    ({'iscrowd': 2}, r"annotation id 17 \(index 0\): field 'iscrowd' must be 0 or 1"),
])
def test_malformed_annotation(tmp_path, bad, pattern):
  a = _ann(17, 10, 3, [1, 1, 2, 2])
  a.update(bad)
  ann, img_dir = _make(tmp_path, [_img(10)], [a])
  with pytest.raises(ValueError, match='instances_val.json: ' + pattern):
    coco_json.load_coco_json(ann, img_dir)


def test_missing_fields(tmp_path):
  a = _ann(17, 10, 3, [1, 1, 2, 2])
  del a['bbox']
  ann, img_dir = _make(tmp_path, [_img(10)], [a])
  with pytest.raises(ValueError, match=r"instances_val.json: annotation id 17 \(index 0\): "
                     r"missing field 'bbox'"):
    coco_json.load_coco_json(ann, img_dir)
  im = _img(10)
  del im['width']
  ann, img_dir = _make(tmp_path, [im], [], write_images=False)
  with pytest.raises(ValueError, match=r"image id 10 \(index 0\): missing field 'width'"):
    coco_json.load_coco_json(ann, img_dir)
  ann, img_dir = _make(tmp_path, [_img(10)], [], categories=[{'id': 1}])
  with pytest.raises(ValueError, match=r"category id 1 \(index 0\): missing field 'name'"):
    coco_json.load_coco_json(ann, img_dir)
  (tmp_path / 'x.json').write_text('{"images": [], ')
  with pytest.raises(ValueError, match='x.json: not valid JSON'):
    coco_json.load_coco_json(str(tmp_path / 'x.json'), img_dir)


def test_missing_and_corrupt_image(tmp_path):
  ann, img_dir = _make(tmp_path, [_img(10), _img(11)], [])
  os.remove(os.path.join(img_dir, '11.png'))
  with pytest.raises(ValueError, match=r"image id 11 \(index 1\): image file .*11.png.* does "
                     'not exist'):
    coco_json.load_coco_json(ann, img_dir)
  # Garbage bytes.
  with open(os.path.join(img_dir, '11.png'), 'wb') as f:
    f.write(b'not an image at all' * 10)
  with pytest.raises(ValueError, match=r"image id 11 \(index 1\): image file .*11.png.* cannot "
                     'be read'):
    coco_json.load_coco_json(ann, img_dir)
  # Truncated PNG (valid header).
  good = open(os.path.join(img_dir, '10.png'), 'rb').read()
  _write_png(os.path.join(img_dir, '11.png'), 20, 30)
  data = open(os.path.join(img_dir, '11.png'), 'rb').read()
  with open(os.path.join(img_dir, '11.png'), 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(ValueError, match=r'11.png.* cannot be read'):
    coco_json.load_coco_json(ann, img_dir)
  ds = coco_json.load_coco_json(ann, img_dir, skip_bad_images=True)
  assert [r.image_id for r in ds.records] == [10]
  assert ds.stats['corrupt_images'] == 1
  assert good  # the other file is untouched


def test_size_mismatch(tmp_path):
  ann, img_dir = _make(tmp_path, [_img(10)], [])
  _write_png(os.path.join(img_dir, '10.png'), 20, 31)
  with pytest.raises(ValueError, match=r"image id 10 \(index 0\): field 'width' disagrees with "
                     r'image file .*10.png.*width=30.*width=31'):
    coco_json.load_coco_json(ann, img_dir)
  ds = coco_json.load_coco_json(ann, img_dir, skip_bad_images=True)
  assert not ds.records and ds.stats['size_mismatch_images'] == 1


def test_grayscale_rgba_headers_ok(tmp_path):
  images = [_img(1), _img(2)]
  ann, img_dir = _make(tmp_path, images, [], write_images=False)
  _write_png(os.path.join(img_dir, '1.png'), 20, 30, 'L')
  _write_png(os.path.join(img_dir, '2.png'), 20, 30, 'RGBA')
  ds = coco_json.load_coco_json(ann, img_dir)
  assert len(ds.records) == 2
