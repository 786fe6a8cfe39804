"""Test-time augmentation behind predict.make_predict_fn: flip, multi-scale, the config."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import config_base
from centernet_jax import config_check
from centernet_jax import decoder
from centernet_jax import evaluate
from centernet_jax import keypoint_spec as kps
from centernet_jax import performance
from centernet_jax import predict
from centernet_jax import sharding
from centernet_jax import tta
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from tests import test_nms
from tests import tiny

JOINTS = ('nose', 'left_eye', 'right_eye', 'left_wrist', 'right_wrist')
PERM = kps.flip_permutation_from_names(JOINTS)  # (0, 2, 1, 4, 3)
SIDE = {0: 0, 1: 1, 2: -1, 3: 1, 4: -1}  # +1 left, -1 right, 0 centre


def _blocks(images, channel):
  b, s = images.shape[0], images.shape[1]
  return images[..., channel].reshape(b, s // 4, 4, s // 4, 4).mean(axis=(2, 4)) / 255.0


def _shift_x(p, s):
  """out[..., i] = p[..., i + s], zero outside."""
  if s == 0:
    return p
  w = p.shape[-1]
  padded = jnp.pad(p, [(0, 0)] * (p.ndim - 1) + [(abs(s), abs(s))])
  return padded[..., abs(s) + s:abs(s) + s + w]


class MirrorEquivariantFake:
  """Heads that a perfectly flip-consistent network would give (the project's conventions):
  mirroring the image mirrors the center heatmap and sizes, renames the joints through PERM
  and turns a joint regression's x into 1 - x. Flip TTA must then change nothing."""

  num_classes = 2

  def apply(self, variables, images, train=False):
    del variables, train
    p = _blocks(images, 0)
    q = _blocks(images, 1)
    g = _shift_x(q, 1) - _shift_x(q, -1)  # antisymmetric under the mirror
    heads = {
        'object_center': jnp.stack([8.0 * p - 3.0, 5.0 * p - 3.0], axis=-1),
        'box/scale': jnp.stack([2.0 + 4.0 * q, 3.0 + 2.0 * q], axis=-1),
        'box/offset': jnp.stack([q, p], axis=-1),  # read from the direct pass only
    }
    prefix = 'human_pose/keypoint/'
    heads[prefix + 'heatmap'] = jnp.stack([6.0 * _shift_x(p, SIDE[j]) - 2.0
                                           for j in range(len(JOINTS))], axis=-1)
    heads[prefix + 'offset'] = jnp.stack([q, p] * len(JOINTS), axis=-1)
    reg = []
    for j in range(len(JOINTS)):
      reg += [3.0 * q + abs(SIDE[j]), 0.5 + 2.0 * SIDE[j] + g]
    heads[prefix + 'regression'] = jnp.stack(reg, axis=-1)
    return [heads]


def _keypoint_params():
  return decoder.KeypointDecodeParams(task_name='human_pose', class_channel=0,
                                      num_candidates=20)


def _batch(rng, b=2, s=32, true_size=None, original_size=None):
  """Evaluation-like canvases: random images of `true_size`, zero padding bottom/right."""
  true_size = np.asarray(true_size or [[s, s]] * b)
  image = rng.uniform(0, 255, (b, s, s, 3))
  for i, (h, w) in enumerate(true_size):
    image[i, h:] = 0.0
    image[i, :, w:] = 0.0
  return {'image': jnp.asarray(image, jnp.float32),
          'true_size': jnp.asarray(true_size, jnp.int32),
          'original_size': jnp.asarray(original_size or [[s, s]] * b, jnp.int32)}


def _config(mode, **eval_fields):
  c = config_base.base_config()
  c.eval.tta = mode
  for k, v in eval_fields.items():
    c.eval[k] = v
  return c


def test_none_is_exactly_the_plain_network_and_decoder():
  assert predict.tta_params(_config('none')) is None
  model = tiny.FakeCenterNet(num_classes=3, num_joints=2)
  variables = model.init()
  batch = _batch(np.random.default_rng(0), true_size=[[32, 24], [20, 32]],
                 original_size=[[64, 48], [50, 80]])
  kp = decoder.KeypointDecodeParams(task_name='human_pose', class_channel=1, num_candidates=8)
  got = predict.make_predict_fn(model, input_size=32, max_detections=10, keypoint_params=kp,
                                tta=predict.tta_params(_config('none')))(variables, batch)

  # make_predict_fn as it was before TTA existed, compiled with the same XLA options
  @functools.partial(jax.jit, compiler_options=performance.compiler_options())
  def before(variables, batch):
    return decoder.decode_detections(
        model.apply(variables, batch['image'])[-1], true_size=batch['true_size'],
        original_size=batch['original_size'], input_size=32, max_detections=10,
        keypoint_params=kp)

  want = before(variables, batch)
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)


