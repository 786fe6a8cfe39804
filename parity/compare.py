r"""Compares our implementation with a case dumped by parity/odapi_build.py (project env).

  python parity/compare.py --case parity_out/r50v1fpn [--json parity_out/r50v1fpn/result.json]

What is compared (tolerances in `TOLERANCES`):
  * preprocessing: our eval pipeline (`data.pipeline.preprocess`: legacy-bilinear keep-aspect
    resize + bottom/right zero pad) vs the OD API resizer output, `true_size` vs
    `true_image_shapes`, and our backbone normalization vs `model.preprocess`;
  * the checkpoint: converted by `centernet_jax.tf_checkpoint` (init type 'full', strict);
  * every head's raw output on the OD API's preprocessed input (max |diff| / max |TF|);
  * detections: our decoder on our outputs (end to end) and on the OD API's outputs vs
    `model.postprocess` (boxes normalized by the original image, classes, scores);
  * targets: `targets.build_targets` vs `CenterNetCenterHeatmapTargetAssigner` and
    `CenterNetBoxTargetAssigner` on a 2-image ground-truth batch;
  * losses: `losses.centernet_loss` (with `targets.valid_output_mask`) vs `model.loss` after
    `provide_groundtruth`, on the OD API's predictions and on ours;
  * keypoint variants: `targets.build_keypoint_targets` vs `CenterNetKeypointTargetAssigner`
    (heatmap, blackout mask, offset and regression indices/targets/weights on image 0),
    `losses.keypoint_loss` vs the `Loss/human_pose/keypoint/*` entries of `model.loss`, and
    the keypoints of our decoder on the OD API's outputs vs `detection_keypoints` /
    `detection_keypoint_scores` of `model.postprocess`.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

TOLERANCES = {
    'preprocess': 1e-3,  # grey levels (the resize is float32 arithmetic in both)
    'head_rel': 1e-4,  # max |diff| / max |TF| per head
    'box': 1e-4,  # normalized box coordinates
    'score': 1e-4,  # sigmoid' <= 1/4: a logit off by 1e-4 x |logit| ~ 6 moves a score ~1.5e-4
    'target': 1e-5,
    'loss_rel': 1e-5,
}
# A head that misses 'head_rel' against TF float32 still passes when its distance from the
# float64 run of the same TF network is at most this many times TF float32's own distance. Two
# float32 evaluations summing in different orders (TF's oneDNN kernels; ours, with F(4x4, 3x3) in
# Hourglass-104's 3x3 convolutions, docs/winograd.md) land at random distances of the same size
# from float64, so requiring ours to be the nearer one fails about half the cases for an
# implementation exactly as accurate as TF's; a wrong layer or weight is off by far more.
F64_DISTANCE_RATIO = 2.0


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _maxabs(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def build_model(model_config, num_classes, keypoint_specs=()):
  """models.build_model; CenterNet directly for keypoint heads or an unregistered backbone."""
  import importlib
  from centernet_jax import models
  from centernet_jax.models.centernet import CenterNet, detection_head_specs
  if model_config.backbone in models.BACKBONES and not keypoint_specs:
    return models.build_model(model_config, num_classes), 'registry'
  module = importlib.import_module(f'centernet_jax.models.{model_config.backbone}')
  return CenterNet(backbone=module.build(model_config), normalize=module.normalize_input,
                   num_classes=num_classes,
                   depthwise_heads=bool(model_config.depthwise_heads),
                   head_specs=tuple(detection_head_specs(num_classes)) + tuple(keypoint_specs)
                   ), 'direct (keypoint heads)' if keypoint_specs else 'direct'


def compare_detections(ours, tf_boxes, tf_scores, tf_classes):
  """Rank-by-rank comparison; near-tied scores may swap ranks (matched then by content)."""
  boxes, scores, classes = ours
  n = len(tf_scores)
  box_diff = np.abs(boxes - tf_boxes).max(axis=1)
  same = (classes == tf_classes) & (box_diff <= TOLERANCES['box']) & (
      np.abs(scores - tf_scores) <= TOLERANCES['score'])
  unmatched = []
  used = set(np.nonzero(same)[0].tolist())
  matched_box_diff = [float(box_diff[i]) for i in np.nonzero(same)[0]]
  for i in np.nonzero(~same)[0]:
    cands = [j for j in range(n) if j not in used and classes[j] == tf_classes[i]
             and np.abs(scores[j] - tf_scores[i]) <= TOLERANCES['score']
             and np.abs(boxes[j] - tf_boxes[i]).max() <= TOLERANCES['box']]
    if cands:
      used.add(cands[0])
      matched_box_diff.append(float(np.abs(boxes[cands[0]] - tf_boxes[i]).max()))
    else:
      unmatched.append(int(i))
  return {'max_box_diff': max(matched_box_diff, default=0.0),
          'max_box_diff_ranked': float(box_diff.max()),
          'max_score_diff': float(np.abs(np.sort(scores) - np.sort(tf_scores)).max()),
          'classes_equal_ranked': int((classes == tf_classes).sum()),
          'rank_swaps': int((~same).sum()) - len(unmatched),
          'unmatched': unmatched, 'n': n, 'pass': not unmatched}


def compare_keypoints(case, row, outputs, tf_pred_list, tf_heads, true_size, original, size,
                      num_classes, k):
  """The keypoint task (17 joints of class 0, `human_pose`): targets, losses, postprocess."""
  import jax
  import jax.numpy as jnp
  from centernet_jax import config_base, decoder, keypoint_spec, losses, targets
  std = (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.89,
         0.89, 0.89, 0.89)  # odapi_build.KEYPOINT_STD (docs/odapi_reference.md, 5)
  assert std == keypoint_spec.default_std_devs(keypoint_spec.COCO_KEYPOINT_NAMES)
  boxes = case['gt/boxes/0'][None]
  classes = case['gt/classes/0'][None]
  weights = case['gt/weights/0'][None]
  raw = case['gt/keypoints/0']
  labelled = ~np.isnan(raw[..., 0])
  kps = np.where(labelled[..., None], raw, 0.0)[None].astype(np.float32)
  out_size = (size // 4, size // 4)
  tg = jax.tree.map(np.asarray, targets.build_keypoint_targets(
      boxes, classes, weights, kps, labelled[None].astype(np.float32), out_size,
      keypoint_channel=0, std_devs=std, min_overlap=0.7, radius_variant='odapi',
      peak_radius=3))
  row('keypoint targets: heatmap', _maxabs(tg['heatmap'], case['ta/kp/heatmap']),
      TOLERANCES['target'])
  row('keypoint targets: blackout mask', _maxabs(tg['heatmap_mask'], case['ta/kp/valid_mask']), 0)
  row('keypoint targets: labelled-joint count',
      abs(float(tg['num_keypoints']) - float(case['ta/kp/num_instances'].sum())), 0)
  m, j = raw.shape[:2]
  for name, ours_idx in (('offset', tg['offset_indices']),
                         ('regression', np.broadcast_to(tg['regression_indices'][:, :, None],
                                                        tg['regression'].shape))):
    w_tf = case[f'ta/kp/{name}_weights'].reshape(m, j, -1)
    w_ours = tg[f'{name}_weights'][0]
    row(f'keypoint targets: {name} weights ({int(w_tf.sum())} of {w_tf.size})',
        _maxabs(w_ours, w_tf), 0)
    sel = w_tf > 0
    idx_tf = case[f'ta/kp/{name}_indices'].reshape(m, j, -1, 4)
    row(f'keypoint targets: {name} indices (weighted entries)',
        float(np.abs(ours_idx[0][sel] - idx_tf[..., 1:3][sel]).max()) if sel.any() else 0.0, 0)
    row(f'keypoint targets: {name} targets (weighted entries)',
        _maxabs(tg[name][0][sel], case[f'ta/kp/{name}'].reshape(m, j, -1, 2)[sel])
        if sel.any() else 0.0, TOLERANCES['target'])

  valid = targets.valid_output_mask(true_size, size, out_size)
  base = config_base.base_config()  # the zoo's keypoint loss weights and focal exponents
  for label, preds in (('on TF predictions', tf_pred_list),
                       ('on our predictions', [jax.tree.map(jnp.asarray, o) for o in outputs])):
    _, comps = losses.keypoint_loss(
        preds, tg, task_name='human_pose', valid_mask=valid, keypoint_config=base.keypoints,
        focal_alpha=base.loss.focal_alpha, focal_beta=base.loss.focal_beta)
    for key, value in comps.items():
      ref = case[f'loss/Loss/{key}']
      row(f'loss {key}, {label} (rel; TF {float(ref):.6g})',
          abs(float(value) - float(ref)) / max(abs(float(ref)), 1e-12),
          TOLERANCES['loss_rel'] if preds is tf_pred_list else TOLERANCES['head_rel'])

  params = decoder.KeypointDecodeParams(task_name='human_pose', class_channel=0)
  det = jax.tree.map(np.asarray, decoder.decode_detections(
      {key: jnp.asarray(v) for key, v in tf_heads.items()}, true_size=true_size,
      original_size=original, input_size=size, max_detections=k, keypoint_params=params))
  ours_kp = det['keypoints'][0] / np.asarray(original[0], np.float32)
  ours_scores = det['keypoint_scores'][0]
  tf_kp = case['det/detection_keypoints'][0]
  tf_scores = case['det/detection_keypoint_scores'][0]
  tf_classes = case['det/detection_classes'][0]
  same_rank = det['classes'][0] == tf_classes  # detections are compared rank by rank
  persons = same_rank & (tf_classes == 0)
  row(f'keypoints, decoder on TF outputs: detections compared ({int(persons.sum())} of class 0'
      f', {int((~same_rank).sum())} rank swaps skipped)', 0.0, 0, {'info': True})
  if persons.any():
    row('keypoints, decoder on TF outputs: max joint diff (normalized)',
        _maxabs(ours_kp[persons], tf_kp[persons]), TOLERANCES['box'])
    row('keypoints, decoder on TF outputs: max joint score diff',
        _maxabs(ours_scores[persons], tf_scores[persons]), TOLERANCES['score'])
    snapped = float((tf_scores[persons] != 0.1).mean())
    row(f'keypoints, decoder on TF outputs: snapped joints {snapped:.0%}', 0.0, 0,
        {'info': True})
  others = same_rank & (tf_classes != 0)
  row('keypoints, decoder on TF outputs: joints of other classes (must be 0)',
      float(np.abs(ours_kp[others]).max(initial=0.0) + np.abs(tf_kp[others]).max(initial=0.0)),
      0)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--case', required=True)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  t_start = time.time()

  import jax
  import jax.numpy as jnp
  import tensorflow as tf
  from centernet_jax import config_base, decoder, losses, targets, tf_checkpoint
  from centernet_jax import import_tf_checkpoint as importer
  from centernet_jax.data import pipeline

  tf.config.set_visible_devices([], 'GPU')
  case = dict(np.load(os.path.join(args.case, 'case.npz')))
  info = json.load(open(os.path.join(args.case, 'info.json')))
  zoo = importer.read_pipeline_config(open(os.path.join(args.case, 'pipeline.config')).read())
  config = config_base.base_config()
  config.model.update_from_flattened_dict(zoo.model_overrides())
  config.input.size = zoo.input_size
  size, num_classes = zoo.input_size, zoo.num_classes
  rows = []

  def row(name, value, tol, extra=None):
    rows.append({'name': name, 'value': float(value), 'tol': tol, 'pass': bool(value <= tol),
                 **(extra or {})})

  # ---- preprocessing ----
  image = case['image']
  ex = pipeline.preprocess({'image': tf.constant(image), 'boxes': tf.zeros([0, 4]),
                            'classes': tf.zeros([0], tf.int32), 'image_id': 0}, config=config)
  our_image = ex['image'].numpy()
  our_true = ex['true_size'].numpy()
  row('preprocess: resized+padded image (grey levels)', _maxabs(our_image, case['resized_raw']),
      TOLERANCES['preprocess'])
  row('preprocess: true_size', float(np.abs(our_true - case['true_shape'][:2]).max()), 0)
  for key in sorted(k for k in case if k.startswith('resize/')):
    h, w = (int(x) for x in key.split('/')[1].split('x'))
    rng_img = case[f'resize_input/{h}x{w}']
    ex2 = pipeline.preprocess({'image': tf.constant(rng_img), 'boxes': tf.zeros([0, 4]),
                               'classes': tf.zeros([0], tf.int32), 'image_id': 0},
                              config=config)
    row(f'preprocess: {h}x{w} image (grey levels)', _maxabs(ex2['image'].numpy(), case[key]),
        TOLERANCES['preprocess'])
    row(f'preprocess: {h}x{w} true_size',
        float(np.abs(ex2['true_size'].numpy() - case[f'resize_true/{h}x{w}'][:2]).max()), 0)

  # ---- model ----
  keypoint_specs = [(key, case[f'pred/{key}/0'].shape[-1], key.endswith('/heatmap'))
                    for key in info['head_keys'] if '/keypoint/' in key]
  try:
    model, how = build_model(config.model, num_classes, keypoint_specs)
  except ImportError as e:  # the backbone is not implemented in this checkout
    result = {'variant': info['variant'], 'case': args.case, 'backbone': config.model.backbone,
              'skipped': f'our backbone {config.model.backbone!r} is not available ({e})',
              'pass': None, 'rows': rows}
    print(f"{info['variant']}: SKIPPED: {result['skipped']}")
    with open(args.json or os.path.join(args.case, 'result.json'), 'w') as f:
      json.dump(result, f, indent=2, default=float)
    return 0
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                               jnp.zeros((1, size, size, 3)), train=False))
  t0 = time.time()
  tf_vars = tf_checkpoint.read_tf_checkpoint(os.path.join(args.case, info['checkpoint']))
  variables, report = tf_checkpoint.convert_variables(tf_vars, abstract, config.model)
  t_convert = time.time() - t0
  variables = jax.tree.map(jnp.asarray, variables)
  normalize = model.normalize
  row('preprocess: normalized input (rel)',
      _rel(normalize(jnp.asarray(case['resized_raw'][None]))[0], case['preprocessed']),
      TOLERANCES['head_rel'])

  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  t0 = time.time()
  outputs = jax.block_until_ready(apply(variables, jnp.asarray(case['resized_raw'][None])))
  t_apply_first = time.time() - t0
  t0 = time.time()
  outputs = jax.block_until_ready(apply(variables, jnp.asarray(case['resized_raw'][None])))
  t_apply = time.time() - t0
  outputs = jax.tree.map(np.asarray, outputs)
  head_diffs, floor = {}, {}
  for i, out in enumerate(outputs):
    for key, value in out.items():
      name = f'{key}/{i}'
      ref = case[f'pred/{name}']
      d = _rel(value, ref)
      head_diffs[name] = d
      criterion = 'vs TF float32' if d <= TOLERANCES['head_rel'] else None
      label = f'head {key} [{i}] (max|diff|/max|TF|, TF max {np.abs(ref).max():.3g})'
      if f'pred64/{name}' in case:
        # The float64 run of the same TF network (odapi_build.py --float64_reference): how
        # far float32 round-off alone moves TF, against how far we are from float64. A head
        # that misses the tolerance against TF float32 still passes when we are within it of
        # the float64 result, or about as close to it as TF float32 itself is
        # (F64_DISTANCE_RATIO).
        ref64 = case[f'pred64/{name}']
        ours64, tf64 = _rel(value, ref64), _rel(ref, ref64)
        floor[name] = {'ours_vs_f64': ours64, 'tf32_vs_f64': tf64}
        if criterion is None and ours64 <= TOLERANCES['head_rel']:
          criterion = 'vs TF float64'
        if criterion is None and ours64 <= tf64:
          criterion = 'closer to TF float64 than TF float32 is'
        if criterion is None and ours64 <= F64_DISTANCE_RATIO * tf64:
          criterion = (f'within {F64_DISTANCE_RATIO:g}x TF float32\'s own distance from '
                       'TF float64')
        label += f'; vs TF float64: ours {ours64:.2g}, TF float32 {tf64:.2g}'
      if criterion not in (None, 'vs TF float32'):
        label += f' [passes: {criterion}]'
      rows.append({'name': label, 'value': d, 'tol': TOLERANCES['head_rel'],
                   'pass': criterion is not None, 'criterion': criterion})
  missing_heads = [k for k in case if k.startswith('pred/') and 'extracted_features' not in k
                   and k[5:] not in head_diffs]
  if missing_heads:
    rows.append({'name': f'heads missing on our side: {missing_heads}', 'value': 1.0,
                 'tol': 0, 'pass': False})

  # ---- detections ----
  true_size = case['true_shape'][None, :2]
  original = np.array([image.shape[:2]])
  tf_boxes = case['det/detection_boxes'][0]
  tf_scores = case['det/detection_scores'][0]
  tf_classes = case['det/detection_classes'][0]
  k = tf_scores.shape[0]

  def decode(heads):
    det = decoder.decode_detections({k2: jnp.asarray(v) for k2, v in heads.items()},
                                    true_size=true_size, original_size=original,
                                    input_size=size, max_detections=k)
    det = jax.tree.map(np.asarray, det)
    return (det['boxes'][0] / np.array([original[0, 0], original[0, 1]] * 2, np.float32),
            det['scores'][0], det['classes'][0])

  last = len(outputs) - 1
  tf_heads = {key: case[f'pred/{key}/{last}'] for key in outputs[-1]}
  det_results = {}
  for label, heads in (('decoder on TF outputs', tf_heads), ('end to end', outputs[-1])):
    res = compare_detections(decode(heads), tf_boxes, tf_scores, tf_classes)
    det_results[label] = res
    row(f'detections, {label}: max box diff of matched (normalized)', res['max_box_diff'],
        TOLERANCES['box'], {'detail': res})
    row(f'detections, {label}: max score diff', res['max_score_diff'], TOLERANCES['score'])
    rows.append({'name': f'detections, {label}: unmatched of {res["n"]} (rank swaps '
                         f'{res["rank_swaps"]})', 'value': float(len(res['unmatched'])),
                 'tol': 0, 'pass': res['pass']})

  # ---- targets ----
  gt_boxes = np.stack([case['gt/boxes/0'], case['gt/boxes/1']])
  gt_classes = np.stack([case['gt/classes/0'], case['gt/classes/1']])
  gt_weights = np.stack([case['gt/weights/0'], case['gt/weights/1']])
  out_size = (size // 4, size // 4)
  tg = jax.tree.map(np.asarray, targets.build_targets(
      gt_boxes, gt_classes, gt_weights, output_size=out_size, num_classes=num_classes,
      min_overlap=0.7, radius_variant='odapi'))
  row('targets: center heatmap', _maxabs(tg['heatmap'], case['ta/heatmap']),
      TOLERANCES['target'])
  m = gt_boxes.shape[1]
  ta_idx = case['ta/indices']
  our_idx = np.concatenate([np.repeat(np.arange(2), m)[:, None],
                            tg['indices'].reshape(-1, 2)], axis=1)
  real = case['ta/weights'] > 0  # padding boxes: TF keeps raw indices, ours are clipped
  row('targets: box center indices (real boxes)',
      float(np.abs(our_idx[real] - ta_idx[real]).max()), 0)
  row('targets: box size (h, w)', _maxabs(tg['size'].reshape(-1, 2)[real],
                                          case['ta/size'][real]), TOLERANCES['target'])
  row('targets: box offset (y, x)', _maxabs(tg['offset'].reshape(-1, 2)[real],
                                            case['ta/offset'][real]), TOLERANCES['target'])
  row('targets: box weights', _maxabs(tg['weights'].reshape(-1), case['ta/weights']), 0)

  # ---- losses (image 0, as model.loss after provide_groundtruth) ----
  tg0 = targets.build_targets(gt_boxes[:1], gt_classes[:1], gt_weights[:1],
                              output_size=out_size, num_classes=num_classes)
  valid = targets.valid_output_mask(true_size, size, out_size)
  tf_pred_list = [{key: jnp.asarray(case[f'pred/{key}/{i}']) for key in outputs[i]}
                  for i in range(len(outputs))]
  for label, preds in (('on TF predictions', tf_pred_list),
                       ('on our predictions', [jax.tree.map(jnp.asarray, o) for o in outputs])):
    _, comps = losses.centernet_loss(preds, tg0, config.loss, valid)
    for key, value in comps.items():
      ref = case[f'loss/Loss/{key}']
      # On our predictions the loss also carries the head differences (tolerance 1e-4).
      row(f'loss {key}, {label} (rel; TF {float(ref):.6g})',
          abs(float(value) - float(ref)) / max(abs(float(ref)), 1e-12),
          TOLERANCES['loss_rel'] if preds is tf_pred_list else TOLERANCES['head_rel'])

  if any(key.startswith('ta/kp/') for key in case):
    compare_keypoints(case, row, outputs, tf_pred_list, tf_heads, true_size, original, size,
                      num_classes, k)

  result = {
      'variant': info['variant'], 'case': args.case, 'backbone': config.model.backbone,
      'model_built': how, 'input_size': size, 'image_size': list(image.shape[:2]),
      'num_checkpoint_variables': info['num_checkpoint_variables'],
      'conversion': report.summary(), 'rows': rows,
      'pass': all(r['pass'] for r in rows), 'head_diffs': head_diffs,
      'float64_floor': floor,
      'timings': {'odapi': info['timings'], 'convert_s': t_convert,
                  'our_apply_first_s': t_apply_first, 'our_apply_s': t_apply,
                  'compare_total_s': time.time() - t_start},
      'machine': f'{platform.machine()}, {os.cpu_count()} CPU cores, '
                 f'{platform.system()} {platform.release()}; jax {jax.__version__} '
                 f'({jax.default_backend()}), TF (reading) {tf.__version__}, '
                 f'OD API TF {info["tf_version"]}',
  }
  for r in rows:
    if r.get('info'):
      print(f"info {r['name']}")
    else:
      print(f"{'ok  ' if r['pass'] else 'FAIL'} {r['name']}: {r['value']:.3g} (tol {r['tol']})")
  print(f"{info['variant']}: {'PASS' if result['pass'] else 'FAIL'}; {report.summary()}")
  path = args.json or os.path.join(args.case, 'result.json')
  with open(path, 'w') as f:
    json.dump(result, f, indent=2, default=float)
  return 0 if result['pass'] else 1


if __name__ == '__main__':
  sys.exit(main())
