r"""Kubernetes (GKE) launcher: a JobSet (or an indexed Job + headless Service) manifest.

  python -m launch.k8s --name cn-r50 --image us-docker.pkg.dev/P/R/centernet:latest \
      --platform gpu --num_processes 2 --gpus_per_process 8 --gpu_type nvidia-h100-80gb \
      --config experiments/demo.py --workdir gs://BUCKET/runs/cn-r50 [--dry_run]
  python -m launch.k8s --name cn-r50 --image ... --platform tpu --accelerator v4-32 ...

One pod per JAX process. Every pod gets the same command,
`python -m centernet_jax.main ... --distributed --coordinator_address=$(JAX_COORDINATOR_ADDRESS)
--num_processes=$(JAX_NUM_PROCESSES) --process_id=$(JAX_PROCESS_ID)`, with the variables set
in the pod: the coordinator is pod 0's stable DNS name (JobSet: NAME-workers-0-0.NAME, through
the headless service JobSet creates; indexed Job: NAME-0.NAME through the Service emitted
alongside), the process id is the pod's completion index. A GPU pod drives all GPUs it asks
for; a TPU pod all chips of its host (GKE sets the TPU topology variables itself).

The manifest is written to `--output` (default runs/launch_logs/k8s/NAME.yaml) and applied
with `kubectl apply -f`; `--dry_run` prints it and the command instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import sys
from typing import Any, Mapping, Sequence

from launch import common

# GKE node labels of TPU slices: generation -> cloud.google.com/gke-tpu-accelerator.
GKE_TPU_ACCELERATORS = {
    'v4': 'tpu-v4-podslice',
    'v5litepod': 'tpu-v5-lite-podslice',
    'v5e': 'tpu-v5-lite-podslice',
    'v5p': 'tpu-v5p-slice',
    'v6e': 'tpu-v6e-slice',
}
# Default topologies of v4 slices (TensorCores in the name, 2 per chip, 4 chips per host).
V4_TOPOLOGIES = {8: '2x2x1', 16: '2x2x2', 32: '2x2x4', 64: '2x4x4', 128: '4x4x4',
                 256: '4x4x8', 512: '4x8x8', 1024: '8x8x8'}
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


# ---------------------------------------------------------------------------------------------
# A small YAML writer (block style; strings quoted whenever YAML could read them otherwise).

_PLAIN = re.compile(r'[A-Za-z_/][A-Za-z0-9_./@-]*')
_YAML_WORDS = {'true', 'false', 'yes', 'no', 'on', 'off', 'null', 'y', 'n', '~'}


def _scalar(value: Any) -> str:
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, (int, float)):
    return repr(value)
  if value is None:
    return 'null'
  text = str(value)
  if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
    return text
  return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(value: Any, indent: int = 0) -> str:
  """Block-style YAML for dicts, lists and scalars."""
  pad = ' ' * indent
  lines = []
  if isinstance(value, Mapping):
    for key, item in value.items():
      if isinstance(item, (Mapping, list)) and item:
        lines.append(f'{pad}{_scalar(key)}:')
        lines.append(to_yaml(item, indent + (0 if isinstance(item, list) else 2)))
      else:
        lines.append(f'{pad}{_scalar(key)}: {_empty_or_scalar(item)}')
  elif isinstance(value, list):
    for item in value:
      if isinstance(item, (Mapping, list)) and item:
        body = to_yaml(item, indent + 2)
        lines.append(f'{pad}- {body[indent + 2:]}')
      else:
        lines.append(f'{pad}- {_empty_or_scalar(item)}')
  else:
    lines.append(pad + _scalar(value))
  return '\n'.join(lines)


def _empty_or_scalar(item: Any) -> str:
  if isinstance(item, Mapping):
    return '{}'
  if isinstance(item, list):
    return '[]'
  return _scalar(item)


# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class K8sJob:
  """One multi-process training job on Kubernetes.

  Attributes:
    name: JobSet/Job name (lowercase DNS label; also the headless service's name).
    image: container image with the code installed (workingDir is the checkout).
    num_processes: pods (= JAX processes).
    platform: 'gpu' or 'tpu'.
    gpus_per_process: GPUs per pod (gpu).
    gpu_type: GKE accelerator label value, e.g. nvidia-h100-80gb (gpu; optional).
    tpu_accelerator: GKE TPU accelerator label, e.g. tpu-v4-podslice (tpu).
    tpu_topology: e.g. 2x2x4 (tpu).
    chips_per_process: TPU chips per pod/host (tpu).
    kind: 'jobset' or 'job' (indexed Job + headless Service).
    namespace: optional namespace.
    coordinator_port: port of the jax.distributed coordinator on pod 0.
    working_dir: the container's working directory (the repository checkout).
    python: the interpreter in the image.
    env: extra environment variables.
    service_account: optional Kubernetes service account (e.g. Workload Identity for GCS).
    max_restarts: JobSet restarts of the whole set after a failure (resume from checkpoints).
  """
  name: str
  image: str
  num_processes: int
  platform: str = 'gpu'
  gpus_per_process: int = 1
  gpu_type: str | None = None
  tpu_accelerator: str | None = None
  tpu_topology: str | None = None
  chips_per_process: int = 4
  kind: str = 'jobset'
  namespace: str | None = None
  coordinator_port: int = 8476
  working_dir: str | None = None
  python: str = 'python'
  env: Mapping[str, str] = dataclasses.field(default_factory=dict)
  service_account: str | None = None
  max_restarts: int = 0

  REPLICATED_JOB = 'workers'

  def __post_init__(self):
    if not re.fullmatch(r'[a-z]([-a-z0-9]*[a-z0-9])?', self.name) or len(self.name) > 40:
      raise ValueError(f'name {self.name!r}: lowercase letters, digits and -, at most 40 '
                       'characters (pod hostnames append to it)')
    if self.platform not in ('gpu', 'tpu'):
      raise ValueError(f'platform must be gpu or tpu, got {self.platform!r}')
    if self.kind not in ('jobset', 'job'):
      raise ValueError(f'kind must be jobset or job, got {self.kind!r}')
    if self.platform == 'tpu' and not (self.tpu_accelerator and self.tpu_topology):
      raise ValueError('tpu needs --tpu_accelerator and --tpu_topology (or --accelerator)')
    if self.num_processes < 1:
      raise ValueError('--num_processes must be >= 1')

  @property
  def coordinator_address(self) -> str:
    if self.kind == 'jobset':
      host = f'{self.name}-{self.REPLICATED_JOB}-0-0.{self.name}'
    else:
      host = f'{self.name}-0.{self.name}'
    return f'{host}:{self.coordinator_port}'

  def command(self, train_args: Sequence[str]) -> list[str]:
    # $(VAR) is expanded by Kubernetes from the container's env (no shell involved).
    return [self.python, '-m', common.TRAIN_MODULE, *train_args, '--distributed',
            '--coordinator_address=$(JAX_COORDINATOR_ADDRESS)',
            '--num_processes=$(JAX_NUM_PROCESSES)', '--process_id=$(JAX_PROCESS_ID)']

  def pod_spec(self, train_args: Sequence[str]) -> dict[str, Any]:
    env = [
        {'name': 'JAX_COORDINATOR_ADDRESS', 'value': self.coordinator_address},
        {'name': 'JAX_NUM_PROCESSES', 'value': str(self.num_processes)},
        {'name': 'JAX_PROCESS_ID', 'valueFrom': {'fieldRef': {'fieldPath': COMPLETION_INDEX}}},
        {'name': 'PYTHONUNBUFFERED', 'value': '1'},
    ] + [{'name': k, 'value': str(v)} for k, v in self.env.items()]
    container: dict[str, Any] = {'name': 'train', 'image': self.image}
    if self.working_dir:
      container['workingDir'] = self.working_dir
    container['command'] = self.command(train_args)
    container['env'] = env
    container['ports'] = [{'containerPort': self.coordinator_port, 'name': 'coordinator'}]
    spec: dict[str, Any] = {'restartPolicy': 'Never'}
    if self.kind == 'job':
      spec['subdomain'] = self.name
    if self.service_account:
      spec['serviceAccountName'] = self.service_account
    if self.platform == 'gpu':
      container['resources'] = {'limits': {'nvidia.com/gpu': self.gpus_per_process}}
      if self.gpu_type:
        spec['nodeSelector'] = {'cloud.google.com/gke-accelerator': self.gpu_type}
    else:
      container['resources'] = {'limits': {'google.com/tpu': self.chips_per_process}}
      spec['nodeSelector'] = {'cloud.google.com/gke-tpu-accelerator': self.tpu_accelerator,
                              'cloud.google.com/gke-tpu-topology': self.tpu_topology}
    spec['containers'] = [container]
    return spec

  def job_spec(self, train_args: Sequence[str]) -> dict[str, Any]:
    return {
        'parallelism': self.num_processes,
        'completions': self.num_processes,
        'completionMode': 'Indexed',
        'backoffLimit': 0,
        'template': {'spec': self.pod_spec(train_args)},
    }

  def _metadata(self, **extra) -> dict[str, Any]:
    meta: dict[str, Any] = {'name': self.name}
    if self.namespace:
      meta['namespace'] = self.namespace
    meta.update(extra)
    return meta

  def documents(self, train_args: Sequence[str]) -> list[dict[str, Any]]:
    """The Kubernetes objects to apply, in order."""
    if self.kind == 'jobset':
      # TPU: one slice (node pool) per JobSet, as GKE's multi-host TPU examples do.
      annotations = ({'alpha.jobset.sigs.k8s.io/exclusive-topology':
                          'cloud.google.com/gke-nodepool'} if self.platform == 'tpu' else {})
      meta = self._metadata(**({'annotations': annotations} if annotations else {}))
      return [{
          'apiVersion': 'jobset.x-k8s.io/v1alpha2',
          'kind': 'JobSet',
          'metadata': meta,
          'spec': {
              'failurePolicy': {'maxRestarts': self.max_restarts},
              'network': {'enableDNSHostnames': True, 'publishNotReadyAddresses': True},
              'replicatedJobs': [{
                  'name': self.REPLICATED_JOB,
                  'replicas': 1,
                  'template': {'spec': self.job_spec(train_args)},
              }],
          },
      }]
    service = {
        'apiVersion': 'v1',
        'kind': 'Service',
        'metadata': self._metadata(),
        'spec': {'clusterIP': 'None', 'publishNotReadyAddresses': True,
                 'selector': {'job-name': self.name}},
    }
    job = {'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': self._metadata(),
           'spec': self.job_spec(train_args)}
    return [service, job]

  def manifest(self, train_args: Sequence[str]) -> str:
    return '---\n'.join(to_yaml(doc) + '\n' for doc in self.documents(train_args))


def tpu_defaults(accelerator: str) -> dict[str, Any]:
  """`v4-32` -> GKE accelerator label, topology, processes and chips per process."""
  match = re.fullmatch(r'(v\d+[a-z]*)-(\d+)', accelerator)
  if not match:
    raise ValueError(f'accelerator {accelerator!r} is not like v4-32')
  gen, size = match.group(1), int(match.group(2))
  if gen not in GKE_TPU_ACCELERATORS:
    raise ValueError(f'no GKE label known for {accelerator!r}; pass --tpu_accelerator')
  if gen in ('v4', 'v5p'):  # the name counts TensorCores (2 per chip); 4 chips per host
    chips = size // 2
    per_host = min(chips, 4)
  else:  # v5e/v6e count chips; up to 8 chips form one host, larger slices 4 per host
    chips = size
    per_host = chips if chips <= 8 else 4
  out = {'tpu_accelerator': GKE_TPU_ACCELERATORS[gen], 'chips_per_process': per_host,
         'num_processes': max(1, chips // per_host)}
  if gen == 'v4' and size in V4_TOPOLOGIES:
    out['tpu_topology'] = V4_TOPOLOGIES[size]
  return out


def make_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m launch.k8s', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  common.add_train_flags(p)
  p.add_argument('--name', required=True, help='JobSet/Job name (lowercase DNS label).')
  p.add_argument('--image', required=True)
  p.add_argument('--platform', choices=['gpu', 'tpu'], default='gpu')
  p.add_argument('--kind', choices=['jobset', 'job'], default='jobset')
  p.add_argument('--num_processes', type=int, default=None, help='Pods (default 1, or from '
                 '--accelerator).')
  p.add_argument('--gpus_per_process', type=int, default=1)
  p.add_argument('--gpu_type', default=None, help='e.g. nvidia-h100-80gb.')
  p.add_argument('--accelerator', default=None,
                 help='TPU slice like v4-32: fills the TPU label, topology (v4) and counts.')
  p.add_argument('--tpu_accelerator', default=None, help='e.g. tpu-v4-podslice.')
  p.add_argument('--tpu_topology', default=None, help='e.g. 2x2x4.')
  p.add_argument('--chips_per_process', type=int, default=None)
  p.add_argument('--namespace', default=None)
  p.add_argument('--coordinator_port', type=int, default=8476)
  p.add_argument('--working_dir', default=None, help="The checkout's path in the image.")
  p.add_argument('--python', default='python')
  p.add_argument('--env', action='append', default=[], help='KEY=VALUE (repeat).')
  p.add_argument('--service_account', default=None)
  p.add_argument('--max_restarts', type=int, default=0)
  p.add_argument('--output', default=None, help='Manifest file (default '
                 'runs/launch_logs/k8s/NAME.yaml).')
  return p


def main(argv: Sequence[str] | None = None, out=None) -> int:
  parser = make_parser()
  args = common.parse_with_overrides(parser, argv)
  fields: dict[str, Any] = {}
  try:
    if args.accelerator:
      fields.update(tpu_defaults(args.accelerator))
    for key in ('num_processes', 'tpu_accelerator', 'tpu_topology', 'chips_per_process'):
      if getattr(args, key) is not None:
        fields[key] = getattr(args, key)
    fields.setdefault('num_processes', 1)
    job = K8sJob(name=args.name, image=args.image, platform=args.platform, kind=args.kind,
                 gpus_per_process=args.gpus_per_process, gpu_type=args.gpu_type,
                 namespace=args.namespace, coordinator_port=args.coordinator_port,
                 working_dir=args.working_dir, python=args.python,
                 env=common.parse_env(args.env), service_account=args.service_account,
                 max_restarts=args.max_restarts, **fields)
  except ValueError as e:
    parser.error(str(e))
  if job.num_processes > 1 and '://' not in args.workdir:
    parser.error('--workdir must be shared by all pods: use gs://...')
  train_args = common.train_args(common.resolve_config_path(args.config), args.workdir,
                                 args.overrides, mode=args.mode)
  path = pathlib.Path(args.output or f'runs/launch_logs/k8s/{job.name}.yaml')
  runner = common.Runner(dry_run=args.dry_run, out=out)
  runner.write_file(path, job.manifest(train_args))
  try:
    runner.run(['kubectl', 'apply', '-f', str(path)])
  except (common.CommandError, OSError) as e:
    runner.comment(f'kubectl apply failed: {e}')
    return getattr(e, 'returncode', 1) or 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
