r"""The OD API side of benchmarks/vs_odapi.py; runs INSIDE the OD API reference env.

  PY=$(tools/odapi_env.sh | tail -n 1)
  $PY benchmarks/odapi_worker.py --variant r50v1fpn --case DIR

Builds the variant with the OD API's own classes and random weights (parity/odapi_build.py's
`make_model` and `randomize_and_calibrate`: the zoo row's settings, 90 classes), and writes into
--case what our side needs to run the very same thing:
  ckpt/ckpt-1.*       the weights (zoo key names), converted by our side's importer;
  pipeline.config     the model config;
  inputs.npz          `images` uint8 [8, 480, 640, 3] (smooth random pictures),
                      `train_images` float32 [2, S, S, 3] raw 0..255 (the first two, resized and
                      padded by the OD API's resizer), `train_boxes` float32 [2, 10, 4] y-first
                      normalized to that canvas, `train_classes` int32 [2, 10].
Then it traces every measured function once and serves timing requests, one per stdin line,
answering each with one JSON line on stdout:
  e2e1    tf.function(preprocess + predict + postprocess) on images[:1]   (uint8 -> float32)
  e2e8    the same on images[:8]
  decode  tf.function(postprocess) on the predictions of images[:1]
  train   tf.function: provide_groundtruth + GradientTape(predict + loss) + Adam update,
          at batch 2 (model_lib_v2.eager_train_step without its summaries)
  profile_train N   N training steps under `tf.profiler`; answers `ops`, each executed op's
          (name, type) -> milliseconds per step, summed over the executor threads
          (benchmarks/step_ops.py)
  quit
Each timing request runs its function once and reports wall milliseconds (outputs fetched to
numpy).
"""

import argparse
import gc
import glob
import json
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'parity'))
import odapi_build  # pylint: disable=g-import-not-at-top,wrong-import-position


NUM_IMAGES = 8
TRAIN_BATCH = 2
TRAIN_BOXES = 10


