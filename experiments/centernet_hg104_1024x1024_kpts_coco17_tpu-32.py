r"""TF2 zoo row `centernet_hg104_1024x1024_kpts_coco17_tpu-32`: Hourglass-104 1024x1024 keypoints.

Zoo (tf2_detection_zoo.md): COCO val2017 box AP 42.8 / keypoint AP 64.5, speed 211 ms
(unspecified GPU, batch 1, end to end).
Archive: http://download.tensorflow.org/models/object_detection/tf2/20200711/
centernet_hg104_1024x1024_kpts_coco17_tpu-32.tar.gz
Recipe: `configs/tf2/centernet_hourglass104_1024x1024_kpts_coco17_tpu-32.config`
(docs/odapi_reference.md, section 9): batch 128 on TPU-32, 250k steps, Adam eps 1e-7, cosine
1e-3 with linear warmup from 2.5e-4 over 5k steps, flip (+ the keypoint permutation) + colour +
random_square_crop_by_scale (scales linspace(0.6, 1.3, 8), max border 128; joints outside the
crop become unlabelled) and NO random_crop_image / random_absolute_pad_image, 90 heatmap
channels (COCO id - 1), 100 detections, init from the ExtremeNet checkpoint
(`fine_tune_checkpoint_type: "detection"`).

Shared by every zoo row (data, evaluation ground truth, the keypoint settings, what the
three steps below do, the differences from the zoo's own runs): docs/zoo.md.

1. Initialisation ('detection': the 20200711 ExtremeNet archive, feature extractor only):

     curl -L http://download.tensorflow.org/models/object_detection/tf2/20200711/centernet_hg104_1024x1024_kpts_coco17_tpu-32.tar.gz | tar xz
     curl -L http://download.tensorflow.org/models/object_detection/tf2/20200711/extremenet.tar.gz | tar xz
     python -m centernet_jax.import_tf_checkpoint --archive centernet_hg104_1024x1024_kpts_coco17_tpu-32 \
         --checkpoint <unpacked extremenet dir> --init_type detection --workdir runs/hg104_1024_kpts_init

2. Training (on a TPU pod slice see docs/launch.md):

     python -m centernet_jax.main --config experiments/centernet_hg104_1024x1024_kpts_coco17_tpu-32.py \
         --workdir runs/hg104_1024_kpts --config.init_checkpoint=runs/hg104_1024_kpts_init \
         --config.dataset.tfds_data_dir=$TFDS_DATA_DIR

3. Evaluating the published checkpoint (its keypoint heads are converted too):

     python -m centernet_jax.import_tf_checkpoint --archive centernet_hg104_1024x1024_kpts_coco17_tpu-32 \
         --workdir runs/hg104_1024_kpts_zoo
     python -m centernet_jax.main --config experiments/centernet_hg104_1024x1024_kpts_coco17_tpu-32.py \
         --workdir runs/hg104_1024_kpts_zoo --mode eval --config.dataset.tfds_data_dir=$TFDS_DATA_DIR
"""

from centernet_jax import zoo_recipes as zoo


def get_config():
  c = zoo.coco17(keypoints=True)
  zoo.square_crop_augmentation(c, 1024)
  zoo.model(c, 'hourglass', depth=104)
  zoo.adam_cosine(c, batch_size=128, num_train_steps=250000, learning_rate=1e-3,
                  warmup_learning_rate=2.5e-4, warmup_steps=5000)
  return c
