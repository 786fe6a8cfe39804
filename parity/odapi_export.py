r"""Exports a TF2 OD API CenterNet with the OD API's own exporter, as its users do.

Runs INSIDE the OD API reference environment (tools/odapi_env.sh), never in the project env:

  PY=$(tools/odapi_env.sh | tail -n 1)
  $PY parity/odapi_export.py --variant r50v1fpn --out runs/odapi_export/r50v1fpn [--input_size 512]

The model is built with random weights exactly as `parity/odapi_build.py` builds it (the zoo
row's settings), wrapped in `exporter_lib_v2.DetectionFromImageModule` (the module that
`exporter_main_v2.py --input_type image_tensor` exports) and saved with the concrete function
as its `serving_default` signature, the way `exporter_lib_v2.export_inference_graph` saves it.
Writes `--out/saved_model/` and `--out/signature.json` ({name: [dtype, rank]} of the signature's
inputs and outputs), which `parity/export_signature.py` compares with ours.
"""

import argparse
import json
import os
import sys
import types

import numpy as np
import tensorflow as tf

# exporter_lib_v2 imports model_builder only for `model_builder.build`, which this script does
# not call (it assembles the model as odapi_build.py does); model_builder itself imports every
# meta-architecture, some from tf-models-official, which the reference env does not install.
sys.modules.setdefault('object_detection.builders.model_builder',
                       types.ModuleType('object_detection.builders.model_builder'))
sys.modules['object_detection.builders.model_builder'].build = None
from object_detection import exporter_lib_v2  # pylint: disable=g-import-not-at-top,wrong-import-position

import odapi_build  # pylint: disable=wrong-import-position  # same folder: the variants and the model assembly


def signature_summary(saved_model_dir):
  signature = tf.saved_model.load(saved_model_dir).signatures['serving_default']
  _, inputs = signature.structured_input_signature
  summary = {name: [spec.dtype.name, spec.shape.rank] for name, spec in inputs.items()}
  summary.update({name: [spec.dtype.name, spec.shape.rank]
                  for name, spec in signature.structured_outputs.items()})
  return summary


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variant', required=True,
                      choices=sorted(odapi_build.VARIANTS) + sorted(odapi_build.KEYPOINT_VARIANTS))
  parser.add_argument('--out', required=True)
  parser.add_argument('--input_size', type=int, default=512)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  tf.random.set_seed(args.seed)
  odapi_build.no_download_mobilenet()

  keypoints = args.variant in odapi_build.KEYPOINT_VARIANTS
  base = odapi_build.KEYPOINT_VARIANTS.get(args.variant, args.variant)
  _, num_classes, _, make_fe, use_depthwise = odapi_build.VARIANTS[base]
  num_classes = odapi_build.KEYPOINT_NUM_CLASSES.get(args.variant, num_classes)
  model = odapi_build.make_model(args, num_classes, make_fe, use_depthwise, keypoints)
  image = tf.constant(odapi_build.smooth_image(480, 640, args.seed)[None].astype(np.float32))
  preprocessed, true_shapes = model.preprocess(image)
  model.predict(preprocessed, true_shapes)  # creates the variables
  odapi_build.randomize_and_calibrate(model, preprocessed, args.seed + 1)
  module = exporter_lib_v2.DetectionFromImageModule(model)
  concrete = module.__call__.get_concrete_function()
  saved = os.path.join(args.out, 'saved_model')
  tf.saved_model.save(module, saved, signatures=concrete)
  summary = signature_summary(saved)
  with open(os.path.join(args.out, 'signature.json'), 'w') as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  print(json.dumps(summary, sort_keys=True))


if __name__ == '__main__':
  main()
