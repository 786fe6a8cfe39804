r"""TF2 zoo row `centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8`.

ResNet-50 v1 FPN, boxes + 17 person keypoints.

Zoo (tf2_detection_zoo.md): COCO val2017 box AP 29.3 / keypoint AP 50.7, speed 30 ms
(unspecified GPU, batch 1, end to end).
Archive: http://download.tensorflow.org/models/object_detection/tf2/20200711/
centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8.tar.gz
Recipe: `configs/tf2/centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8.config`
(docs/odapi_reference.md, section 9): batch 128 on TPU-8, 250k steps, Adam eps 1e-7, cosine
1e-3 with linear warmup from 2.5e-4 over 5k steps, flip (+ the keypoint permutation) + crop
(0.5-1.7, coef 0.25) + colour + pad (200/200 black), 90 heatmap channels (COCO id - 1), 100
detections, init from the Keras ImageNet ResNet50 (`fine_tune_checkpoint_type:
"classification"`).

Shared by every zoo row (data, evaluation ground truth, the keypoint settings, what the
three steps below do, the differences from the zoo's own runs): docs/zoo.md.

1. Initialisation ('classification': the Keras ImageNet ResNet50, backbone only;
   `$PY` is the Python of the OD API environment, docs/zoo.md):

     $PY -c "import tensorflow as tf; m = tf.keras.applications.ResNet50(weights='imagenet'); tf.train.Checkpoint(feature_extractor=m).save('imagenet/resnet50/weights')"
     curl -L http://download.tensorflow.org/models/object_detection/tf2/20200711/centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8.tar.gz | tar xz
     python -m centernet_jax.import_tf_checkpoint --archive centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8 \
         --checkpoint imagenet/resnet50/weights-1 --init_type classification --workdir runs/r50_fpn_512_kpts_init

2. Training (on a TPU pod slice see docs/launch.md):

     python -m centernet_jax.main --config experiments/centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8.py \
         --workdir runs/r50_fpn_512_kpts --config.init_checkpoint=runs/r50_fpn_512_kpts_init \
         --config.dataset.tfds_data_dir=$TFDS_DATA_DIR

3. Evaluating the published checkpoint (its keypoint heads are converted too):

     python -m centernet_jax.import_tf_checkpoint --archive centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8 \
         --workdir runs/r50_fpn_512_kpts_zoo
     python -m centernet_jax.main --config experiments/centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8.py \
         --workdir runs/r50_fpn_512_kpts_zoo --mode eval --config.dataset.tfds_data_dir=$TFDS_DATA_DIR
"""

from centernet_jax import zoo_recipes as zoo


def get_config():
  c = zoo.coco17(keypoints=True)
  zoo.crop_pad_augmentation(c, 512)
  zoo.model(c, 'resnet_v1_fpn', depth=50)
  zoo.adam_cosine(c, batch_size=128, num_train_steps=250000, learning_rate=1e-3,
                  warmup_learning_rate=2.5e-4, warmup_steps=5000)
  return c
