r"""TF2 zoo row `centernet_mobilenetv2fpn_512x512_coco17_od`: MobileNetV2 FPN, 512x512, boxes.

Zoo (tf2_detection_zoo.md, added 2021-02-10): COCO val2017 box AP 23.4, speed 6 ms
(unspecified GPU, batch 1, end to end; see docs/zoo_speed.md for ours).
Archive: http://download.tensorflow.org/models/object_detection/tf2/20210210/
centernet_mobilenetv2fpn_512x512_coco17_od.tar.gz

RECIPE UNKNOWN. The row has no config in `configs/tf2`; only the archive's pipeline.config
exists, which was not retrieved (docs/odapi_reference.md, section 9 and its notes).
What is taken from where:
  * model: `mobilenet_v2_fpn_sep_conv` (separable 3x3 FPN convs) with `use_depthwise: true`
    (separable first head conv), depth multiplier 1.0, 512x512: as the MobileNetV2 FPN kpts
    archive (third-party quotes of its pipeline.config); `import_tf_checkpoint` checks these
    fields against this archive's pipeline.config and refuses a mismatch, naming the field.
  * classes: 90 (COCO id - 1), as a 23.4 COCO mAP requires. Users quote `num_classes: 1` and
    `max_box_predictions: 20` from this archive (tensorflow/models #9969, #11081, #10913),
    which contradicts the published COCO mAP; if the archive really says 1, the importer
    refuses (`model.num_classes is 90, the archive needs 1`) and the published number cannot
    be a 90-class COCO evaluation of it.
  * batch 128: the users' quote of this archive's pipeline.config.
  * everything else is the nearest known config, the MobileNetV2 FPN kpts archive (same
    backbone, input and date; third-party copy of its pipeline.config): 300k steps, cosine
    5e-3 with linear warmup from 1e-4 over 5k steps, Adam epsilon not set there, so the
    proto default 1e-8, augmentations flip + random_patch_gaussian (patch side U[1, 250),
    sigma U[0, 1) on x/255, always applied) + crop (0.5-1.7, coef 0.25) + colour + pad
    (200/200 black), ImageNet initialisation of the backbone (Keras `weights='imagenet'`,
    `fine_tune_checkpoint_type: ""`). That config trained batch 512 with this learning rate;
    the rate was not rescaled for 128.
  * detections: 100, the COCO protocol. To evaluate the published checkpoint as its
    pipeline.config may say, add `--config.eval.max_detections=20`.

Shared by every zoo row (data, evaluation ground truth, the keypoint settings, what the
three steps below do, the differences from the zoo's own runs): docs/zoo.md.

1. Initialisation ('classification': the Keras ImageNet MobileNetV2, backbone only;
   `$PY` is the Python of the OD API environment, docs/zoo.md):

     $PY -c "import tensorflow as tf; m = tf.keras.applications.MobileNetV2(weights='imagenet'); tf.train.Checkpoint(feature_extractor=m).save('imagenet/mobilenet_v2/weights')"
     curl -L http://download.tensorflow.org/models/object_detection/tf2/20210210/centernet_mobilenetv2fpn_512x512_coco17_od.tar.gz | tar xz
     python -m centernet_jax.import_tf_checkpoint --archive centernet_mobilenetv2fpn_512x512_coco17_od \
         --checkpoint imagenet/mobilenet_v2/weights-1 --init_type classification --workdir runs/mnv2_init

2. Training:

     python -m centernet_jax.main --config experiments/centernet_mobilenetv2fpn_512x512_coco17_od.py \
         --workdir runs/mnv2_fpn_512 --config.init_checkpoint=runs/mnv2_init \
         --config.dataset.tfds_data_dir=$TFDS_DATA_DIR

3. Evaluating the published checkpoint:

     python -m centernet_jax.import_tf_checkpoint --archive centernet_mobilenetv2fpn_512x512_coco17_od \
         --workdir runs/mnv2_fpn_512_zoo
     python -m centernet_jax.main --config experiments/centernet_mobilenetv2fpn_512x512_coco17_od.py \
         --workdir runs/mnv2_fpn_512_zoo --mode eval --config.dataset.tfds_data_dir=$TFDS_DATA_DIR
"""

from centernet_jax import zoo_recipes as zoo


def get_config():
  c = zoo.coco17()
  zoo.crop_pad_augmentation(c, 512, patch_gaussian=True)  # as in the keypoint row's config
  # depth_multiplier 1.0, mobilenet_v2_fpn_sep_conv, use_depthwise: true
  zoo.model(c, 'mobilenet_v2_fpn', depthwise_heads=True, use_separable_conv=True)
  # Recipe unknown for this row: the MobileNetV2 keypoint row's schedule at batch 128.
  zoo.adam_cosine(c, batch_size=128, num_train_steps=300000, learning_rate=5e-3,
                  warmup_learning_rate=1e-4, warmup_steps=5000, adam_epsilon=1e-8)
  return c
