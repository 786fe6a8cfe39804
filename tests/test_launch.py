"""Launchers: generated TPU/SLURM/k8s commands and files, dry runs, quoting, local processes.

No real gcloud/sbatch/kubectl is needed: dry runs are checked as text, and the few real runs
use small fake `gcloud`/`sbatch` scripts put first on PATH.
"""

import io
import os
import pathlib
import shlex
import stat
import subprocess
import sys
import time

import pytest

from launch import common
from launch import k8s
from launch import local
from launch import slurm
from launch import tpu_vm

REPO = pathlib.Path(__file__).resolve().parent.parent
TRICKY = '/data/my images,train set'  # spaces and a comma
TRICKY_OVERRIDE = f'--config.dataset.train_images={TRICKY}'


def _fake_tool(directory: pathlib.Path, name: str, body: str) -> None:
  path = directory / name
  path.write_text('#!/bin/bash\n' + body)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def no_subprocess(monkeypatch):
  """Dry runs must not start anything."""
  def boom(*args, **kwargs):
    raise AssertionError(f'a dry run started a process: {args}')
  monkeypatch.setattr(subprocess, 'Popen', boom)
  monkeypatch.setattr(subprocess, 'run', boom)


def _v4(**kwargs):
  return tpu_vm.TpuVm(name='cn-r50', zone='us-central2-b', accelerator_type='v4-32', **kwargs)


# ---- common ------------------------------------------------------------------------------------


def test_override_args_and_train_command():
  assert common.override_args({'optimizer.learning_rate': 1e-3, 'batch_size': 16,
                               'eval.on_train_end': False, 'optimizer.manual_rates': (0.9, 1.1),
                               'dataset.train_images': TRICKY}) == [
      '--config.optimizer.learning_rate=0.001', '--config.batch_size=16',
      '--config.eval.on_train_end=False', '--config.optimizer.manual_rates=(0.9, 1.1)',
      TRICKY_OVERRIDE]
  assert common.override_args(['a.b=1', 'config.c=2', '--config.d=3']) == [
      '--config.a.b=1', '--config.c=2', '--config.d=3']
  with pytest.raises(ValueError):
    common.override_args(['--mode=eval'])
  assert common.train_command('experiments/demo.py', 'runs/x', {'batch_size': 8},
                              mode='eval') == [
      'python', '-m', 'centernet_jax.main', '--config', 'experiments/demo.py', '--workdir',
      'runs/x', '--mode', 'eval', '--config.batch_size=8']


def test_split_overrides():
  overrides, rest = common.split_overrides(
      ['--config.a=1', '--config.b', '2', '--name', 'x', TRICKY_OVERRIDE])
  assert overrides == ['--config.a=1', '--config.b=2', TRICKY_OVERRIDE]
  assert rest == ['--name', 'x']


@pytest.mark.parametrize('word', ['plain', TRICKY, "it's", 'a"b', '$HOME', 'x`y`', 'a\\b',
                                  'wow!', '', '--config.x=(1, 2)', 'tab\there'])
def test_quote_readable_round_trips(word):
  assert shlex.split(common.quote_readable(word)) == [word]
  result = subprocess.run(['bash', '-c', 'printf "%s" ' + common.quote_readable(word)],
                          capture_output=True, text=True, check=True)
  assert result.stdout == word


