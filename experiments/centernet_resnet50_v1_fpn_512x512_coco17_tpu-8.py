r"""TF2 zoo row `centernet_resnet50_v1_fpn_512x512_coco17_tpu-8`: ResNet-50 v1 FPN, 512x512.

Zoo (tf2_detection_zoo.md): COCO val2017 box AP 31.2, speed 27 ms (unspecified GPU, batch 1,
end to end; see docs/zoo_speed.md for ours).
Archive: http://download.tensorflow.org/models/object_detection/tf2/20200711/
centernet_resnet50_v1_fpn_512x512_coco17_tpu-8.tar.gz

RECIPE UNKNOWN. This row has no config in `configs/tf2` (only the archive's pipeline.config,
which was not retrieved; docs/odapi_reference.md, section 9). The model fields are
certain (the archive name, and `import_tf_checkpoint` checks them against the archive's
pipeline.config): `resnet_v1_50_fpn`, 512x512, 90 classes. The TRAINING recipe is the nearest
known config, `configs/tf2/centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8.config` (the
same backbone, input, TPU-8 and archive date, without the keypoint task): batch 128, 250k
steps, Adam eps 1e-7, cosine 1e-3 with linear warmup from 2.5e-4 over 5k steps, flip + crop
(0.5-1.7, coef 0.25) + colour + pad (200/200 black), init from the Keras ImageNet ResNet50
(`fine_tune_checkpoint_type: "classification"`). (The other candidate, the R101 v1 FPN boxes
config, uses 140k steps with manual steps; the keypoint row of the same backbone was preferred.)
Read the archive's pipeline.config `train_config` to replace this guess.

Shared by every zoo row (data, evaluation ground truth, the keypoint settings, what the
three steps below do, the differences from the zoo's own runs): docs/zoo.md.

1. Initialisation ('classification': the Keras ImageNet ResNet50, backbone only;
   `$PY` is the Python of the OD API environment, docs/zoo.md):

     $PY -c "import tensorflow as tf; m = tf.keras.applications.ResNet50(weights='imagenet'); tf.train.Checkpoint(feature_extractor=m).save('imagenet/resnet50/weights')"
     curl -L http://download.tensorflow.org/models/object_detection/tf2/20200711/centernet_resnet50_v1_fpn_512x512_coco17_tpu-8.tar.gz | tar xz
     python -m centernet_jax.import_tf_checkpoint --archive centernet_resnet50_v1_fpn_512x512_coco17_tpu-8 \
         --checkpoint imagenet/resnet50/weights-1 --init_type classification --workdir runs/r50_init

2. Training (on a TPU v4-32 see docs/launch.md):

     python -m centernet_jax.main --config experiments/centernet_resnet50_v1_fpn_512x512_coco17_tpu-8.py \
         --workdir runs/r50_fpn_512 --config.init_checkpoint=runs/r50_init \
         --config.dataset.tfds_data_dir=$TFDS_DATA_DIR

3. Evaluating the published checkpoint:

     python -m centernet_jax.import_tf_checkpoint --archive centernet_resnet50_v1_fpn_512x512_coco17_tpu-8 \
         --workdir runs/r50_fpn_512_zoo
     python -m centernet_jax.main --config experiments/centernet_resnet50_v1_fpn_512x512_coco17_tpu-8.py \
         --workdir runs/r50_fpn_512_zoo --mode eval --config.dataset.tfds_data_dir=$TFDS_DATA_DIR
"""

from centernet_jax import zoo_recipes as zoo


def get_config():
  c = zoo.coco17()
  zoo.crop_pad_augmentation(c, 512)
  zoo.model(c, 'resnet_v1_fpn', depth=50)
  # Recipe unknown for this row: the keypoint row's (see the docstring).
  zoo.adam_cosine(c, batch_size=128, num_train_steps=250000, learning_rate=1e-3,
                  warmup_learning_rate=2.5e-4, warmup_steps=5000)
  return c
