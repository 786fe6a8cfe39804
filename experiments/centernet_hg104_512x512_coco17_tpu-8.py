r"""TF2 zoo row `centernet_hg104_512x512_coco17_tpu-8`: CenterNet Hourglass-104, 512x512, boxes.

Zoo (tf2_detection_zoo.md): COCO val2017 box AP 41.9 (config comment: 41.92 +- 0.16 over 5
runs), speed 70 ms (unspecified GPU, batch 1, end to end; see docs/zoo_speed.md for ours).
Archive: http://download.tensorflow.org/models/object_detection/tf2/20200713/
centernet_hg104_512x512_coco17_tpu-8.tar.gz
Recipe: `configs/tf2/centernet_hourglass104_512x512_coco17_tpu-8.config`
(docs/odapi_reference.md, section 9): batch 128 on TPU-8, 140k steps, Adam eps 1e-7, manual
steps 1e-3 -> 1e-4 at 90k -> 1e-5 at 120k, flip + crop (0.5-1.7, coef 0.25) + colour + pad
(200/200 black), 90 heatmap channels (COCO id - 1), 100 detections, init from the ExtremeNet
checkpoint (`fine_tune_checkpoint_type: "detection"`: the feature extractor only).

Shared by every zoo row (data, evaluation ground truth, the keypoint settings, what the
three steps below do, the differences from the zoo's own runs): docs/zoo.md.

1. Initialisation ('detection': the 20200711 ExtremeNet archive, feature extractor only):

     curl -L http://download.tensorflow.org/models/object_detection/tf2/20200713/centernet_hg104_512x512_coco17_tpu-8.tar.gz | tar xz
     curl -L http://download.tensorflow.org/models/object_detection/tf2/20200711/extremenet.tar.gz | tar xz
     python -m centernet_jax.import_tf_checkpoint --archive centernet_hg104_512x512_coco17_tpu-8 \
         --checkpoint <unpacked extremenet dir> --init_type detection --workdir runs/hg104_512_init

2. Training (on a TPU v4-32 see docs/launch.md):

     python -m centernet_jax.main --config experiments/centernet_hg104_512x512_coco17_tpu-8.py \
         --workdir runs/hg104_512 --config.init_checkpoint=runs/hg104_512_init \
         --config.dataset.tfds_data_dir=$TFDS_DATA_DIR

3. Evaluating the published checkpoint:

     python -m centernet_jax.import_tf_checkpoint --archive centernet_hg104_512x512_coco17_tpu-8 \
         --workdir runs/hg104_512_zoo
     python -m centernet_jax.main --config experiments/centernet_hg104_512x512_coco17_tpu-8.py \
         --workdir runs/hg104_512_zoo --mode eval --config.dataset.tfds_data_dir=$TFDS_DATA_DIR
"""

from centernet_jax import zoo_recipes as zoo


def get_config():
  c = zoo.coco17()
  zoo.crop_pad_augmentation(c, 512)
  zoo.model(c, 'hourglass', depth=104)
  zoo.adam_manual_steps(c, batch_size=128, num_train_steps=140000,
                        boundaries=(90000, 120000), rates=(1e-3, 1e-4, 1e-5))
  return c
