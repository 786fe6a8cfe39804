"""Checkpoint integrity: checksums recorded per step, damaged latest steps set aside (not
deleted) with the next older one restored, shape mismatches named, failed saves stop with one
clear line. A small pytree stands in for the train state (no model is built)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from centernet_jax import checkpointing
from centernet_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(value: float, classes: int = 5):
  params = {'head': {'kernel': jnp.full((3, classes), value)}, 'bias': jnp.full((4,), value)}
  return train.TrainState(step=jnp.asarray(int(value), jnp.int32), params=params,
                          batch_stats={}, opt_state=optax.adam(1e-3).init(params))


@pytest.fixture
def workdir(tmp_path):
  """A workdir with steps 1, 2, 3 saved (state values 1, 2, 3) and their checksums."""
  manager = checkpointing.make_manager(tmp_path, keep=3)
  for step in (1, 2, 3):
    checkpointing.save(manager, step, _state(step), {'step': step})
  checkpointing.close(manager)
  return tmp_path


def _restore(workdir, classes=5):
  manager = checkpointing.make_manager(workdir, keep=3)
  try:
    return checkpointing.restore(manager, _state(0, classes))
  finally:
    manager.close()


def _step_dir(workdir, step=3):
  return os.path.join(workdir, 'checkpoints', str(step))


def _data_files(step_dir):
  out = []
  for root, _, files in os.walk(os.path.join(step_dir, 'state')):
    out += [os.path.join(root, f) for f in files if os.sep + 'd' + os.sep in root + os.sep]
  return sorted(out, key=os.path.getsize)


def test_checksums_are_recorded_for_every_step(workdir):
  names = sorted(os.listdir(workdir / checkpointing.CHECKSUMS))
  assert names == ['1.json', '2.json', '3.json']
  state, meta = _restore(workdir)
  assert int(state.step) == 3 and meta['step'] == 3
  assert not os.path.exists(workdir / checkpointing.SET_ASIDE)


def _flip_byte(workdir):
  path = _data_files(_step_dir(workdir))[-1]
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0x01
  open(path, 'wb').write(bytes(data))


def _truncate(workdir):
  path = _data_files(_step_dir(workdir))[-1]
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])


def _remove(relative):
  def damage(workdir):
    target = os.path.join(_step_dir(workdir), relative)
    if os.path.isdir(target):
      import shutil  # pylint: disable=g-import-not-at-top
      shutil.rmtree(target)
    else:
      os.remove(target)
  return damage


def _garbage(relative):
  def damage(workdir):
    with open(os.path.join(_step_dir(workdir), relative), 'wb') as f:
      f.write(b'\x00garbage')
  return damage


def _empty(relative):
  def damage(workdir):
    open(os.path.join(_step_dir(workdir), relative), 'wb').close()
  return damage


def _extra_file(workdir):
  with open(os.path.join(_step_dir(workdir), 'state', 'stray'), 'w') as f:
    f.write('x')


def _unverified(damage):
  """The same damage to a step without recorded checksums: orbax's own read must fail."""
  def both(workdir):
    os.remove(workdir / checkpointing.CHECKSUMS / '3.json')
    damage(workdir)
  return both


DAMAGES = {
    'flipped_byte': (_flip_byte, 'SHA-256 mismatch'),
    'truncated_data': (_truncate, 'bytes, .* were written'),
    'missing_state_metadata': (_remove('state/_METADATA'), 'file state/_METADATA is missing'),
    'missing_state': (_remove('state'), 'is missing'),
    'missing_meta': (_remove('meta'), r'file meta/\S+ is missing'),
    'empty_meta': (_empty('meta/metadata'), 'meta/metadata has 0 bytes'),
    'garbage_checkpoint_metadata': (_garbage('_CHECKPOINT_METADATA'), '_CHECKPOINT_METADATA'),
    'garbage_manifest': (_garbage('state/manifest.ocdbt'), 'state/manifest.ocdbt'),
    'extra_file': (_extra_file, 'file state/stray was not written by the save'),
    'unverified_missing_state': (_unverified(_remove('state')), 'cannot'),
    'unverified_garbage_manifest': (_unverified(_garbage('state/manifest.ocdbt')), 'cannot'),
    'unverified_empty_meta': (_unverified(_empty('meta/metadata')), 'cannot'),
    'unverified_missing_metadata': (_unverified(_remove('state/_METADATA')), 'cannot'),
}


