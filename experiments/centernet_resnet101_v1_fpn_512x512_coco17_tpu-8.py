r"""TF2 zoo row `centernet_resnet101_v1_fpn_512x512_coco17_tpu-8`: ResNet-101 v1 FPN, 512x512.

Zoo (tf2_detection_zoo.md): COCO val2017 box AP 34.2 (config comment: 34.18), speed 34 ms
(unspecified GPU, batch 1, end to end; see docs/zoo_speed.md for ours).
Archive: http://download.tensorflow.org/models/object_detection/tf2/20200711/
centernet_resnet101_v1_fpn_512x512_coco17_tpu-8.tar.gz
Recipe: `configs/tf2/centernet_resnet101_v1_fpn_512x512_coco17_tpu-8.config` (research note
tf_od_api_centernet.md, 5.1 / 5.2): batch 128 on TPU-8, 140k steps, Adam eps 1e-7, manual
steps 1e-3 -> 1e-4 at 90k -> 1e-5 at 120k, flip + crop (0.5-1.7, coef 0.25) + colour + pad
(200/200 black), 90 heatmap channels (COCO id - 1), 100 detections, init from the Keras
ImageNet ResNet101 (`fine_tune_checkpoint_type: "classification"`, `weights-1`: the backbone
only; FPN and heads fresh).

Data: TFDS `coco/2017` (build once: `tfds build coco/2017 --data_dir=$TFDS_DATA_DIR`) with the
official `instances_val2017.json` as evaluation ground truth, by default at
`data_cache/instances_val2017.json` (override with `--config.dataset.val_annotations=...`).

1. Initialisation ('classification'). The ImageNet checkpoint is what the OD API's
   `models/keras_models/convert_keras_models.py` writes: the Keras application with its top,
   saved as `tf.train.Checkpoint(feature_extractor=model)`. Make it in the OD API environment
   (Keras 2; `PY=$(tools/odapi_env.sh | tail -n 1)`), then convert it; the row archive only
   supplies pipeline.config (and picks this experiment file by name):

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

Differences from the zoo run: BN statistics come from the global batch (the zoo's ResNet BNs
used per-replica statistics, 16 images per TPU core); losses are normalised by the global box
count (the OD API averages per-replica normalised losses, research note 5.1).
"""

from centernet_jax import config_base


def get_config():
  c = config_base.base_config()
  c.dataset.source = 'tfds'
  c.dataset.tfds_name = 'coco/2017'
  c.dataset.val_annotations = 'data_cache/instances_val2017.json'
  c.dataset.label_map_mode = 'id_minus_one'  # 90 channels, channel = COCO id - 1
  c.dataset.max_boxes = 100  # max_number_of_boxes

  c.input.size = 512
  c.input.random_flip = True
  c.input.random_crop = True  # random_crop_image 0.5-1.7, random_coef 0.25
  c.input.crop_min_aspect_ratio = 0.5
  c.input.crop_max_aspect_ratio = 1.7
  c.input.crop_keep_original_prob = 0.25
  c.input.color_jitter = True  # hue 0.02, contrast/saturation 0.8-1.25, brightness 0.2
  c.input.random_pad = True  # random_absolute_pad_image 200/200, black
  c.input.max_pad_pixels = 200
  c.input.random_square_crop = False
  c.input.random_patch_gaussian = False

  c.model.backbone = 'resnet_v1_fpn'
  c.model.depth = 101
  c.model.width_multiplier = 1.0
  c.model.num_classes = 90
  c.model.head_channels = 256
  c.model.depthwise_heads = False

  c.optimizer.adam_epsilon = 1e-7
  c.optimizer.schedule = 'manual_steps'
  c.optimizer.manual_boundaries = (90000, 120000)
  c.optimizer.manual_rates = (1e-3, 1e-4, 1e-5)
  c.batch_size = 128
  c.num_train_steps = 140000

  c.eval.max_detections = 100
  c.init_checkpoint = ''  # the converted ImageNet init (step 1 above); '' = from scratch
  return c