def test_flip_changes_nothing_for_a_flip_consistent_network():
  model = MirrorEquivariantFake()
  batch = _batch(np.random.default_rng(1), true_size=[[32, 32], [32, 28]],
                 original_size=[[64, 64], [40, 35]])
  kw = dict(input_size=32, max_detections=12, keypoint_params=_keypoint_params())
  spec = tta.TTAParams(flip=True, flip_permutation=PERM)
  plain = predict.make_predict_fn(model, **kw)({}, batch)
  flipped = predict.make_predict_fn(model, tta=spec, **kw)({}, batch)
  np.testing.assert_array_equal(flipped['classes'], plain['classes'])
  for key in ('scores', 'boxes', 'keypoints', 'keypoint_scores'):
    np.testing.assert_allclose(flipped[key], plain[key], rtol=1e-5, atol=1e-4, err_msg=key)
  assert float(jnp.abs(plain['keypoints']).max()) > 1.0  # joints were decoded at all

  # The same network with the joints NOT renamed (identity permutation) disagrees with itself.
  wrong = tta.TTAParams(flip=True, flip_permutation=tuple(range(len(JOINTS))))
  bad = predict.make_predict_fn(model, tta=wrong, **kw)({}, batch)
  assert not np.allclose(bad['keypoints'], plain['keypoints'], atol=1e-2)


def _np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_flip_averages_the_mirrored_pass_as_the_reference_does():
  """A network without any symmetry: the flip-averaged heads equal a numpy reference built
  from its two passes (heatmaps averaged as probabilities, sizes averaged, joints renamed
  and the regression's x mirrored, offsets from the direct pass)."""
  model = tiny.FakeCenterNet(num_classes=2, num_joints=len(JOINTS))
  variables = model.init()
  rng = np.random.default_rng(2)
  images = jnp.asarray(rng.uniform(0, 255, (2, 32, 32, 3)), jnp.float32)
  direct = {k: np.asarray(v) for k, v in model.apply(variables, images)[-1].items()}
  mirror = {k: np.asarray(v)[:, :, ::-1] for k, v in
            model.apply(variables, images[:, :, ::-1])[-1].items()}
  # FakeCenterNet's joint heads are the same for every joint: make them differ, then rename.
  for heads in (direct, mirror):
    heads['human_pose/keypoint/regression'] = heads['human_pose/keypoint/regression'] * (
        1.0 + np.arange(2 * len(JOINTS)))
  params = tta.TTAParams(flip=True, flip_permutation=PERM)

  @jax.jit
  def average(direct, mirrored):
    full = jnp.full((2, 2), 32)
    return tta.average_flip(direct, tta.unflip_heads(mirrored, full, params), params)

  got = average({k: jnp.asarray(v) for k, v in direct.items()},
                {k: jnp.asarray(v[:, :, ::-1]) for k, v in mirror.items()})

  want_center = (_np_sigmoid(direct['object_center']) + _np_sigmoid(mirror['object_center'])) / 2
  np.testing.assert_allclose(_np_sigmoid(got['object_center']), want_center, rtol=1e-5)
  np.testing.assert_allclose(got['box/scale'], (direct['box/scale'] + mirror['box/scale']) / 2,
                             rtol=1e-6)
  np.testing.assert_array_equal(got['box/offset'], direct['box/offset'])
  hm = 'human_pose/keypoint/heatmap'
  want_hm = (_np_sigmoid(direct[hm]) + _np_sigmoid(mirror[hm][..., list(PERM)])) / 2
  np.testing.assert_allclose(_np_sigmoid(got[hm]), want_hm, rtol=1e-5)
  reg = 'human_pose/keypoint/regression'
  m = mirror[reg].reshape(2, 8, 8, len(JOINTS), 2)[..., list(PERM), :]
  m = np.stack([m[..., 0], 1.0 - m[..., 1]], axis=-1).reshape(2, 8, 8, -1)
  np.testing.assert_allclose(got[reg], (direct[reg] + m) / 2, rtol=1e-6)
  off = 'human_pose/keypoint/offset'
  np.testing.assert_array_equal(got[off], direct[off])


