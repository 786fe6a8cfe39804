r"""Builds one TF2 OD API CenterNet zoo variant with random weights and dumps a parity case.

Runs INSIDE the OD API reference environment (tools/odapi_env.sh), never in the project env:

  PY=$(tools/odapi_env.sh | tail -n 1)
  $PY parity/odapi_build.py --variant r50v1fpn --out parity_out/r50v1fpn [--input_size 512]

The model is built from the OD API classes with the zoo row's settings (feature extractor,
90 classes, keep-aspect-ratio resizer with padding, focal + L1 losses, `use_depthwise` heads for
MobileNet) the way `model_builder._build_center_net_model` assembles them (model_builder itself
imports packages CenterNet does not need), so the variable names are the zoo archives'. The
matching `model { center_net { ... } }` text is written as pipeline.config for the importer. Weights are random but well conditioned:
  * Keras initializers, then every bias / BN gamma / BN beta gets random values (gamma in
    `GAMMA_RANGE`, see there);
  * the BN moving statistics are calibrated on the test image (one training-mode forward pass
    of the feature extractor with BN momentum 0), so activations stay O(1) through the deep
    backbones and the moving mean/variance are non-trivial.

Writes to --out:
  ckpt/ckpt-1.*           tf.train.Checkpoint(model=model).save (zoo key names)
  pipeline.config         the model config as a pipeline.config (for the importer)
  case.npz                image (uint8, H x W x 3, non-square), resized_raw (resizer output),
                          preprocessed, true_shape, every prediction head (`pred/<key>/<i>`),
                          the postprocess outputs (`det/<name>`), ground truth, the target
                          assigner outputs (`ta/...`; keypoint variants also `ta/kp/...` from
                          `CenterNetKeypointTargetAssigner` on image 0) and the loss dict
                          (`loss/<name>`).
  info.json               variant, sizes, timings, TF version.
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

from object_detection.builders import image_resizer_builder
from object_detection.core import losses as od_losses
from object_detection.core import target_assigner as cn_assigner
from object_detection.meta_architectures import center_net_meta_arch as cnma
from object_detection.models import center_net_hourglass_feature_extractor as hg_fe
from object_detection.models import center_net_mobilenet_v2_fpn_feature_extractor as mnv2_fe
from object_detection.models import center_net_resnet_feature_extractor as r2_fe
from object_detection.models import center_net_resnet_v1_fpn_feature_extractor as r1_fe
from object_detection.models.keras_models import mobilenet_v2 as od_mobilenet_v2
from object_detection.protos import image_resizer_pb2

HOURGLASS_MEANS = (104.01362025, 114.03422265, 119.9165958)
HOURGLASS_STDS = (73.6027665, 69.89082075, 70.9150767)
HOURGLASS_FE = ('feature_extractor { type: "hourglass_104" bgr_ordering: true '
                'channel_means: [104.01362025, 114.03422265, 119.9165958] '
                'channel_stds: [73.6027665, 69.89082075, 70.9150767] }')

# variant -> (pipeline.config feature extractor block, num_classes, extra center_net fields,
#             feature extractor factory, use_depthwise heads)
VARIANTS = {
    'r50v1fpn': ('feature_extractor { type: "resnet_v1_50_fpn" }', 90, '',
                 lambda: r1_fe.resnet_v1_50_fpn((), (), False), False),
    'r101v1fpn': ('feature_extractor { type: "resnet_v1_101_fpn" }', 90, '',
                  lambda: r1_fe.resnet_v1_101_fpn((), (), False), False),
    'r50v2': ('feature_extractor { type: "resnet_v2_50" }', 90, '',
              lambda: r2_fe.resnet_v2_50((), (), False), False),
    'hg104': (HOURGLASS_FE, 90, '',
              lambda: hg_fe.hourglass_104(HOURGLASS_MEANS, HOURGLASS_STDS, True), False),
    'mnv2fpn': ('feature_extractor { type: "mobilenet_v2_fpn_sep_conv" }', 90,
                'use_depthwise: true',
                lambda: mnv2_fe.mobilenet_v2_fpn((), (), False, use_separable_conv=True), True),
}

# Keypoint variants: the base variant plus the zoo's `human_pose` task (17 COCO keypoints).
KEYPOINT_VARIANTS = {'r50v1fpn_kpts': 'r50v1fpn', 'r50v2_kpts': 'r50v2',
                     'hg104_kpts': 'hg104', 'mnv2fpn_kpts': 'mnv2fpn'}
KEYPOINT_NUM_CLASSES = {'mnv2fpn_kpts': 1}  # the MobileNet keypoint model is person-only
# The zoo's per-keypoint std devs in COCO keypoint order (docs/odapi_reference.md, 5).
KEYPOINT_STD = (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07,
                0.89, 0.89, 0.89, 0.89)
KEYPOINT_TASK_TEXT = """
  keypoint_label_map_path: "label_map_with_keypoints.pbtxt"
  keypoint_estimation_task {
    task_name: "human_pose"
    task_loss_weight: 1.0
    loss { localization_loss { l1_localization_loss { } }
           classification_loss { penalty_reduced_logistic_focal_loss { alpha: 2.0 beta: 4.0 } } }
    keypoint_class_name: "/m/01g317"
    keypoint_heatmap_loss_weight: 1.0
    keypoint_offset_loss_weight: 1.0
    keypoint_regression_loss_weight: 0.1
    offset_peak_radius: 3
    per_keypoint_offset: true
  }"""


def keypoint_params():
  return {'human_pose': cnma.KeypointEstimationParams(
      task_name='human_pose', class_id=0, keypoint_indices=list(range(17)),
      classification_loss=od_losses.PenaltyReducedLogisticFocalLoss(alpha=2.0, beta=4.0),
      localization_loss=od_losses.L1LocalizationLoss(),
      keypoint_labels=[f'kp{i}' for i in range(17)], keypoint_std_dev=list(KEYPOINT_STD),
      keypoint_heatmap_loss_weight=1.0, keypoint_offset_loss_weight=1.0,
      keypoint_regression_loss_weight=0.1, offset_peak_radius=3, per_keypoint_offset=True,
      score_distance_offset=1.0)}


MODEL_TEMPLATE = """
center_net {{
  num_classes: {num_classes}
  {feature_extractor}
  {extra}
  image_resizer {{
    keep_aspect_ratio_resizer {{
      min_dimension: {size}
      max_dimension: {size}
      pad_to_max_dimension: true
    }}
  }}
  object_detection_task {{
    task_loss_weight: 1.0
    offset_loss_weight: 1.0
    scale_loss_weight: 0.1
    localization_loss {{ l1_localization_loss {{ }} }}
  }}
  object_center_params {{
    object_center_loss_weight: 1.0
    min_box_overlap_iou: 0.7
    max_box_predictions: 100
    classification_loss {{ penalty_reduced_logistic_focal_loss {{ alpha: 2.0 beta: 4.0 }} }}
  }}
}}
"""


def smooth_image(height, width, seed):
  """A random but smooth uint8 RGB image: sinusoids + Gaussian blobs + a few soft edges."""
  rng = np.random.RandomState(seed)
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  img = np.zeros((height, width, 3))
  for c in range(3):
    for _ in range(6):
      fy, fx = rng.uniform(0.5, 6, size=2) * 2 * np.pi / np.array([height, width])
      img[..., c] += rng.uniform(10, 30) * np.sin(fy * y + fx * x + rng.uniform(0, 2 * np.pi))
  for _ in range(12):
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    s = rng.uniform(8, 80)
    amp = rng.uniform(-80, 80, size=3)
    img += amp * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))[..., None]
  for _ in range(4):  # soft-edged rectangles
    y0, x0 = rng.uniform(0, height * 0.8), rng.uniform(0, width * 0.8)
    h, w = rng.uniform(20, height / 3), rng.uniform(20, width / 3)
    inside = (1 / (1 + np.exp(-(y - y0) / 2)) * 1 / (1 + np.exp((y - y0 - h) / 2)) *
              1 / (1 + np.exp(-(x - x0) / 2)) * 1 / (1 + np.exp((x - x0 - w) / 2)))
    img += rng.uniform(-60, 60, size=3) * inside[..., None]
  img = img - img.mean() + 128
  return np.clip(np.round(img), 0, 255).astype(np.uint8)


def ground_truth(rng, num_classes, true_hw, size, num_boxes=7, num_pad=3):
  """Boxes normalized to the padded S x S canvas, inside the true image; last ones weight 0."""
  th, tw = true_hw[0] / size, true_hw[1] / size
  boxes = []
  for _ in range(num_boxes):
    h, w = rng.uniform(0.03, 0.5) * th, rng.uniform(0.03, 0.5) * tw
    y0, x0 = rng.uniform(0, th - h), rng.uniform(0, tw - w)
    boxes.append([y0, x0, y0 + h, x0 + w])
  boxes += [[0, 0, 0, 0]] * num_pad
  boxes = np.asarray(boxes, np.float32)
  classes = rng.randint(0, num_classes, size=len(boxes)).astype(np.int32)
  classes[1] = classes[0]  # two boxes of one class: the per-class max merge
  classes[num_boxes:] = 0
  weights = np.array([1.0] * num_boxes + [0.0] * num_pad, np.float32)
  return boxes, classes, weights


# BN gamma range. The BN statistics are calibrated, so gamma only matters where a branch meets
# a residual sum: a value below 1 keeps the random deep nets (the hourglass stacks ~100 convs)
# from amplifying float32 round-off chaotically (at U(0.6, 1.4), a 1e-3 grey-level input
# perturbation moved the second hourglass output by ~4e-4 relative: as much as the TF-vs-JAX
# round-off differences), while every branch still contributes O(0.2..0.5) of its sum.
GAMMA_RANGE = (0.2, 0.5)


def randomize_and_calibrate(model, preprocessed, seed):
  """Random biases / BN affine params, then BN moving stats from one training-mode pass."""
  rng = np.random.RandomState(seed)
  bns = []
  for v in model.variables:
    name = v.name
    if name.endswith('gamma:0'):
      v.assign(rng.uniform(*GAMMA_RANGE, v.shape).astype(np.float32))
    elif name.endswith('beta:0'):
      v.assign(rng.normal(0.0, 0.2, v.shape).astype(np.float32))
    elif name.endswith('bias:0'):
      v.assign(v.numpy() + rng.normal(0.0, 0.1, v.shape).astype(np.float32))
  # Box sizes of a few to ~25 output pixels (raw random heads predict ~0): offset the final
  # bias of every box/scale head.
  for head in model._prediction_head_dict['box/scale']:  # pylint: disable=protected-access
    bias = head.layers[-1].bias
    bias.assign(bias.numpy() + rng.uniform(4.0, 12.0, bias.shape).astype(np.float32))
  heads = model._prediction_head_dict  # pylint: disable=protected-access
  if 'human_pose/keypoint/heatmap' in heads:
    # Keypoint variants: make class 0 (the keypoint class) win most of the top-k, so the
    # keypoint postprocessing has detections to work on.
    for head in heads['object_center']:
      bias = head.layers[-1].bias
      value = bias.numpy()
      value[0] += 3.0
      bias.assign(value)
  fe = model._feature_extractor  # pylint: disable=protected-access
  for layer in fe.submodules:
    if isinstance(layer, tf.keras.layers.BatchNormalization) or hasattr(layer, 'moving_mean'):
      bns.append((layer, layer.momentum))
      layer.momentum = 0.0
  fe(preprocessed, training=True)
  for layer, momentum in bns:
    layer.momentum = momentum
  return len(bns)


def no_download_mobilenet():
  """The MobileNetV2 extractor asks Keras for ImageNet weights (a download): build without."""
  original = od_mobilenet_v2.mobilenet_v2

  def without_download(*a, **kw):
    kw['weights'] = None
    return original(*a, **kw)
  od_mobilenet_v2.mobilenet_v2 = without_download


def make_model(args, num_classes, make_fe, use_depthwise, keypoints=False):
  """CenterNetMetaArch as `model_builder._build_center_net_model` assembles it."""
  resizer = image_resizer_pb2.ImageResizer()
  resizer.keep_aspect_ratio_resizer.min_dimension = args.input_size
  resizer.keep_aspect_ratio_resizer.max_dimension = args.input_size
  resizer.keep_aspect_ratio_resizer.pad_to_max_dimension = True
  return cnma.CenterNetMetaArch(
      is_training=False, add_summaries=False, num_classes=num_classes,
      feature_extractor=make_fe(),
      image_resizer_fn=image_resizer_builder.build(resizer),
      object_center_params=cnma.ObjectCenterParams(
          classification_loss=od_losses.PenaltyReducedLogisticFocalLoss(alpha=2.0, beta=4.0),
          object_center_loss_weight=1.0, min_box_overlap_iou=0.7, max_box_predictions=100),
      object_detection_params=cnma.ObjectDetectionParams(
          localization_loss=od_losses.L1LocalizationLoss(), scale_loss_weight=0.1,
          offset_loss_weight=1.0, task_loss_weight=1.0),
      keypoint_params_dict=keypoint_params() if keypoints else None,
      use_depthwise=use_depthwise)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variant', required=True,
                      choices=sorted(VARIANTS) + sorted(KEYPOINT_VARIANTS))
  parser.add_argument('--out', required=True)
  parser.add_argument('--input_size', type=int, default=512)
  parser.add_argument('--image_height', type=int, default=480)
  parser.add_argument('--image_width', type=int, default=640)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--float64_reference', action='store_true',
                      help='also run the network in float64 (pred64/...): the round-off floor')
  args = parser.parse_args()
  t_start = time.time()
  os.makedirs(args.out, exist_ok=True)
  tf.random.set_seed(args.seed)
  np.random.seed(args.seed)

  no_download_mobilenet()

  keypoints = args.variant in KEYPOINT_VARIANTS
  fe_text, num_classes, extra, make_fe, use_depthwise = VARIANTS[
      KEYPOINT_VARIANTS.get(args.variant, args.variant)]
  num_classes = KEYPOINT_NUM_CLASSES.get(args.variant, num_classes)
  if keypoints:
    extra += KEYPOINT_TASK_TEXT
  model_text = MODEL_TEMPLATE.format(num_classes=num_classes, feature_extractor=fe_text,
                                     extra=extra, size=args.input_size)
  with open(os.path.join(args.out, 'pipeline.config'), 'w') as f:
    f.write('model {' + model_text + '}\n')

  timings = {}
  t0 = time.time()
  model = make_model(args, num_classes, make_fe, use_depthwise, keypoints)
  image = smooth_image(args.image_height, args.image_width, args.seed)
  images = tf.constant(image[None].astype(np.float32))
  preprocessed, true_shapes = model.preprocess(images)
  model.predict(preprocessed, true_shapes)  # creates the variables
  timings['build_s'] = time.time() - t0
  num_bn = randomize_and_calibrate(model, preprocessed, args.seed + 1)

  resized_raw, resized_true = model._image_resizer_fn(images[0])  # pylint: disable=protected-access
  t0 = time.time()
  predictions = model.predict(preprocessed, true_shapes)
  timings['predict_s'] = time.time() - t0
  detections = model.postprocess(predictions, true_shapes)

  out = {'image': image, 'resized_raw': resized_raw.numpy(),
         'resized_true_shape': resized_true.numpy(),
         'preprocessed': preprocessed.numpy()[0], 'true_shape': true_shapes.numpy()[0]}
  # The resizer alone on a few more aspect ratios (odd sizes, portrait, upscaling).
  for h, w in ((333, 517), (517, 333), (101, 100)):
    extra_image = smooth_image(h, w, args.seed + h)
    resized, true_shape = model._image_resizer_fn(  # pylint: disable=protected-access
        tf.constant(extra_image.astype(np.float32)))
    out[f'resize_input/{h}x{w}'] = extra_image
    out[f'resize/{h}x{w}'] = resized.numpy()
    out[f'resize_true/{h}x{w}'] = true_shape.numpy()
  head_keys = []
  for key, value in predictions.items():
    if isinstance(value, list):
      if key != 'extracted_features':
        head_keys.append(key)
      for i, t in enumerate(value):
        out[f'pred/{key}/{i}'] = t.numpy()
  for key, value in detections.items():
    out[f'det/{key}'] = value.numpy()

  # Target assigners and losses on a 2-image ground-truth batch (the model loss on image 0).
  rng = np.random.RandomState(args.seed + 2)
  true_hw = true_shapes.numpy()[0][:2]
  gts = [ground_truth(rng, num_classes, true_hw, args.input_size) for _ in range(2)]
  if keypoints:  # persons (class 0) among the boxes, for the keypoint task
    for _, classes, _ in gts:
      classes[:3] = 0
  for b, (boxes, classes, weights) in enumerate(gts):
    out[f'gt/boxes/{b}'], out[f'gt/classes/{b}'], out[f'gt/weights/{b}'] = boxes, classes, weights
  onehot = [tf.one_hot(c, num_classes) for _, c, _ in gts]
  heat = cn_assigner.CenterNetCenterHeatmapTargetAssigner(stride=4, min_overlap=0.7)
  out['ta/heatmap'] = heat.assign_center_targets_from_boxes(
      args.input_size, args.input_size, [tf.constant(g[0]) for g in gts], onehot,
      [tf.constant(g[2]) for g in gts]).numpy()
  box_ta = cn_assigner.CenterNetBoxTargetAssigner(stride=4)
  indices, hw, offsets, weights = box_ta.assign_size_and_offset_targets(
      args.input_size, args.input_size, [tf.constant(g[0]) for g in gts],
      [tf.constant(g[2]) for g in gts])
  out['ta/indices'], out['ta/size'] = indices.numpy(), hw.numpy()
  out['ta/offset'], out['ta/weights'] = offsets.numpy(), weights.numpy()

  boxes0, classes0, weights0 = gts[0]
  gt_extra = {}
  if keypoints:  # 17 keypoints inside each box, a few unlabelled (NaN)
    kp = rng.uniform(0, 1, (len(boxes0), 17, 2)).astype(np.float32)
    kp = boxes0[:, None, :2] + kp * (boxes0[:, None, 2:] - boxes0[:, None, :2])
    kp[rng.uniform(size=kp.shape[:2]) < 0.2] = np.nan
    out['gt/keypoints/0'] = kp
    gt_extra['groundtruth_keypoints_list'] = [tf.constant(kp)]
    kp_ta = cn_assigner.CenterNetKeypointTargetAssigner(
        stride=4, class_id=0, keypoint_indices=list(range(17)),
        keypoint_std_dev=list(KEYPOINT_STD), per_keypoint_offset=True, peak_radius=3)
    size = args.input_size
    heat, num_inst, valid = kp_ta.assign_keypoint_heatmap_targets(
        size, size, [tf.constant(kp)], [onehot[0]], gt_weights_list=[tf.constant(weights0)],
        gt_boxes_list=[tf.constant(boxes0)])
    out['ta/kp/heatmap'], out['ta/kp/valid_mask'] = heat.numpy(), valid.numpy()
    out['ta/kp/num_instances'] = num_inst.numpy()
    idx, off, w = kp_ta.assign_keypoints_offset_targets(
        size, size, [tf.constant(kp)], [onehot[0]], gt_weights_list=[tf.constant(weights0)])
    out['ta/kp/offset_indices'], out['ta/kp/offset'] = idx.numpy(), off.numpy()
    out['ta/kp/offset_weights'] = w.numpy()
    idx, reg, w = kp_ta.assign_joint_regression_targets(
        size, size, [tf.constant(kp)], [onehot[0]], gt_boxes_list=[tf.constant(boxes0)],
        gt_weights_list=[tf.constant(weights0)])
    out['ta/kp/regression_indices'], out['ta/kp/regression'] = idx.numpy(), reg.numpy()
    out['ta/kp/regression_weights'] = w.numpy()
  model.provide_groundtruth(groundtruth_boxes_list=[tf.constant(boxes0)],
                            groundtruth_classes_list=[onehot[0]],
                            groundtruth_weights_list=[tf.constant(weights0)], **gt_extra)
  losses = model.loss(predictions, true_shapes)
  for key, value in losses.items():
    out[f'loss/{key}'] = np.float32(value.numpy())

  if args.float64_reference:
    # The same network in float64 (feature extractor + heads, on the same preprocessed input):
    # the round-off reference that tells float32 noise from a real difference.
    tf.keras.backend.set_floatx('float64')
    model64 = make_model(args, num_classes, make_fe, use_depthwise, keypoints)
    x64 = tf.cast(preprocessed, tf.float64)
    features64 = model64._feature_extractor(x64)  # pylint: disable=protected-access
    heads64 = model64._prediction_head_dict  # pylint: disable=protected-access
    for key in head_keys:
      for i, f in enumerate(features64):
        heads64[key][i](f)
    pairs = list(zip(model.variables, model64.variables))
    assert len(model.variables) == len(model64.variables)
    for a, b in pairs:
      assert (a.name.split('/')[-1] == b.name.split('/')[-1] and a.shape == b.shape), (a.name, b.name)
      b.assign(tf.cast(a, tf.float64))
    features64 = model64._feature_extractor(x64)  # pylint: disable=protected-access
    for key in head_keys:
      for i, f in enumerate(features64):
        out[f'pred64/{key}/{i}'] = heads64[key][i](f).numpy()
    tf.keras.backend.set_floatx('float32')

  ckpt_prefix = tf.train.Checkpoint(model=model).save(os.path.join(args.out, 'ckpt', 'ckpt'))
  np.savez_compressed(os.path.join(args.out, 'case.npz'), **out)
  timings['total_s'] = time.time() - t_start
  info = {'variant': args.variant, 'num_classes': num_classes, 'input_size': args.input_size,
          'image_size': [args.image_height, args.image_width], 'seed': args.seed,
          'head_keys': head_keys, 'checkpoint': os.path.relpath(ckpt_prefix, args.out),
          'num_bn_layers_calibrated': num_bn, 'tf_version': tf.__version__,
          'num_checkpoint_variables': len(tf.train.list_variables(ckpt_prefix)),
          'timings': timings}
  with open(os.path.join(args.out, 'info.json'), 'w') as f:
    json.dump(info, f, indent=2)
  print(json.dumps(info))


if __name__ == '__main__':
  main()
