r"""TF2 zoo row `centernet_mobilenetv2fpn_512x512_coco17_kpts`.

MobileNetV2 FPN, person boxes + 17 keypoints.

Zoo (tf2_detection_zoo.md, added 2021-02-10): COCO val2017 keypoint AP 41.7 (the single number
listed; a person-only model), speed 6 ms (unspecified GPU, batch 1, end to end).
Archive: http://download.tensorflow.org/models/object_detection/tf2/20210210/
centernet_mobilenetv2fpn_512x512_coco17_kpts.tar.gz
Recipe: the archive's pipeline.config as quoted by a third party (docs/odapi_reference.md,
section 9 and its notes; not in `configs/tf2`, not independently checked):
`mobilenet_v2_fpn_sep_conv` (separable 3x3 FPN convs), `use_depthwise: true` (separable first
head conv), `num_classes: 1` (person only), `max_box_predictions: 20`, batch 512, 300k steps,
cosine 5e-3 with linear warmup from 1e-4 over 5k steps, Adam epsilon not set (so the proto
default 1e-8), flip (+ the keypoint permutation) + random_patch_gaussian (patch side
U[1, 250), sigma U[0, 1) on x/255, always applied) + crop (0.5-1.7, coef 0.25) + colour + pad
(200/200 black), ImageNet initialisation of the backbone through Keras
(`fine_tune_checkpoint_type: ""`).

Person only: the label map is the person category of `person_keypoints_val2017.json`
(`dataset.val_annotations`), so the other COCO classes are dropped from the TFDS examples
(as the OD API drops classes missing from its label map) and box AP is person box AP.

Shared by every zoo row (data, evaluation ground truth, the keypoint settings, what the
three steps below do, the differences from the zoo's own runs): docs/zoo.md.

1. Initialisation ('classification': the Keras ImageNet MobileNetV2, backbone only;
   `$PY` is the Python of the OD API environment, docs/zoo.md):

     $PY -c "import tensorflow as tf; m = tf.keras.applications.MobileNetV2(weights='imagenet'); tf.train.Checkpoint(feature_extractor=m).save('imagenet/mobilenet_v2/weights')"
     curl -L http://download.tensorflow.org/models/object_detection/tf2/20210210/centernet_mobilenetv2fpn_512x512_coco17_kpts.tar.gz | tar xz
     python -m centernet_jax.import_tf_checkpoint --archive centernet_mobilenetv2fpn_512x512_coco17_kpts \
         --checkpoint imagenet/mobilenet_v2/weights-1 --init_type classification --workdir runs/mnv2_kpts_init

2. Training (on a TPU pod slice see docs/launch.md):

     python -m centernet_jax.main --config experiments/centernet_mobilenetv2fpn_512x512_coco17_kpts.py \
         --workdir runs/mnv2_kpts --config.init_checkpoint=runs/mnv2_kpts_init \
         --config.dataset.tfds_data_dir=$TFDS_DATA_DIR

3. Evaluating the published checkpoint (its keypoint heads are converted too):

     python -m centernet_jax.import_tf_checkpoint --archive centernet_mobilenetv2fpn_512x512_coco17_kpts \
         --workdir runs/mnv2_kpts_zoo
     python -m centernet_jax.main --config experiments/centernet_mobilenetv2fpn_512x512_coco17_kpts.py \
         --workdir runs/mnv2_kpts_zoo --mode eval --config.dataset.tfds_data_dir=$TFDS_DATA_DIR
"""

from centernet_jax import zoo_recipes as zoo


def get_config():
  c = zoo.coco17(keypoints=True, person_only=True, max_detections=20)
  zoo.crop_pad_augmentation(c, 512, patch_gaussian=True)
  # depth_multiplier 1.0, mobilenet_v2_fpn_sep_conv, use_depthwise: true; one class: person
  zoo.model(c, 'mobilenet_v2_fpn', num_classes=1, depthwise_heads=True,
            use_separable_conv=True)
  # adam epsilon not set in the zoo config: the proto default 1e-8
  zoo.adam_cosine(c, batch_size=512, num_train_steps=300000, learning_rate=5e-3,
                  warmup_learning_rate=1e-4, warmup_steps=5000, adam_epsilon=1e-8)
  return c