def test_the_mirror_flips_the_image_and_keeps_the_padding_right():
  rng = np.random.default_rng(5)
  images = rng.uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
  true_size = np.array([[16, 16], [10, 12], [16, 9]])  # widths 16, 12, 9 -> 16, 12, 12
  both = np.asarray(tta.mirror_images(jnp.asarray(images), jnp.asarray(true_size)))
  assert both.shape == (6, 16, 16, 3)
  np.testing.assert_array_equal(both[:3], images)
  np.testing.assert_array_equal(both[3], images[0, :, ::-1])
  for i, w in ((4, 12), (5, 12)):
    np.testing.assert_array_equal(both[i, :, :w], images[i - 3, :, w - 1::-1])
    np.testing.assert_array_equal(both[i, :, w:], images[i - 3, :, w:])
  # On the output grid (stride 4): cells 0..w/4 - 1 reversed, the padding cells kept.
  heads = jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32)
  back = tta.unflip_heads({'object_center': heads, 'box/scale': heads}, true_size,
                          tta.TTAParams(flip=True))
  np.testing.assert_array_equal(back['object_center'][1], np.asarray(heads)[1][:, [2, 1, 0, 3]])
  np.testing.assert_array_equal(back['box/scale'][0], np.asarray(heads)[0][:, ::-1])
  np.testing.assert_array_equal(tta.mirrored_width(jnp.asarray([28.000002, 14.0, 3.0, 64.0])),
                                [7, 4, 1, 16])


def test_mean_probability_logits_stays_finite_at_saturation():
  a = jnp.asarray([40.0, -40.0, 0.0, 200.0])
  b = jnp.asarray([40.0, -40.0, 2.0, -200.0])
  out = tta.mean_probability_logits(a, b)
  assert bool(jnp.isfinite(out).all())
  np.testing.assert_allclose(jax.nn.sigmoid(out), (jax.nn.sigmoid(a) + jax.nn.sigmoid(b)) / 2,
                             rtol=1e-6)


def test_scaled_sides_and_backbone_multiples():
  assert tta.scaled_sides(96, (0.5, 0.75, 1.0, 1.25, 1.5), 32) == (64, 96, 128)
  assert tta.scaled_sides(512, (0.5, 0.75, 1.0, 1.25, 1.5), 128) == (256, 384, 512, 640, 768)
  assert tta.scaled_sides(64, (0.1,), 32) == (32,)
  c = config_base.base_config()
  assert tta.input_multiple(c.model) == 32
  c.model.backbone = 'hourglass'
  assert tta.input_multiple(c.model) == 128
  with pytest.raises(ValueError, match='tta_scales'):
    tta.scaled_sides(64, (1.0, -0.5), 32)


