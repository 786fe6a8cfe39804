"""Default configuration shared by every experiment file.

Experiment files under `experiments/` call `base_config()` and override what their recipe
changes. Every field can be overridden on the command line, e.g.
`--config.dataset.train_annotations=/data/x.json --config.batch_size=16`.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Returns the defaults: a ResNet-50 v1 FPN CenterNet at 512x512 on COCO-format data."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # ---- data ----
  c.dataset = ml_collections.ConfigDict()
  # 'coco_json': annotation JSON + image folder (any COCO-format set);
  # 'synthetic': the embedded generator, written under `synthetic_dir` on first use;
  # 'tfds': TFDS `coco/2017` for images, with the official val JSON for evaluation.
  c.dataset.source = 'coco_json'
  c.dataset.train_annotations = ''
  c.dataset.train_images = ''
  c.dataset.val_annotations = ''
  c.dataset.val_images = ''
  # Optional second COCO JSON per split holding the keypoints (COCO's person_keypoints_*.json):
  # its annotations add `keypoints` to the annotations of the same id in *_annotations. Empty:
  # the keypoints are read from *_annotations itself. Keypoint AP uses the val one when set.
  c.dataset.train_keypoint_annotations = ''
  c.dataset.val_keypoint_annotations = ''
  c.dataset.synthetic_dir = 'data_cache/synthetic'
  c.dataset.synthetic_num_train = 2000
  c.dataset.synthetic_num_val = 200
  c.dataset.synthetic_image_size = 128
  c.dataset.synthetic_min_object_size = 8
  c.dataset.synthetic_seed = 0  # generation seed of the synthetic set (independent of c.seed)
  c.dataset.tfds_name = 'coco/2017'
  c.dataset.tfds_data_dir = ''
  c.dataset.tfds_train_split = 'train'
  c.dataset.tfds_val_split = 'validation'
  # 'contiguous': sorted category ids -> 0..N-1; 'id_minus_one': channel = id - 1 (TF2 zoo).
  c.dataset.label_map_mode = 'contiguous'
  c.dataset.max_boxes = 100
  c.dataset.shuffle_buffer = 1000
  c.dataset.num_parallel_calls = -1  # tf.data.AUTOTUNE
  c.dataset.cache_decoded = False  # cache decoded train images in memory (small sets only)
  c.dataset.cache_max_mib = 2048.0  # ... unless they would take more than this: then no cache
  # Start-up check of every image file of both splits (data/image_check.py): 'decode' decodes
  # each with the decoder training uses (parallel; verdicts cached in <workdir>/image_checks.json
  # by path, size and mtime, so a rerun is instant); 'header' only opens the header (fast, for
  # huge sets on slow storage); 'none' only checks that the files exist. A file that fails, or
  # whose size disagrees with the JSON's width/height, stops the run naming it, or with
  # skip_bad_images=True is skipped, counted and listed in <workdir>/skipped_images.txt. At run
  # time, an image that fails to decode is skipped by name under skip_bad_images (and counted
  # in TensorBoard as data/skipped_images), else it stops the run naming the file.
  c.dataset.check_images = 'decode'
  c.dataset.skip_bad_images = False
  c.dataset.image_check_threads = 0  # 0: twice the CPU count (at most 64)
  c.dataset.image_check_cache = True  # False: check every file again on each start
  # Images with more pixels than this are refused at start-up, from their header (a decoded
  # 13500 x 13500 image is 0.5 GiB); replaces PIL's decompression-bomb guard (178 Mpixel).
  c.dataset.max_image_pixels = 300_000_000

  # ---- input / augmentation ----
  c.input = ml_collections.ConfigDict()
  c.input.size = 512  # square input side S; output maps are S/4
  # The training augmentations in order, as ops of data/augment.py (example dict -> example
  # dict, the OD API's semantics): 'op|op(arg, name=value)|...', arguments as Python literals
  # (positional ones in the op's signature order). Op i is seeded from its name and position
  # i, so the stream stays a pure function of (seed, position). Geometric ops run on the host
  # (one resample per image), the colour ops in the train step on device (colour_augment.py;
  # docs/odapi_reference.md section 8 says what that changes). '' for none. The default is
  # the zoo's 512 recipe (zoo_recipes.crop_pad_augmentation); the ops and their arguments:
  #   random_horizontal_flip(probability=0.5)
  #   random_patch_gaussian(min_patch_size=1, max_patch_size=250, min_gaussian_stddev=0.0,
  #                         max_gaussian_stddev=1.0, random_coef=0.0)
  #   random_crop_image(min_object_covered=1.0, aspect_ratio_range=(0.5, 1.7),
  #                     area_range=(0.1, 1.0), overlap_thresh=0.3, clip_boxes=True,
  #                     random_coef=0.25, max_attempts=100)
  #   random_adjust_hue(max_delta=0.02), random_adjust_contrast(min_delta=0.8, max_delta=1.25),
  #   random_adjust_saturation(min_delta=0.8, max_delta=1.25),
  #   random_adjust_brightness(max_delta=0.2)
  #   random_square_crop_by_scale(scale_min=0.6, scale_max=1.3, max_border=128, num_scales=8)
  #   random_absolute_pad_image(max_height_padding=200, max_width_padding=200)
  c.input.augmentations = (
      'random_horizontal_flip|random_crop_image(aspect_ratio_range=(0.5, 1.7), '
      'area_range=(0.1, 1.0), overlap_thresh=0.3, random_coef=0.25)|random_adjust_hue(0.02)|'
      'random_adjust_contrast(0.8, 1.25)|random_adjust_saturation(0.8, 1.25)|'
      'random_adjust_brightness(0.2)|random_absolute_pad_image(200, 200)')

  # ---- model ----
  c.model = ml_collections.ConfigDict()
  c.model.backbone = 'resnet_v1_fpn'
  c.model.depth = 50
  c.model.width_multiplier = 1.0  # < 1 gives narrow test/demo variants
  c.model.num_classes = 0  # 0: take the number of categories from the dataset
  c.model.head_channels = 256
  c.model.heatmap_bias_init = -2.19
  c.model.dtype = 'float32'  # compute dtype: 'float32' or 'bfloat16' (params stay float32)
  # Compute dtype of the prediction heads: 'float32' (the default) keeps them in float32 under
  # a bfloat16 backbone, since their last convolutions produce the focal loss' logits and the
  # box regressions, which bfloat16's 8-bit mantissa coarsens: the demo all-bfloat16 ends
  # 0.010-0.020 AP below float32, with float32 heads within 0.002 (docs/benchmarks.md,
  # "bfloat16"). '' follows model.dtype (all-bfloat16); 'bfloat16' says so explicitly.
  c.model.head_dtype = 'float32'
  c.model.depthwise_heads = False  # separable 3x3 in the heads (MobileNet FPN sep-conv rows)
  # Backbone-only settings, per backbone; `model.backbone` picks its entry, which is passed
  # verbatim as keyword arguments to that backbone's Flax module (models/<backbone>.py).
  c.model.backbone_kwargs = ml_collections.ConfigDict()
  c.model.backbone_kwargs.hourglass = {'depth': 104}  # only 104 (the zoo's Hourglass-104)
  c.model.backbone_kwargs.mobilenet_v2_fpn = {'use_separable_conv': True}  # sep-conv FPN (zoo)
  c.model.backbone_kwargs.resnet_v1_fpn = {}
  c.model.backbone_kwargs.resnet_v2 = {}

  # ---- targets and loss ----
  c.targets = ml_collections.ConfigDict()
  c.targets.min_overlap = 0.7
  # 'odapi': CornerNet's radius with its original bug, as the TF2 zoo trained;
  # 'corrected': the fixed roots (CornerNet commit 3e71377).
  c.targets.radius_variant = 'odapi'
  c.loss = ml_collections.ConfigDict()
  c.loss.center_weight = 1.0
  c.loss.scale_weight = 0.1
  c.loss.offset_weight = 1.0
  c.loss.focal_alpha = 2.0
  c.loss.focal_beta = 4.0

  # ---- keypoints (a zoo keypoint_estimation_task; see keypoint_spec.py) ----
  # Off: nothing keypoint-related exists (box-only models, batches and code paths).
  # On: the dataset's keypoint category (its 'keypoints' names and 'skeleton') defines the
  # joints; the heads `<task_name>/keypoint/{heatmap,offset,regression}` are added.
  c.keypoints = ml_collections.ConfigDict()
  c.keypoints.enabled = False
  c.keypoints.class_name = ''  # '' = the one category whose 'keypoints' list is non-empty
  c.keypoints.task_name = 'human_pose'
  # Empty tuples: derived from the joint names (keypoint_spec.py); one value: for all joints.
  c.keypoints.flip_permutation = ()
  c.keypoints.std_devs = ()  # heatmap sigma = std_dev x box sigma (zoo table for COCO names)
  c.keypoints.oks_sigmas = ()  # COCO sigmas for COCO names, else 0.05 (the OD API default)
  c.keypoints.heatmap_loss_weight = 1.0
  c.keypoints.offset_loss_weight = 1.0
  c.keypoints.regression_loss_weight = 0.1
  c.keypoints.offset_peak_radius = 3  # offset/regression targets on the 29-pixel disc
  c.keypoints.per_keypoint_offset = True
  # Decoding (the OD API's min_distance refinement; its proto defaults).
  c.keypoints.num_candidates = 100
  c.keypoints.candidate_score_threshold = 0.1
  c.keypoints.unmatched_score = 0.1
  c.keypoints.box_scale = 1.2
  c.keypoints.candidate_search_scale = 0.3

  # ---- optimisation ----
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.adam_epsilon = 1e-7
  c.optimizer.schedule = 'cosine'  # 'cosine' (linear warmup) or 'manual_steps'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_learning_rate = 2.5e-4
  c.optimizer.warmup_steps = 5000
  c.optimizer.manual_boundaries = (90000, 120000)
  c.optimizer.manual_rates = (1e-3, 1e-4, 1e-5)
  c.optimizer.grad_clip_norm = 0.0  # 0 disables; the zoo used none

  c.batch_size = 128  # global, over all devices and processes
  c.num_train_steps = 140000

  # ---- bookkeeping ----
  c.log_every_steps = 50
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  # Steps (start, stop) whose jax.profiler trace goes to <workdir>/plugins/profile (TensorBoard's
  # profile tab); () for none. E.g. --config.profile_steps='(20, 25)'.
  c.profile_steps = ()
  # Peak dense TFLOP/s of one device for train/mfu; 0: the table in performance.py by device
  # kind (no MFU is logged for a kind it does not list, e.g. CPUs).
  c.peak_tflops_per_device = 0.0
  c.init_checkpoint = ''  # optional orbax checkpoint dir to initialise params from
  # glibc keeps the host memory freed between calls for reuse (host_memory.py): XLA:CPU
  # allocates a program's buffers at every call. A process-wide setting, on glibc only, made by
  # `main` (one arena in training; the threads' heaps kept by `--mode eval` and `detect`) and by
  # `inference.Predictor`.
  c.keep_freed_host_memory = True

  # ---- evaluation ----
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8  # global
  c.eval.max_detections = 100
  c.eval.num_examples = 0  # 0: the whole val set
  c.eval.on_train_end = True
  # At every evaluation, TensorBoard images of the first val images (image_summaries.py):
  # predicted and ground-truth boxes (and skeletons), predicted vs target center heatmaps.
  c.eval.image_summaries = True
  c.eval.num_image_summaries = 4
  c.eval.image_summary_min_score = 0.3  # detections drawn from this score up
  # Test-time augmentation in evaluation, detect and export (tta.py, docs/tta.md): 'none',
  # 'flip' (the mirrored image's outputs flipped back and averaged), 'multiscale' (the
  # canvas resized to each of tta_scales, rounded to the backbone's input multiple; the
  # detections merged by class-aware tta_nms: 'soft' Gaussian soft-NMS with
  # tta_soft_nms_sigma, as the original CenterNet, or 'hard' NMS at IoU tta_nms_iou), or
  # 'flip_multiscale' (both).
  c.eval.tta = 'none'
  c.eval.tta_scales = (0.5, 0.75, 1.0, 1.25, 1.5)
  c.eval.tta_nms = 'soft'
  c.eval.tta_nms_iou = 0.5
  c.eval.tta_soft_nms_sigma = 0.5

  # ---- devices ----
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: every device the fsdp axis leaves
  # > 1 splits parameters and optimizer state over this many devices (FSDP); the batch is
  # split over data x fsdp either way.
  c.mesh.fsdp = 1
  return c


def synthetic_demo_config(source: str, synthetic_dir: str, *, max_boxes: int,
                          num_train_steps: int) -> ml_collections.ConfigDict:
  """What both CPU demos share: a 2000 / 200 image synthetic set of 128 x 128 images (cached
  decoded in memory), no crop or pad, a narrow ResNet-18 FPN (width 0.5, 64-channel heads),
  Adam with cosine decay from 2e-3 after 200 warmup steps from 2e-4, batch 16, evaluation
  and checkpoints every 500 steps."""
  c = base_config()
  c.dataset.source = source
  c.dataset.synthetic_dir = synthetic_dir
  c.dataset.synthetic_num_train = 2000
  c.dataset.synthetic_num_val = 200
  c.dataset.synthetic_image_size = 128
  c.dataset.max_boxes = max_boxes
  c.dataset.cache_decoded = True

  c.input.size = 128
  # flip and colour; no crop or pad
  c.input.augmentations = (
      'random_horizontal_flip|random_adjust_hue(0.02)|random_adjust_contrast(0.8, 1.25)|'
      'random_adjust_saturation(0.8, 1.25)|random_adjust_brightness(0.2)')

  c.model.backbone = 'resnet_v1_fpn'
  c.model.depth = 18
  c.model.width_multiplier = 0.5
  c.model.head_channels = 64

  c.optimizer.schedule = 'cosine'
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_learning_rate = 2e-4
  c.optimizer.warmup_steps = 200
  c.batch_size = 16
  c.num_train_steps = num_train_steps

  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.eval.batch_size = 20
  return c
