r"""TF2 zoo row `centernet_mobilenetv2fpn_512x512_coco17_kpts`.

MobileNetV2 FPN, person boxes + 17 keypoints.

Zoo (tf2_detection_zoo.md, added 2021-02-10): COCO val2017 keypoint AP 41.7 (the single number
listed; a person-only model), speed 6 ms (unspecified GPU, batch 1, end to end).
Archive: http://download.tensorflow.org/models/object_detection/tf2/20210210/
centernet_mobilenetv2fpn_512x512_coco17_kpts.tar.gz
Recipe: the archive's pipeline.config as quoted by a third party (research note
tf_od_api_centernet.md 5.2 and its notes; not in `configs/tf2`, not independently checked):
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

Data: `coco_keypoints/2017`, this project's TFDS builder (TFDS's `coco/2017` has no keypoints):
every COCO 2017 instance plus the 17 person joints, built once from the official files
(annotations/{instances,person_keypoints}_{train,val}2017.json, train2017/, val2017/):

     python -m centernet_jax.data.tfds_coco_keypoints --manual_dir /data/coco \
         --data_dir $TFDS_DATA_DIR

Evaluation ground truth: the official `person_keypoints_val2017.json` (person boxes) (box AP) and
`person_keypoints_val2017.json` (keypoint AP, OKS with COCO's 17 sigmas), by default under
`data_cache/` (override with `--config.dataset.val_annotations=...` and
`--config.dataset.val_keypoint_annotations=...`). `eval_metrics.json` holds the box metrics
and `keypoints/AP`, ... Keypoint settings are the zoo's (research note 2.3): task `human_pose`
on person, per-joint heatmap std devs (nose .26 ... ankles .89), offset and regression on the
29-pixel disc (radius 3), per-keypoint offsets, loss weights 1.0 / 1.0 / 0.1, the
`min_distance` refinement (box x1.2, radius 0.3, candidate threshold 0.1, unmatched score 0.1),
flip with the COCO left/right permutation.

1. Initialisation ('classification': the MobileNetV2 backbone only; FPN and heads fresh). The
   OD API downloads the Keras ImageNet weights when it builds the model; the same weights as
   an OD API classification checkpoint, made in the OD API environment (Keras 2;
   `PY=$(tools/odapi_env.sh | tail -n 1)`):

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

Differences from the zoo run: BN statistics come from the global batch (the zoo's MobileNet BNs
used per-replica statistics); losses are normalised by the global box / joint count (research
note 5.1).
"""

from centernet_jax import config_base


def get_config():
  c = config_base.base_config()
  c.dataset.source = 'tfds'
  c.dataset.tfds_name = 'coco_keypoints/2017'
  # Person only: the label map comes from the person keypoint file (1 category).
  c.dataset.val_annotations = 'data_cache/person_keypoints_val2017.json'
  c.dataset.val_keypoint_annotations = 'data_cache/person_keypoints_val2017.json'
  c.dataset.label_map_mode = 'id_minus_one'  # 1 channel: person (id 1)
  c.dataset.max_boxes = 100  # max_number_of_boxes

  c.input.size = 512
  c.input.random_flip = True  # with the 17-joint left/right permutation
  c.input.random_patch_gaussian = True  # right after the flip
  c.input.patch_gaussian_min_size = 1
  c.input.patch_gaussian_max_size = 250
  c.input.patch_gaussian_min_stddev = 0.0
  c.input.patch_gaussian_max_stddev = 1.0
  c.input.patch_gaussian_keep_original_prob = 0.0  # random_coef 0: always applied
  c.input.random_crop = True  # random_crop_image 0.5-1.7, random_coef 0.25
  c.input.crop_min_aspect_ratio = 0.5
  c.input.crop_max_aspect_ratio = 1.7
  c.input.crop_keep_original_prob = 0.25
  c.input.color_jitter = True  # hue 0.02, contrast/saturation 0.8-1.25, brightness 0.2
  c.input.random_pad = True  # random_absolute_pad_image 200/200, black
  c.input.max_pad_pixels = 200
  c.input.random_square_crop = False

  c.model.backbone = 'mobilenet_v2_fpn'
  c.model.width_multiplier = 1.0  # depth_multiplier 1.0
  c.model.use_separable_conv = True  # mobilenet_v2_fpn_sep_conv
  c.model.depthwise_heads = True  # use_depthwise: true
  c.model.num_classes = 1  # person
  c.model.head_channels = 256

  # keypoint_estimation_task "human_pose" on person (/m/01g317): joints, skeleton and flip
  # permutation from the person category of the keypoint files; std devs and OKS sigmas from
  # the COCO joint names (keypoint_spec.py).
  c.keypoints.enabled = True
  c.keypoints.class_name = 'person'
  c.keypoints.task_name = 'human_pose'
  c.keypoints.heatmap_loss_weight = 1.0
  c.keypoints.offset_loss_weight = 1.0
  c.keypoints.regression_loss_weight = 0.1
  c.keypoints.offset_peak_radius = 3
  c.keypoints.per_keypoint_offset = True

  c.optimizer.adam_epsilon = 1e-8  # not set in the config: the proto default
  c.optimizer.schedule = 'cosine'
  c.optimizer.learning_rate = 5e-3
  c.optimizer.warmup_learning_rate = 1e-4
  c.optimizer.warmup_steps = 5000
  c.batch_size = 512
  c.num_train_steps = 300000

  c.eval.max_detections = 20  # max_box_predictions: 20
  c.init_checkpoint = ''  # the converted ImageNet init (step 1 above); '' = from scratch
  return c