class OneRectangleDetector:
  """Finds the one bright rectangle of channel 0 at whatever side it is given and reports it
  as a perfect CenterNet would (one class, center peak logit 10 elsewhere -10, exact size and
  offset): its detections at every scale should land on the same original-pixel box."""

  def apply(self, variables, images, train=False):
    del variables, train
    b, s = images.shape[0], images.shape[1]
    mask = images[..., 0] > 127.5
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    ymin = jnp.argmax(rows, axis=1)
    ymax = s - jnp.argmax(rows[:, ::-1], axis=1)
    xmin = jnp.argmax(cols, axis=1)
    xmax = s - jnp.argmax(cols[:, ::-1], axis=1)
    cy, cx = (ymin + ymax) / 8.0, (xmin + xmax) / 8.0  # output pixels (stride 4)
    h, w = (ymax - ymin) / 4.0, (xmax - xmin) / 4.0
    n = s // 4
    grid_y = jnp.arange(n)[None, :, None]
    grid_x = jnp.arange(n)[None, None, :]
    peak = (grid_y == jnp.floor(cy)[:, None, None]) & (grid_x == jnp.floor(cx)[:, None, None])
    full = lambda v: jnp.broadcast_to(v[:, None, None], (b, n, n))
    return [{'object_center': jnp.where(peak, 10.0, -10.0)[..., None],
             'box/scale': jnp.stack([full(h), full(w)], axis=-1),
             'box/offset': jnp.stack([full(cy - jnp.floor(cy)), full(cx - jnp.floor(cx))],
                                     axis=-1)}]


def test_multiscale_maps_every_scale_back_to_the_same_box():
  # Canvas 64; the image fills 48 x 64 of it (zero padding below) and was 96 x 128 originally.
  image = np.zeros((1, 64, 64, 3), np.float32)
  image[0, 16:40, 8:32, 0] = 255.0
  batch = {'image': jnp.asarray(image), 'true_size': jnp.asarray([[48, 64]]),
           'original_size': jnp.asarray([[96, 128]])}
  want = np.array([32.0, 16.0, 80.0, 64.0])  # canvas box x 2
  model = OneRectangleDetector()
  for method in ('hard', 'soft'):
    params = tta.TTAParams(scales=(0.5, 1.0, 1.5), size_multiple=32, nms=method)
    out = jax.device_get(predict.make_predict_fn(model, input_size=64, max_detections=20,
                                                 tta=params)({}, batch))
    np.testing.assert_allclose(out['boxes'][0, 0], want, atol=2.0)
    assert out['scores'][0, 0] > 0.99
    # The duplicates of the other two scales overlap it: suppressed (hard) or decayed (soft).
    assert np.all(out['scores'][0, 1:] < 0.2), (method, out['scores'][0, :4])


@pytest.mark.parametrize('method', ['hard', 'soft'])
def test_multiscale_at_scale_one_is_the_plain_detections_after_nms(method):
  model = tiny.FakeCenterNet(num_classes=3)
  variables = model.init()
  batch = _batch(np.random.default_rng(3), b=2, s=64, true_size=[[64, 48], [40, 64]],
                 original_size=[[128, 96], [50, 80]])
  k = 30
  plain = jax.device_get(predict.make_predict_fn(model, input_size=64, max_detections=k)(
      variables, batch))
  params = tta.TTAParams(scales=(1.0,), size_multiple=32, nms=method, nms_iou=0.3)
  merged = jax.device_get(predict.make_predict_fn(model, input_size=64, max_detections=k,
                                                  tta=params)(variables, batch))
  ref = dict(iou_threshold=0.3) if method == 'hard' else dict(sigma=0.5)
  for i in range(2):
    idx, scores = test_nms.reference_nms(plain['boxes'][i], plain['scores'][i],
                                         plain['classes'][i], k, **ref)
    m = len(idx)
    np.testing.assert_array_equal(merged['boxes'][i, :m], plain['boxes'][i][idx])
    np.testing.assert_array_equal(merged['classes'][i, :m], plain['classes'][i][idx])
    np.testing.assert_allclose(merged['scores'][i, :m], scores, rtol=1e-5)
    assert np.all(merged['scores'][i, m:] == 0) and np.all(merged['boxes'][i, m:] == 0)
    np.testing.assert_array_equal(merged['boxes'][i, 0], plain['boxes'][i, 0])


