r"""TF2 zoo row `centernet_resnet101_v1_fpn_512x512_coco17_tpu-8`: ResNet-101 v1 FPN, 512x512.

Zoo (tf2_detection_zoo.md): COCO val2017 box AP 34.2 (config comment: 34.18), speed 34 ms
(unspecified GPU, batch 1, end to end; see docs/zoo_speed.md for ours).
Archive: http://download.tensorflow.org/models/object_detection/tf2/20200711/
centernet_resnet101_v1_fpn_512x512_coco17_tpu-8.tar.gz
Recipe: `configs/tf2/centernet_resnet101_v1_fpn_512x512_coco17_tpu-8.config`
(docs/odapi_reference.md, section 9): batch 128 on TPU-8, 140k steps, Adam eps 1e-7, manual
steps 1e-3 -> 1e-4 at 90k -> 1e-5 at 120k, flip + crop (0.5-1.7, coef 0.25) + colour + pad
(200/200 black), 90 heatmap channels (COCO id - 1), 100 detections, init from the Keras
ImageNet ResNet101 (`fine_tune_checkpoint_type: "classification"`, `weights-1`: the backbone
only; FPN and heads fresh).

Shared by every zoo row (data, evaluation ground truth, the keypoint settings, what the
three steps below do, the differences from the zoo's own runs): docs/zoo.md.

1. Initialisation ('classification': the Keras ImageNet ResNet101, backbone only;
   `$PY` is the Python of the OD API environment, docs/zoo.md):

     $PY -c "import tensorflow as tf; m = tf.keras.applications.ResNet101(weights='imagenet'); tf.train.Checkpoint(feature_extractor=m).save('imagenet/resnet101/weights')"
     curl -L http://download.tensorflow.org/models/object_detection/tf2/20200711/centernet_resnet101_v1_fpn_512x512_coco17_tpu-8.tar.gz | tar xz
     python -m centernet_jax.import_tf_checkpoint --archive centernet_resnet101_v1_fpn_512x512_coco17_tpu-8 \
         --checkpoint imagenet/resnet101/weights-1 --init_type classification --workdir runs/r101_init

2. Training (on a TPU v4-32 see docs/launch.md):

     python -m centernet_jax.main --config experiments/centernet_resnet101_v1_fpn_512x512_coco17_tpu-8.py \
         --workdir runs/r101_fpn_512 --config.init_checkpoint=runs/r101_init \
         --config.dataset.tfds_data_dir=$TFDS_DATA_DIR

3. Evaluating the published checkpoint:

     python -m centernet_jax.import_tf_checkpoint --archive centernet_resnet101_v1_fpn_512x512_coco17_tpu-8 \
         --workdir runs/r101_fpn_512_zoo
     python -m centernet_jax.main --config experiments/centernet_resnet101_v1_fpn_512x512_coco17_tpu-8.py \
         --workdir runs/r101_fpn_512_zoo --mode eval --config.dataset.tfds_data_dir=$TFDS_DATA_DIR
"""

from centernet_jax import zoo_recipes as zoo


def get_config():
  c = zoo.coco17()
  zoo.crop_pad_augmentation(c, 512)
  zoo.model(c, 'resnet_v1_fpn', depth=101)
  zoo.adam_manual_steps(c, batch_size=128, num_train_steps=140000,
                        boundaries=(90000, 120000), rates=(1e-3, 1e-4, 1e-5))
  return c
