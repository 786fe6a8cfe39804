"""run_files: a run's side files, its model, and restoring it for inference or training."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from centernet_jax import checkpointing
from centernet_jax import config_base
from centernet_jax import keypoint_spec as kps
from centernet_jax import model_variables
from centernet_jax import optimizer as optimizer_lib
from centernet_jax import run_files
from centernet_jax import train_step

LABEL_MAP = {'mode': 'contiguous', 'num_channels': 2, 'names': ['cat', 'dog'],
             'category_ids': [3, 7],
             'categories': [{'id': 3, 'name': 'cat'}, {'id': 7, 'name': 'dog'}]}


def _config():
  c = config_base.base_config()
  c.input.size = 64
  c.model.depth = 18
  c.model.width_multiplier = 0.25
  c.model.head_channels = 8
  return c


def _write_old_layout_run(workdir, config, step):
  """A workdir exactly as the code before run_files.py wrote it (train.py at main): orbax
  `state` (StandardSave of the TrainState) + `meta` JSON {step, config, label_map}, and
  config.json / label_map.json beside them. Returns the saved state."""
  run = run_files.RunFiles(config, LABEL_MAP, None)
  model = run_files.build_model(run)
  tx, _ = optimizer_lib.make_optimizer(config)
  # Random values without compiling model.init (which takes a minute on CPU).
  state = train_step.train_state_from_variables(
      model_variables.filled_variables(model, 64, seed=1), tx, step=step)
  # Non-zero moments, unlike a fresh optimizer state: the restore must read them.
  state = state.replace(opt_state=jax.tree.map(lambda x: x + 1, state.opt_state))
  manager = ocp.CheckpointManager(
      checkpointing.checkpoint_dir(workdir), options=ocp.CheckpointManagerOptions(create=True),
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'meta': ocp.JsonCheckpointHandler()})
  meta = {'step': step, 'config': json.loads(config.to_json_best_effort()),
          'label_map': LABEL_MAP}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)))
  manager.wait_until_finished()
  manager.close()
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  (workdir / 'label_map.json').write_text(json.dumps(LABEL_MAP, indent=2))
  return state


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_old_layout_run_restores_for_inference_and_training(tmp_path):
  config = _config()
  saved = _write_old_layout_run(tmp_path, config, step=7)

  run = run_files.restore_for_inference(str(tmp_path))
  assert run.step == 7
  assert run.label_map['names'] == ['cat', 'dog'] and run.keypoint_spec is None
  assert run.config.model.depth == 18
  assert set(run.variables) == {'params', 'batch_stats'}
  _assert_trees_equal(run.variables['params'], saved.params)
  _assert_trees_equal(run.variables['batch_stats'], saved.batch_stats)
  out = run.model.apply(run.variables, np.zeros((1, 64, 64, 3), np.float32), train=False)
  assert out[-1]['object_center'].shape == (1, 16, 16, 2)

  # The full TrainState (optimizer state included) for training.
  tx, _ = optimizer_lib.make_optimizer(config)
  fresh = train_step.train_state_from_variables(
      model_variables.filled_variables(run.model, 64, seed=2), tx)
  manager = checkpointing.make_manager(str(tmp_path), read_only=True)
  state = run_files.restore_train_state(manager, fresh)
  manager.close()
  assert int(state.step) == 7
  _assert_trees_equal(state.opt_state, saved.opt_state)
  _assert_trees_equal(state.params, saved.params)


def test_init_checkpoint_takes_params_only_whatever_the_optimizer(tmp_path):
  config = _config()
  (tmp_path / 'init').mkdir()
  saved = _write_old_layout_run(tmp_path / 'init', config, step=3)
  other = _config()
  other.optimizer.grad_clip_norm = 1.0  # another optimizer state structure than the init's
  model = run_files.build_model(run_files.RunFiles(other, LABEL_MAP, None))
  tx, _ = optimizer_lib.make_optimizer(other)
  fresh = train_step.train_state_from_variables(
      model_variables.filled_variables(model, 64), tx)
  manager = checkpointing.make_manager(str(tmp_path / 'new'))
  state = run_files.restore_train_state(manager, fresh,
                                        init_checkpoint=str(tmp_path / 'init'))
  manager.close()
  assert int(state.step) == 0  # a new run starting from the params of another
  _assert_trees_equal(state.params, saved.params)
  _assert_trees_equal(state.batch_stats, saved.batch_stats)
  _assert_trees_equal(state.opt_state, fresh.opt_state)


def test_side_files_round_trip_with_a_keypoint_task(tmp_path):
  config = _config()
  spec = kps.spec_from_category(kps.coco_person_category(), 0, None)
  run_files.write_run_files(tmp_path, config, LABEL_MAP, spec)
  written = json.loads((tmp_path / 'label_map.json').read_text())
  assert written['keypoints']['names'] == list(spec.names)
  run = run_files.read_run_files(str(tmp_path))  # no checkpoint: the side files
  assert run.keypoint_spec == spec and run.label_map == LABEL_MAP
  assert json.loads(run.config.to_json_best_effort()) == json.loads(config.to_json_best_effort())
  meta = run_files.checkpoint_meta(config, LABEL_MAP, spec, 5, imported_from={'x': 1})
  assert meta['step'] == 5 and meta['label_map'] == written and meta['imported_from']


def test_unreadable_run_files_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a run directory'):
    run_files.read_run_files(str(tmp_path))
  run_files.write_run_files(tmp_path, _config(), LABEL_MAP)
  (tmp_path / 'label_map.json').write_text('{"names": ["a"]}')
  with pytest.raises(ValueError, match=r"label_map.json: the label map has no 'category_ids'"):
    run_files.read_run_files(str(tmp_path))
  (tmp_path / 'config.json').write_text('{not json')
  with pytest.raises(ValueError, match=r'config.json: not valid JSON'):
    run_files.read_run_files(str(tmp_path))