def test_flip_multiscale_with_keypoints_runs_with_static_shapes():
  model = MirrorEquivariantFake()
  batch = _batch(np.random.default_rng(4), b=2, s=64)
  params = tta.TTAParams(flip=True, scales=(0.5, 1.0), size_multiple=32,
                         flip_permutation=PERM)
  out = predict.make_predict_fn(model, input_size=64, max_detections=16,
                                keypoint_params=_keypoint_params(), tta=params)({}, batch)
  assert out['boxes'].shape == (2, 16, 4) and out['keypoints'].shape == (2, 16, len(JOINTS), 2)
  assert out['keypoint_scores'].shape == (2, 16, len(JOINTS))
  scores = np.asarray(out['scores'])
  assert np.all(np.diff(scores, axis=1) <= 0)


def test_config_fields_reach_the_params_and_are_checked():
  c = _config('flip_multiscale', tta_scales=(0.5, 1.0), tta_nms='hard', tta_nms_iou=0.4)
  spec = kps.KeypointSpec(category_id=1, channel=0, category_name='p', names=JOINTS,
                          skeleton=(), flip_permutation=PERM, std_devs=(1.0,) * 5,
                          oks_sigmas=(0.05,) * 5, task_name='pose')
  p = predict.tta_params(c, spec)
  assert p == tta.TTAParams(flip=True, scales=(0.5, 1.0), size_multiple=32, nms='hard',
                            nms_iou=0.4, soft_nms_sigma=0.5, flip_permutation=PERM,
                            task_name='pose')
  assert predict.tta_params(_config('flip')).scales == ()
  for field, value, message in (('tta', 'flips', 'eval.tta='), ('tta_nms', 'soft_nms',
                                                                'eval.tta_nms='),
                                ('tta_scales', (1.0, 0.0), 'eval.tta_scales='),
                                ('tta_nms_iou', 1.5, 'eval.tta_nms_iou=')):
    bad = _config('none', **{field: value})
    with pytest.raises(config_check.ConfigError, match=message):
      config_check.check_config(bad, num_devices=1, num_processes=1)


def test_evaluation_runs_with_tta(tmp_path):
  """COCO box and keypoint evaluation of the tiny synthetic keypoint val set through a flip +
  multi-scale predict_fn built from the config, as `main --mode eval --config.eval.tta=...`
  builds it."""
  config = tiny.tiny_keypoint_config(tmp_path / 'data')
  config.eval.tta = 'flip_multiscale'
  config.eval.tta_scales = (0.5, 1.0)
  facts = sources.resolve(config)
  label_map, num_classes, spec = facts.label_map, facts.num_classes, facts.keypoint_spec
  params = predict.tta_params(config, spec)
  assert params.flip and params.scales == (0.5, 1.0)
  assert params.flip_permutation == spec.flip_permutation != tuple(range(spec.num_keypoints))
  # The real module compiles for minutes per input side on a loaded 2-core CPU; the heads'
  # form is what TTA and evaluation need.
  model = tiny.FakeCenterNet(num_classes, spec.num_keypoints)
  predict_fn = evaluate.make_predict_fn(
      model, input_size=config.input.size, max_detections=config.eval.max_detections,
      keypoint_params=evaluate.keypoint_decode_params(spec, config), tta=params)
  eval_iter, num_batches = pipeline.make_eval_iterator(config, facts)
  metrics = evaluate.run_evaluation(
      variables=model.init(), predict_fn=predict_fn, eval_iterator=eval_iter,
      num_batches=num_batches, mesh=sharding.make_mesh(config.mesh),
      annotation_file=facts.ground_truth_file,
      channel_to_category_id=label_map.channel_to_id_array, keypoint_spec=spec,
      keypoint_annotation_file=facts.require_keypoint_ground_truth())
  assert set(evaluate.STAT_NAMES) <= set(metrics)
  assert all(np.isfinite(metrics[k]) for k in evaluate.STAT_NAMES)
  assert 'keypoints/AP' in metrics
