r"""The demo: a narrow ResNet-18 FPN CenterNet on the embedded synthetic shapes set.

Command (what `make demo` runs):
  python -m centernet_jax.main --config experiments/demo.py --workdir runs/demo

The synthetic COCO-format set is generated under data_cache/synthetic on first use.
Recipe (2026-12-01, for the slower 2-core CPUs): the narrow ResNet-18 FPN of
`config_base.synthetic_demo_config` at input 96 instead of 128 (0.71 instead of 1.30 GFLOP
per training image), batch 8, 2000 steps, evaluation and checkpoints every 1000 steps.
Measured on a 2-core Intel Xeon that trains the previous recipe (128 px, batch 16, 1500 steps)
at 1.6-1.7 steps/s like the slower CPU kind: 5.5-5.9 steps/s (46 images/s), `main` 6 min
55 s from start to end, COCO box AP on the 200 val images 0.635 at step 2000 (AP50 0.930,
AP75 0.757; 0.472 at step 1000). The previous recipe measured AP 0.704 in 1500 steps at
128 px; 96 px with the same steps/s budget but batch 16 and 1000 steps gave 0.583, width 0.25
at 128 px 0.496 (docs/benchmarks.md, "Demo recipe").
"""

from centernet_jax import config_base


def get_config():
  c = config_base.synthetic_demo_config('synthetic', 'data_cache/synthetic', max_boxes=24,
                                        num_train_steps=2000)
  c.input.size = 96
  c.batch_size = 8
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
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
