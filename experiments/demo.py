r"""The demo: a narrow ResNet-18 FPN CenterNet on the embedded synthetic shapes set.

Command (what `make demo` runs):
  python -m centernet_jax.main --config experiments/demo.py --workdir runs/demo

The synthetic COCO-format set is generated under data_cache/synthetic on first use.
Recipe (2026-12-02, for the slower 2-core CPUs): the narrow ResNet-18 FPN of
`config_base.synthetic_demo_config` at input 96 (0.71 GFLOP per training image), batch 8,
1500 steps at a peak learning rate of 4e-3 (cosine, 200 warmup steps), one evaluation at the
end, checkpoints every 500 steps. Expected: COCO box AP 0.61-0.63 on the 200 val images
(fresh clones since 2026-12-02: 0.614-0.627; 0.6238 on 2026-12-03 with `layers.BatchNorm`).
Measured on a 2-core Intel Xeon whose AVX-512 does not make it faster than the slower kind
(it trained the 2026-11 recipe, 128 px, batch 16, at the slower kind's 1.6-1.7 steps/s):
`make demo` in a fresh clone 8 min 33 s wall (2 min 14 s creating .venv, `main` 6 min 0 s,
`detect` 18 s), AP 0.626 at step 1500 (AP50 0.924, AP75 0.729), training at 5.1-5.8 steps/s.
With the colour ops still on the host (before 2026-12-02's device colour ops) the same
recipe gave 0.630, and 1500 steps at 2e-3 / 3e-3 gave 0.581 / 0.614; the previous recipe
(2e-3, 2000 steps, evaluations at 1000 and 2000) 0.630 with `main` in 8 min 45 s
(docs/benchmarks.md, "Demo recipe").
"""

from centernet_jax import config_base


def get_config():
  c = config_base.synthetic_demo_config('synthetic', 'data_cache/synthetic', max_boxes=24,
                                        num_train_steps=1500)
  c.input.size = 96
  c.batch_size = 8
  c.optimizer.learning_rate = 4e-3
  c.eval_every_steps = 0  # eval.on_train_end evaluates the last step
  c.checkpoint_every_steps = 500
  return c


def get_sweep():
  """Three learning rates on a 500-step schedule (a few minutes per run on 2 CPU cores):

    python -m launch.sweep --config experiments/demo.py --workdir runs/demo_sweep
  """
  from launch import sweep_utils as su  # pylint: disable=g-import-not-at-top
  return su.cross(
      su.product(**{'optimizer.learning_rate': [1e-3, 2e-3, 4e-3]}),
      su.fixed(**{'num_train_steps': 500, 'eval_every_steps': 500,
                  'checkpoint_every_steps': 250}))
