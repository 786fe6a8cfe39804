"""experiments.py: the one loader of experiment files reports a broken file instead of
skipping it."""

import textwrap

import pytest

from centernet_jax import experiments
from centernet_jax import import_tf_checkpoint as imp

GOOD = textwrap.dedent('''\
    from centernet_jax import config_base

    def get_config(arg=None):
      c = config_base.base_config()
      if arg:
        c.model.depth = int(arg)
      return c
    ''')


def test_load_config_with_and_without_arg(tmp_path):
  path = tmp_path / 'good.py'
  path.write_text(GOOD)
  assert experiments.load_config(str(path)).model.depth == 50
  assert experiments.load_config(f'{path}:18').model.depth == 18
  assert experiments.split_spec(f'{path}:') == (str(path), None)


@pytest.mark.parametrize('text,error', [
    ('import no_such_module_here\n', "fails to load: ModuleNotFoundError: No module named "
                                     "'no_such_module_here'"),
    ('def get_config(:\n', 'fails to load: SyntaxError'),
    ('X = 1\n', r'defines no get_config\(\)'),
    ('def get_config():\n  raise KeyError("depth")\n', r"get_config\(\) raised KeyError"),
    ('def get_config():\n  return {"a": 1}\n', 'returned a dict'),
])
def test_broken_file_names_the_file_and_the_error(tmp_path, text, error):
  path = tmp_path / 'broken.py'
  path.write_text(text)
  with pytest.raises(experiments.ExperimentError, match=error) as info:
    experiments.load_config(str(path))
  assert str(path) in str(info.value)


def test_missing_file(tmp_path):
  with pytest.raises(experiments.ExperimentError, match='no such file'):
    experiments.load_config(str(tmp_path / 'nope.py'))


def test_zoo_experiment_search_reports_a_broken_file(tmp_path):
  (tmp_path / 'a_good.py').write_text(GOOD)
  (tmp_path / 'b_broken.py').write_text('raise RuntimeError("half-edited")\n')
  with pytest.raises(experiments.ExperimentError,
                     match=r'b_broken.py fails to load: RuntimeError: half-edited'):
    experiments.load_folder(str(tmp_path))
  zoo = imp.ZooModel(feature_extractor='resnet_v1_50_fpn', num_classes=90, input_size=512,
                     use_depthwise=False, keypoint_tasks=(), max_box_predictions=100,
                     channel_means=(), channel_stds=(), bgr_ordering=False)
  with pytest.raises(experiments.ExperimentError, match='b_broken.py'):
    imp.find_experiment(str(tmp_path / 'some_archive'), zoo, str(tmp_path))