def train_ground_truth(rng, num_classes, size):
  """TRAIN_BOXES boxes per image inside the S x S canvas (normalized, y-first)."""
  yx = rng.uniform(0.02, 0.6, (TRAIN_BATCH, TRAIN_BOXES, 2))
  hw = rng.uniform(0.05, 0.35, (TRAIN_BATCH, TRAIN_BOXES, 2))
  boxes = np.concatenate([yx, np.minimum(yx + hw, 0.74)], -1).astype(np.float32)
  classes = rng.randint(0, num_classes, (TRAIN_BATCH, TRAIN_BOXES)).astype(np.int32)
  return boxes, classes


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variant', required=True, choices=sorted(odapi_build.VARIANTS))
  parser.add_argument('--case', required=True)
  parser.add_argument('--input_size', type=int, default=512)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--measures', default='e2e1,e2e8,decode,train',
                      help='the requests to trace and warm up (only these will be asked for)')
  args = parser.parse_args()
  os.makedirs(args.case, exist_ok=True)
  tf.random.set_seed(args.seed)
  odapi_build.no_download_mobilenet()
  fe_text, num_classes, extra, make_fe, use_depthwise = odapi_build.VARIANTS[args.variant]
  with open(os.path.join(args.case, 'pipeline.config'), 'w') as f:
    f.write('model {' + odapi_build.MODEL_TEMPLATE.format(
        num_classes=num_classes, feature_extractor=fe_text, extra=extra,
        size=args.input_size) + '}\n')

  model = odapi_build.make_model(args, num_classes, make_fe, use_depthwise)
  images = np.stack([odapi_build.smooth_image(480, 640, args.seed + i)
                     for i in range(NUM_IMAGES)])
  preprocessed, true_shapes = model.preprocess(tf.constant(images[:1], tf.float32))
  model.predict(preprocessed, true_shapes)  # creates the variables
  odapi_build.randomize_and_calibrate(model, preprocessed, args.seed + 1)
  tf.train.Checkpoint(model=model).save(os.path.join(args.case, 'ckpt', 'ckpt'))

  resized = tf.stack([model._image_resizer_fn(tf.constant(images[i], tf.float32))[0]  # pylint: disable=protected-access
                      for i in range(TRAIN_BATCH)])
  rng = np.random.RandomState(args.seed + 2)
  boxes, classes = train_ground_truth(rng, num_classes, args.input_size)
  np.savez(os.path.join(args.case, 'inputs.npz'), images=images,
           train_images=resized.numpy().astype(np.float32), train_boxes=boxes,
           train_classes=classes)

  @tf.function
  def end_to_end(uint8_images):
    pre, shapes = model.preprocess(tf.cast(uint8_images, tf.float32))
    return model.postprocess(model.predict(pre, shapes), shapes)

  @tf.function
  def postprocess(prediction_dict, shapes):
    return model.postprocess(prediction_dict, shapes)

  optimizer = tf.keras.optimizers.Adam(learning_rate=1e-4, epsilon=1e-7)
  train_shapes = tf.constant([[args.input_size, args.input_size, 3]] * TRAIN_BATCH, tf.int32)
  gt_boxes = [tf.constant(b) for b in boxes]
  gt_classes = [tf.one_hot(c, num_classes) for c in classes]
  gt_weights = [tf.ones([TRAIN_BOXES], tf.float32)] * TRAIN_BATCH

  @tf.function
  def train_step(train_images):
    # As model_lib_v2.eager_train_step: training mode, ground truth, tape over predict + loss.
    tf.keras.backend.set_learning_phase(True)
    model._is_training = True  # pylint: disable=protected-access
    model.provide_groundtruth(groundtruth_boxes_list=gt_boxes,
                              groundtruth_classes_list=gt_classes,
                              groundtruth_weights_list=gt_weights)
    with tf.GradientTape() as tape:
      pre = model._feature_extractor.preprocess(train_images)  # pylint: disable=protected-access
      predictions = model.predict(pre, train_shapes)
      losses = model.loss(predictions, train_shapes)
      total = tf.add_n([v for k, v in losses.items() if k.startswith('Loss/')])
    variables = model.trainable_variables
    grads = tape.gradient(total, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return total

  inputs = {'e2e1': tf.constant(images[:1]), 'e2e8': tf.constant(images[:NUM_IMAGES])}
  pre1, shapes1 = model.preprocess(tf.constant(images[:1], tf.float32))
  predictions1 = {k: v for k, v in model.predict(pre1, shapes1).items()
                  if k != 'preprocessed_inputs'}
  train_images = tf.constant(resized)
  runs = {
      'e2e1': lambda: end_to_end(inputs['e2e1']),
      'e2e8': lambda: end_to_end(inputs['e2e8']),
      'decode': lambda: postprocess(predictions1, shapes1),
      'train': lambda: train_step(train_images),
  }
  t0 = time.perf_counter()
  for m in args.measures.split(','):  # trace + first run
    tf.nest.map_structure(lambda t: t.numpy(), runs[m]())
  print(json.dumps({'ready': True, 'warmup_s': time.perf_counter() - t0,
                    'tf_version': tf.__version__, 'num_classes': num_classes}), flush=True)
  for line in sys.stdin:
    what = line.strip()
    if what == 'quit':
      break
    if what.startswith('profile_train'):
      steps = int(what.split()[1])
      print(json.dumps({'what': 'profile_train', 'ops': profile_ops(runs['train'], steps)}),
            flush=True)
      continue
    gc.collect()  # as our worker does: no collection of the previous call's garbage in the timing
    t0 = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), runs[what]())
    print(json.dumps({'what': what, 'ms': (time.perf_counter() - t0) * 1e3}), flush=True)


def profile_ops(step, steps: int) -> list:
  """Runs `step` `steps` times under `tf.profiler`; returns [[op name, op type, ms per step]]
  for every op the executor ran (its threads' events), summed over threads and steps."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
      step().numpy()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True)[0], 'rb') as f:
      space.ParseFromString(f.read())
  totals = {}
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith('tf_Compute'):
        continue
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if name == 'ExecutorState::Process':
          continue
        totals[name] = totals.get(name, 0.0) + event.duration_ps / 1e9 / steps
  # TF names an executed op '<op name>:<op type>'.
  return [[*name.rsplit(':', 1), ms] if ':' in name else [name, name, ms]
          for name, ms in totals.items()]


if __name__ == '__main__':
  main()
