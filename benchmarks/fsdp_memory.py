r"""Per-device train-state memory (params + BN statistics + Adam state) with and without FSDP.

  python benchmarks/fsdp_memory.py --config experiments/centernet_hg104_1024x1024_coco17_tpu-32.py \
      --devices 32 --fsdp 1,2,4,8,32

Nothing is allocated: the state is built with `jax.eval_shape` and each leaf's per-device
bytes come from its shard shape under `sharding.state_shardings` on a mesh of simulated CPU
devices, so the figures are exact for the stored arrays (activations and temporaries are not
included). Prints a Markdown table.
"""

import argparse
import os


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--devices', type=int, default=32)
  parser.add_argument('--fsdp', default='1,2,4,8,32')
  parser.add_argument('--num_classes', type=int, default=90)
  args = parser.parse_args()
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={args.devices}')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top,g-multiple-import
  from centernet_jax import experiments, model_variables, models, optimizer, sharding

  config = experiments.load_config(args.config)
  model = models.build_model(config.model, args.num_classes)
  tx, _ = optimizer.make_optimizer(config)
  abstract = model_variables.abstract_train_state(model, tx, config.input.size)
  num_params = sum(x.size for x in jax.tree.leaves(abstract.params))
  print(f'{config.model.backbone} ({os.path.basename(args.config)}), {num_params:,} '
        f'parameters, {args.devices} devices, jax {jax.__version__}\n')
  print('| fsdp | data | params MiB/device | BN stats MiB/device | Adam state MiB/device '
        '| total MiB/device |')
  print('|---|---|---|---|---|---|')
  for fsdp in (int(f) for f in args.fsdp.split(',')):
    config.mesh.data = -1
    config.mesh.fsdp = fsdp
    mesh = sharding.make_mesh(config.mesh)
    shardings = sharding.state_shardings(mesh, abstract)
    parts = [sharding.bytes_per_device(getattr(abstract, f), getattr(shardings, f)) / 2**20
             for f in ('params', 'batch_stats', 'opt_state')]
    print(f'| {fsdp} | {mesh.shape["data"]} | {parts[0]:.1f} | {parts[1]:.2f} | {parts[2]:.1f} '
          f'| {sum(parts):.1f} |')


if __name__ == '__main__':
  main()
