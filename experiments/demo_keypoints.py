r"""The keypoint demo: a narrow ResNet-18 FPN CenterNet with a keypoint task on synthetic figures.

Command (what `make demo-keypoints` runs):
  python -m centernet_jax.main --config experiments/demo_keypoints.py \
      --workdir runs/demo_keypoints

The synthetic COCO-format keypoint set (stick figures with 9 named joints, left/right pairs,
some occluded or unlabelled, plus distractor balls; centernet_jax/data/synthetic_keypoints.py)
is generated under data_cache/synthetic_keypoints on first use.

Measured (2026-11-24, a fresh clone, `time make demo-keypoints` on this project's 2-core CPU
sandbox, no other load, jax 0.12 CPU): 5 min 27 s wall in all: creating .venv ~35 s,
generating the set 10 s, training 1000 steps (batch 16, 128 x 128) at 4.6-5.1 steps/s with 2
evaluations 3 min 42 s, detect on 6 val images. Evaluation on the 200 val images at step
1000 (runs/demo_keypoints/eval_metrics.json):
  keypoints/AP 0.709, AP50 0.988, AP75 0.817, AR 0.786 (OKS; the joint names' sigmas:
  shoulders .079, hips .107, the others 0.05; `area` = the figure's box area);
  box AP 0.687, AP50 0.962, AP75 0.811.
At step 500: keypoints/AP 0.607, box AP 0.534. (The same figures, to the digit, as a run of
the same config on a loaded machine at 1.4-1.7 steps/s: the run is deterministic.)
"""

from centernet_jax import config_base


def get_config():
  c = config_base.synthetic_demo_config('synthetic_keypoints', 'data_cache/synthetic_keypoints',
                                        max_boxes=8, num_train_steps=1000)
  c.keypoints.enabled = True  # joints, skeleton and flip permutation from the dataset
  return c