@pytest.mark.parametrize('kind', sorted(DAMAGES))
def test_damaged_latest_step_falls_back_to_the_previous(workdir, kind, caplog):
  damage, pattern = DAMAGES[kind]
  damage(workdir)
  caplog.set_level('WARNING')
  state, meta = _restore(workdir)
  assert int(state.step) == 2 and meta['step'] == 2
  np.testing.assert_array_equal(state.params['head']['kernel'], np.full((3, 5), 2.0))
  aside = workdir / checkpointing.SET_ASIDE / '3'
  assert os.path.isdir(aside) and not os.path.exists(_step_dir(workdir))
  why = (aside / 'WHY_SET_ASIDE.txt').read_text()
  import re  # pylint: disable=g-import-not-at-top
  assert re.search(pattern, why), why
  warnings = ' '.join(r.getMessage() for r in caplog.records)
  assert 'checkpoint step 3 in' in warnings and 'Set aside as' in warnings
  # The next save goes on from step 2 as if step 3 had never been written.
  manager = checkpointing.make_manager(workdir, keep=3)
  assert manager.all_steps() == [1, 2]
  manager.close()


def test_every_step_damaged_raises_naming_the_folder(workdir):
  for step in (1, 2, 3):
    _garbage('state/manifest.ocdbt')(workdir) if step == 3 else None
    with open(os.path.join(_step_dir(workdir, step), 'state', 'manifest.ocdbt'), 'ab') as f:
      f.write(b'x')
  with pytest.raises(ValueError, match=r'every checkpoint in .*checkpoints is damaged \(set '
                     r'aside under .*checkpoints_set_aside\)'):
    _restore(workdir)
  assert sorted(os.listdir(workdir / checkpointing.SET_ASIDE)) == ['1', '2', '3']


def test_class_count_mismatch_names_the_leaf_and_both_shapes(workdir):
  with pytest.raises(checkpointing.CheckpointMismatchError,
                     match=r'leaf params.head.kernel has shape \(3, 5\) in the checkpoint step 3 '
                     r'in .* but \(3, 7\) in the model .*number of classes'):
    _restore(workdir, classes=7)
  assert os.path.isdir(_step_dir(workdir))  # a config mismatch is not damage: nothing moved


def test_keep_checkpoints_zero_is_refused(tmp_path):
  with pytest.raises(ValueError, match='keep_checkpoints=0: must be >= 1'):
    checkpointing.make_manager(tmp_path, keep=0)


def test_failed_background_save_stops_with_one_clear_line(tmp_path):
  """A file size limit makes the second save's writes fail like a full disk does."""
  script = textwrap.dedent(f'''
      import resource, signal, sys, time
      sys.path.insert(0, {REPO!r})
      import jax.numpy as jnp
      from centernet_jax import checkpointing
      manager = checkpointing.make_manager({str(tmp_path)!r}, keep=3)
      checkpointing.save(manager, 1, {{'w': jnp.ones((8,))}}, {{'step': 1}})
      checkpointing.check_saves(manager, wait=True)
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
      checkpointing.save(manager, 2, {{'w': jnp.arange(200000.0)}}, {{'step': 2}})
      deadline = time.monotonic() + 120
      try:
        while time.monotonic() < deadline:  # the train loop's per-step check
          checkpointing.check_saves(manager)
          time.sleep(0.05)
      except checkpointing.CheckpointSaveError as e:
        print('CAUGHT', e)
        sys.exit(3)
      print('NO ERROR')
      ''')
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('CAUGHT')][0]
  assert 'saving a checkpoint to' in line and str(tmp_path) in line and 'failed' in line
  manager = checkpointing.make_manager(tmp_path, keep=3, read_only=True)
  assert manager.all_steps() == [1]  # the previous checkpoint is intact
  state, _ = checkpointing.restore(manager, {'w': jax.ShapeDtypeStruct((8,), jnp.float32)})
  np.testing.assert_array_equal(state['w'], np.ones(8))
