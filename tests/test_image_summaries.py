"""TensorBoard images at evaluation: drawn from the val batch, written by clu, never fatal."""

import io

import jax
import numpy as np
import pytest
import tensorflow as tf
from clu import metric_writers
from PIL import Image

from centernet_jax import evaluate
from centernet_jax import image_summaries
from centernet_jax import sharding
from centernet_jax import visualize
from centernet_jax.data import pipeline
from centernet_jax.data import sources

from tests import tiny


class _Writer:
  def __init__(self):
    self.images = {}

  def write_images(self, step, images):
    self.images[step] = images


def _pieces(config):
  mesh = sharding.make_mesh(config.mesh)
  facts = sources.resolve(config)
  label_map, num_classes = facts.label_map, facts.num_classes
  spec = facts.keypoint_spec
  # The real module takes minutes to compile on a loaded 2-core CPU; the heads' form is what
  # the summaries need.
  model = tiny.FakeCenterNet(num_classes, spec.num_keypoints if spec else 0)
  variables = model.init()
  fn = image_summaries.make_summary_fn(model, config, num_classes, spec,
                                       evaluate.keypoint_decode_params(spec, config))
  eval_iter, _ = pipeline.make_eval_iterator(config, facts)
  return dict(summary_fn=fn, variables=variables, eval_iterator=eval_iter, mesh=mesh,
              class_names=label_map.to_json_dict()['names'], config=config,
              keypoint_spec=spec)


@pytest.mark.parametrize('keypoints', [False, True])
def test_summaries_show_predictions_next_to_the_train_targets(tmp_path, keypoints):
  config = (tiny.tiny_keypoint_config if keypoints else tiny.tiny_config)(tmp_path / 'data')
  config.eval.num_image_summaries = 3
  pieces = _pieces(config)
  writer = _Writer()
  assert image_summaries.write_image_summaries(writer, 5, **pieces)
  stack = writer.images[5][image_summaries.SUMMARY_KEY]
  assert stack.dtype == np.uint8 and stack.ndim == 4 and stack.shape[0] == 3
  panels = 6 if keypoints else 4
  assert stack.shape[2] > panels * 64 * visualize.display_scale(64, 64)

  batch = next(iter(pieces['eval_iterator']))
  keys = image_summaries.BOX_KEYS + (image_summaries.KEYPOINT_KEYS if keypoints else ())
  result = jax.device_get(pieces['summary_fn'](pieces['variables'],
                                               sharding.to_global(batch, pieces['mesh'], keys)))
  has_boxes = batch['box_mask'].sum(axis=1) > 0
  assert has_boxes.any()
  # The train step's targets: exactly 1 at each box center, nothing for an image without boxes.
  np.testing.assert_allclose(result['target_heatmap'].max(axis=(1, 2)),
                             np.where(has_boxes, 1.0, 0.0), atol=1e-6)
  assert result['pred_heatmap'].shape == (len(has_boxes), 16, 16)
  assert 0.0 < result['pred_heatmap'].min() and result['pred_heatmap'].max() < 1.0
  assert result['pred_heatmap'].std() > 0.01
  if keypoints:
    assert result['target_keypoint_heatmap'].max() == pytest.approx(1.0)


def test_a_drawing_problem_is_logged_not_raised(tmp_path, monkeypatch):
  config = tiny.tiny_config(tmp_path / 'data')
  pieces = _pieces(config)

  def broken(*args, **kwargs):
    raise ValueError('bad colour')

  monkeypatch.setattr(visualize, 'overlay_heatmap', broken)
  writer = _Writer()
  assert not image_summaries.write_image_summaries(writer, 1, **pieces)
  assert writer.images == {}


def test_an_empty_val_set_is_skipped(tmp_path):
  config = tiny.tiny_config(tmp_path / 'data')
  pieces = _pieces(config)
  pieces['eval_iterator'] = []
  assert not image_summaries.write_image_summaries(_Writer(), 1, **pieces)


def _event_images(workdir):
  found = {}
  for path in sorted(workdir.glob('events.out.tfevents*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == image_summaries.SUMMARY_KEY:
          encoded = tf.make_ndarray(value.tensor)[2:]  # width, height, then the PNGs
          found[event.step] = [Image.open(io.BytesIO(png)) for png in encoded]
  return found


def test_the_images_reach_tensorboard_through_clu(tmp_path):
  config = tiny.tiny_config(tmp_path / 'data')
  config.eval.num_image_summaries = 2
  writer = metric_writers.create_default_writer(str(tmp_path / 'run'), asynchronous=True)
  assert image_summaries.write_image_summaries(writer, 7, **_pieces(config))
  writer.flush()
  images = _event_images(tmp_path / 'run')
  assert list(images) == [7] and len(images[7]) == 2
  assert images[7][0].size[0] > 4 * 64