def test_resolve_config_path_makes_repo_relative(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  assert common.resolve_config_path(str(REPO / 'experiments' / 'demo.py')) == 'experiments/demo.py'
  assert common.resolve_config_path(str(REPO / 'experiments' / 'demo.py') + ':fast') == (
      'experiments/demo.py:fast')
  assert common.resolve_config_path('gs://b/x.py') == 'gs://b/x.py'


# ---- TPU VMs -----------------------------------------------------------------------------------


def test_default_runtime_versions():
  assert tpu_vm.default_runtime_version('v4-32') == 'tpu-ubuntu2204-base'
  assert tpu_vm.default_runtime_version('v5litepod-16') == 'v2-alpha-tpuv5-lite'
  assert tpu_vm.default_runtime_version('v5p-8') == 'v2-alpha-tpuv5'
  assert tpu_vm.default_runtime_version('v6e-16') == 'v2-alpha-tpuv6e'
  with pytest.raises(ValueError):
    tpu_vm.default_runtime_version('tpu7x-8')
  with pytest.raises(ValueError):
    _v4(spot=True, reserved=True)


def test_tpu_create_and_delete_commands():
  queued = _v4(queued=True, spot=True, valid_until_duration='6h')
  assert queued.create_command() == [
      'gcloud', 'compute', 'tpus', 'queued-resources', 'create', 'cn-r50-qr',
      '--node-id', 'cn-r50', '--zone', 'us-central2-b', '--accelerator-type', 'v4-32',
      '--runtime-version', 'tpu-ubuntu2204-base', '--valid-until-duration', '6h', '--spot']
  assert queued.state_command() == [
      'gcloud', 'compute', 'tpus', 'queued-resources', 'describe', 'cn-r50-qr',
      '--zone', 'us-central2-b', '--format=value(state.state)']
  assert queued.delete_command() == [
      'gcloud', 'compute', 'tpus', 'queued-resources', 'delete', 'cn-r50-qr',
      '--zone', 'us-central2-b', '--force', '--quiet']
  assert _v4(reserved=True, project='proj').create_command() == [
      'gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'cn-r50', '--zone', 'us-central2-b',
      '--project', 'proj', '--accelerator-type', 'v4-32', '--version', 'tpu-ubuntu2204-base',
      '--reserved']
  assert _v4().delete_command() == [
      'gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'cn-r50', '--zone', 'us-central2-b',
      '--quiet']
  assert _v4().ssh_command('echo hi') == [
      'gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'cn-r50', '--zone', 'us-central2-b',
      '--worker=all', '--command', 'echo hi']


V4_ARGS = ['--name', 'cn-r50', '--zone', 'us-central2-b', '--accelerator_type', 'v4-32',
           '--config', 'experiments/demo.py', '--workdir', 'gs://bucket/runs/cn-r50',
           '--env', 'TFDS_DATA_DIR=gs://bucket/tfds', '--config.batch_size=128', TRICKY_OVERRIDE]


def _commands(text):
  """The shell commands of a dry-run print (comments dropped, multi-line quotes joined)."""
  commands, current = [], ''
  for line in text.splitlines(keepends=True):
    if not current and line.startswith('#'):
      continue
    current += line
    try:
      commands.append(shlex.split(current))
      current = ''
    except ValueError:  # inside a quoted multi-line argument
      continue
  assert not current
  return commands


@pytest.mark.parametrize('queued', [True, False])
def test_tpu_dry_run_all(no_subprocess, queued, tmp_path):
  out = io.StringIO()
  argv = ['all', *V4_ARGS, '--delete', '--dry_run', '--log_dir', str(tmp_path / 'logs')]
  if queued:
    argv += ['--queued', '--spot']
  assert tpu_vm.main(argv, out=out) == 0
  commands = _commands(out.getvalue())
  heads = [' '.join(c[:5]) for c in commands]
  expected = ([
      'gcloud compute tpus queued-resources create',
      'gcloud compute tpus queued-resources describe'] if queued else [
      'gcloud compute tpus tpu-vm create']) + [
      'tar -czf ' + _v4().tarball_path() + ' --exclude=.git --exclude=.venv',
      'gcloud compute tpus tpu-vm scp',
      'gcloud compute tpus tpu-vm ssh', 'gcloud compute tpus tpu-vm ssh',
      'gcloud compute tpus tpu-vm ssh',
      'gcloud compute tpus queued-resources delete' if queued else
      'gcloud compute tpus tpu-vm delete']
  assert heads == expected
  if queued:
    assert '--spot' in commands[0] and 'repeats every 30 s' in out.getvalue()
  scp = commands[-5]
  assert scp[5:7] == [_v4().tarball_path(), 'cn-r50:centernet_jax_code.tar.gz']
  assert '--worker=all' in scp
  for ssh in commands[-4:-1]:
    assert '--worker=all' in ssh and ssh[-2] == '--command'
  install = commands[-3][-1]
  assert 'uv venv --python 3.12' in install and '-e . "jax[tpu]"' in install
  run_script = commands[-2][-1]
  assert 'CENTERNET_JAX_DISTRIBUTED=1' in run_script
  assert 'TFDS_DATA_DIR=gs://bucket/tfds' in run_script
  assert f'"{TRICKY_OVERRIDE}"' in run_script
  assert '| tee -a "$HOME/centernet_logs/cn-r50.log" | sed -u "s/^/[w$W] /"' in run_script
  assert not (tmp_path / 'logs').exists()


def test_tpu_run_script_quoting_through_bash(tmp_path):
  """The train line of the ssh script, run by a real bash, gives main the exact arguments."""
  venv = tmp_path / 'venv'
  (venv / 'bin').mkdir(parents=True)
  _fake_tool(venv / 'bin', 'python',
             'echo "DIST=$CENTERNET_JAX_DISTRIBUTED DATA=$TFDS_DATA_DIR"\nprintf "%s\\n" "$@"\n')
  tpu = _v4(venv=str(venv), remote_dir=str(tmp_path))
  args = common.train_args('experiments/demo.py', 'gs://b/r', [TRICKY_OVERRIDE, "--config.x=it's"])
  line = tpu.train_shell_command(args, {'TFDS_DATA_DIR': 'gs://b/tfds dir'})
  # Through both shells: the local one (dry-run print / argv) and the remote one.
  ssh = shlex.split(common.shell_join(tpu.ssh_command(line)))
  result = subprocess.run(['bash', '-c', ssh[-1]], capture_output=True, text=True, check=True)
  lines = result.stdout.splitlines()
  assert lines[0] == 'DIST=1 DATA=gs://b/tfds dir'
  assert lines[1:] == ['-m', 'centernet_jax.main', *args]


def test_tpu_workdir_must_be_gcs(capsys):
  with pytest.raises(SystemExit):
    tpu_vm.main(['run', '--name', 'x', '--zone', 'z', '--accelerator_type', 'v4-32',
                 '--config', 'experiments/demo.py', '--workdir', 'runs/x', '--dry_run'])
  assert 'gs://' in capsys.readouterr().err


def test_tpu_git_setup(no_subprocess):
  out = io.StringIO()
  tpu_vm.main(['setup', '--name', 'x', '--zone', 'z', '--accelerator_type', 'v5litepod-16',
               '--code', 'git', '--git_url', 'https://github.com/me/centernet_jax.git',
               '--git_ref', 'v1.0', '--dry_run'], out=out)
  commands = _commands(out.getvalue())
  assert len(commands) == 2
  clone = commands[0][-1]
  assert 'git clone https://github.com/me/centernet_jax.git "$HOME/centernet_jax"' in clone
  assert 'git -C "$HOME/centernet_jax" checkout v1.0' in clone


def test_tpu_run_streams_and_splits_worker_logs(tmp_path, monkeypatch):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  _fake_tool(bin_dir, 'gcloud', 'echo "SSH: connecting"\necho "[w0] step 1"\n'
             'echo "[w1] step 1"\necho "[w1] done"\nexit 0\n')
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  out = io.StringIO()
  log_dir = tmp_path / 'logs'
  status = tpu_vm.main(['run', *V4_ARGS, '--log_dir', str(log_dir)], out=out)
  assert status == 0
  assert '[w1] done' in out.getvalue()
  assert (log_dir / 'worker_0.log').read_text() == 'step 1\n'
  assert (log_dir / 'worker_1.log').read_text() == 'step 1\ndone\n'
  assert (log_dir / 'all.log').read_text().splitlines()[0] == 'SSH: connecting'


def test_tpu_queued_create_waits_for_active(tmp_path, monkeypatch):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  counter = tmp_path / 'count'
  _fake_tool(bin_dir, 'gcloud', f'''
if [[ " $* " == *" describe "* ]]; then
  n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}
  states=(WAITING_FOR_RESOURCES PROVISIONING ACTIVE); echo "${{states[$n]}}"
fi
''')
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  out = io.StringIO()
  runner = common.Runner(out=out)
  tpu_vm.create(runner, _v4(queued=True), poll_seconds=0.01)
  assert counter.read_text().strip() == '3'
  assert '# queued resource cn-r50-qr: ACTIVE' in out.getvalue()


# ---- SLURM -------------------------------------------------------------------------------------


def test_slurm_script_2_nodes_x_8_gpus(no_subprocess, tmp_path):
  out = io.StringIO()
  script_path = tmp_path / 'job.sbatch'
  status = slurm.main(['--nodes', '2', '--gpus_per_node', '8', '--partition', 'gpu',
                       '--time', '24:00:00', '--venv', '/shared/venv', '--env', 'A=b c',
                       '--config', 'experiments/demo.py', '--workdir', '/shared/runs/r',
                       '--config.batch_size=256', TRICKY_OVERRIDE, '--script', str(script_path),
                       '--log_dir', str(tmp_path / 'logs'), '--dry_run'], out=out)
  assert status == 0
  text = script_path.read_text()
  assert text in out.getvalue()
  assert out.getvalue().rstrip().endswith(f'sbatch {script_path}')
  lines = text.splitlines()
  assert lines[0] == '#!/bin/bash'
  directives = [l for l in lines if l.startswith('#SBATCH')]
  assert directives == [
      '#SBATCH --job-name=r', '#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=8',
      '#SBATCH --gpus-per-node=8', '#SBATCH --time=24:00:00', '#SBATCH --partition=gpu',
      f'#SBATCH --output={tmp_path}/logs/%x-%j.out']
  assert 'source /shared/venv/bin/activate' in lines
  assert "export A='b c'" in lines
  srun = shlex.split(lines[-1])
  assert srun == ['srun', '--kill-on-bad-exit=1', '--label', '--gpu-bind=none', 'python', '-m',
                  'centernet_jax.main', '--config', 'experiments/demo.py', '--workdir',
                  '/shared/runs/r', '--config.batch_size=256', TRICKY_OVERRIDE, '--distributed']


def test_slurm_script_is_valid_bash_and_submits(tmp_path, monkeypatch):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  _fake_tool(bin_dir, 'sbatch', 'echo "Submitted batch job 42 ($1)"\n')
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  out = io.StringIO()
  script = tmp_path / 's.sbatch'
  assert slurm.main(['--nodes', '1', '--gpus_per_node', '4', '--config', 'experiments/demo.py',
                     '--workdir', str(tmp_path / 'w'), TRICKY_OVERRIDE, '--script', str(script),
                     '--log_dir', str(tmp_path / 'logs')], out=out) == 0
  assert f'Submitted batch job 42 ({script})' in out.getvalue()
  assert (tmp_path / 'logs').is_dir()
  subprocess.run(['bash', '-n', str(script)], check=True)


# ---- Kubernetes --------------------------------------------------------------------------------


def _manifest(argv, tmp_path):
  import yaml  # pylint: disable=g-import-not-at-top
  out = io.StringIO()
  path = tmp_path / 'm.yaml'
  assert k8s.main([*argv, '--output', str(path), '--dry_run'], out=out) == 0
  assert path.read_text() in out.getvalue()
  assert out.getvalue().rstrip().endswith(f'kubectl apply -f {path}')
  return list(yaml.safe_load_all(path.read_text()))


def _pod(jobset):
  return jobset['spec']['replicatedJobs'][0]['template']['spec']['template']['spec']


def test_k8s_jobset_gpu(no_subprocess, tmp_path):
  (doc,) = _manifest(['--name', 'cn-r50', '--image', 'img:1', '--num_processes', '2',
                      '--gpus_per_process', '8', '--gpu_type', 'nvidia-h100-80gb',
                      '--config', 'experiments/demo.py', '--workdir', 'gs://b/r',
                      '--env', 'TFDS_DATA_DIR=gs://b/tfds', TRICKY_OVERRIDE], tmp_path)
  assert doc['kind'] == 'JobSet' and doc['apiVersion'] == 'jobset.x-k8s.io/v1alpha2'
  job = doc['spec']['replicatedJobs'][0]['template']['spec']
  assert job['parallelism'] == job['completions'] == 2
  assert job['completionMode'] == 'Indexed' and job['backoffLimit'] == 0
  pod = _pod(doc)
  assert pod['nodeSelector'] == {'cloud.google.com/gke-accelerator': 'nvidia-h100-80gb'}
  (container,) = pod['containers']
  assert container['resources'] == {'limits': {'nvidia.com/gpu': 8}}
  assert container['command'] == [
      'python', '-m', 'centernet_jax.main', '--config', 'experiments/demo.py', '--workdir',
      'gs://b/r', TRICKY_OVERRIDE, '--distributed',
      '--coordinator_address=$(JAX_COORDINATOR_ADDRESS)', '--num_processes=$(JAX_NUM_PROCESSES)',
      '--process_id=$(JAX_PROCESS_ID)']
  env = {e['name']: e.get('value', e.get('valueFrom')) for e in container['env']}
  assert env['JAX_COORDINATOR_ADDRESS'] == 'cn-r50-workers-0-0.cn-r50:8476'
  assert env['JAX_NUM_PROCESSES'] == '2'
  assert env['JAX_PROCESS_ID'] == {'fieldRef': {'fieldPath': k8s.COMPLETION_INDEX}}
  assert env['TFDS_DATA_DIR'] == 'gs://b/tfds'


def test_k8s_tpu_v4_32_and_indexed_job(no_subprocess, tmp_path):
  (doc,) = _manifest(['--name', 'cn', '--image', 'img', '--platform', 'tpu', '--accelerator',
                      'v4-32', '--config', 'experiments/demo.py', '--workdir', 'gs://b/r'],
                     tmp_path)
  assert doc['metadata']['annotations'] == {
      'alpha.jobset.sigs.k8s.io/exclusive-topology': 'cloud.google.com/gke-nodepool'}
  pod = _pod(doc)
  assert pod['nodeSelector'] == {'cloud.google.com/gke-tpu-accelerator': 'tpu-v4-podslice',
                                 'cloud.google.com/gke-tpu-topology': '2x2x4'}
  assert pod['containers'][0]['resources'] == {'limits': {'google.com/tpu': 4}}
  assert doc['spec']['replicatedJobs'][0]['template']['spec']['completions'] == 4

  service, job = _manifest(['--name', 'cn', '--image', 'img', '--kind', 'job',
                            '--num_processes', '3', '--config', 'experiments/demo.py',
                            '--workdir', 'gs://b/r'], tmp_path)
  assert service['kind'] == 'Service' and service['spec']['clusterIP'] == 'None'
  assert service['spec']['selector'] == {'job-name': 'cn'}
  assert job['kind'] == 'Job' and job['spec']['template']['spec']['subdomain'] == 'cn'
  env = {e['name']: e.get('value') for e in job['spec']['template']['spec']['containers'][0]['env']}
  assert env['JAX_COORDINATOR_ADDRESS'] == 'cn-0.cn:8476' and env['JAX_NUM_PROCESSES'] == '3'


def test_k8s_tpu_defaults_and_validation():
  assert k8s.tpu_defaults('v5litepod-16') == {'tpu_accelerator': 'tpu-v5-lite-podslice',
                                              'chips_per_process': 4, 'num_processes': 4}
  assert k8s.tpu_defaults('v6e-8')['num_processes'] == 1
  with pytest.raises(ValueError):
    k8s.K8sJob(name='Bad_Name', image='i', num_processes=1)


def test_yaml_writer_quotes_what_yaml_would_misread():
  import yaml  # pylint: disable=g-import-not-at-top
  data = {'a': ['1', 'true', 'null', '-x', 'a: b', '$(X)', "q'\"", 'plain', 3, True],
          'b': {}, 'c': []}
  assert yaml.safe_load(k8s.to_yaml(data)) == data


# ---- local processes ---------------------------------------------------------------------------


def test_local_process_args_and_env():
  assert local.process_args(['python', 'x.py'], 4, 2, 1234) == [
      'python', 'x.py', '--distributed', '--coordinator_address', 'localhost:1234',
      '--num_processes', '4', '--process_id', '2']
  env = local.process_env(3, base={'XLA_FLAGS': '--foo --xla_force_host_platform_device_count=4',
                                   'CENTERNET_JAX_DISTRIBUTED': '1'})
  assert env['XLA_FLAGS'] == '--foo --xla_force_host_platform_device_count=3'
  assert env['JAX_NUM_CPU_DEVICES'] == '3' and env['JAX_PLATFORMS'] == 'cpu'
  assert 'CENTERNET_JAX_DISTRIBUTED' not in env


def test_local_dry_run(no_subprocess):
  out = io.StringIO()
  assert local.main(['--num_processes', '2', '--devices_per_process', '2', '--port', '4321',
                     '--config', 'tests/tiny_experiment.py', '--workdir', 'runs/mp',
                     TRICKY_OVERRIDE, '--dry_run'], out=out) == 0
  commands = _commands(out.getvalue())
  assert len(commands) == 2
  for i, cmd in enumerate(commands):
    assert cmd[:3] == ['JAX_PLATFORMS=cpu', 'JAX_NUM_CPU_DEVICES=2',
                       'XLA_FLAGS=--xla_force_host_platform_device_count=2']
    assert cmd[3:] == [sys.executable, '-m', 'centernet_jax.main', '--config',
                       'tests/tiny_experiment.py', '--workdir', 'runs/mp', TRICKY_OVERRIDE,
                       '--distributed', '--coordinator_address', 'localhost:4321',
                       '--num_processes', '2', '--process_id', str(i)]


def test_run_local_psum_across_two_processes():
  out = io.StringIO()
  status = local.run_local([sys.executable, str(REPO / 'tests/data/distributed_psum.py')],
                           num_processes=2, devices_per_process=2, timeout=90, out=out)
  text = out.getvalue()
  assert status == 0, text[-3000:]
  assert '[p0] psum ok: process 0/2 devices 2/4 sum 10' in text
  assert '[p1] psum ok: process 1/2 devices 2/4 sum 10' in text


def test_run_local_kills_all_on_failure_and_on_timeout(tmp_path):
  program = tmp_path / 'prog.py'
  program.write_text(
      'import sys, time\n'
      'pid = int(sys.argv[sys.argv.index("--process_id") + 1])\n'
      'mode = sys.argv[1]\n'
      'print("started", flush=True)\n'
      'if mode == "fail" and pid == 1:\n'
      '  sys.exit(3)\n'
      'time.sleep(60)\n')
  out = io.StringIO()
  start = time.monotonic()
  assert local.run_local([sys.executable, str(program), 'fail'], 3, timeout=30, out=out) == 3
  assert time.monotonic() - start < 15
  assert 'process 1 exited with status 3' in out.getvalue()

  out = io.StringIO()
  start = time.monotonic()
  assert local.run_local([sys.executable, str(program), 'hang'], 2, timeout=1.5,
                         out=out) == local.TIMEOUT_STATUS
  assert time.monotonic() - start < 15
  assert 'timeout' in out.getvalue()


def test_tpu_failed_run_still_deletes(tmp_path, monkeypatch):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  calls = tmp_path / 'calls'
  _fake_tool(bin_dir, 'gcloud', f'echo "$4 $5" >> {calls}\n[[ "$4" == ssh ]] && exit 7\nexit 0\n')
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  status = tpu_vm.main(['run', *V4_ARGS, '--queued', '--delete', '--log_dir',
                        str(tmp_path / 'logs')], out=io.StringIO())
  assert status == 7
  assert calls.read_text().splitlines() == ['ssh cn-r50', 'delete cn-r50-qr']


def test_tpu_logs_and_setup_cmd_dry_run(no_subprocess):
  out = io.StringIO()
  assert tpu_vm.main(['setup', 'logs', '--name', 'x', '--zone', 'z', '--accelerator_type',
                      'v6e-16', '--setup_cmd', 'echo one', '--run_name', 'my run',
                      '--follow', '--dry_run'], out=out) == 0
  commands = _commands(out.getvalue())
  assert commands[-2][-1] == 'set -euo pipefail\necho one'
  assert 'tail -n 200 -F "$HOME/centernet_logs/my_run.log"' in commands[-1][-1]
