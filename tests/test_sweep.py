"""Sweeps: expansion helpers, run names, skip/resume, results tables (no training runs here)."""

import csv
import io
import json
import pathlib

import pytest

from launch import sweep
from launch import sweep_utils as su

REPO = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENT = 'tests/data/sweep_experiment.py'  # tiny config (4 steps), 4 product + 2 zip points


# ---- sweep_utils -------------------------------------------------------------------------------


def test_product_zip_fixed_concat_cross():
  assert su.product(a=[1, 2], b=['x', 'y']) == [
      {'a': 1, 'b': 'x'}, {'a': 1, 'b': 'y'}, {'a': 2, 'b': 'x'}, {'a': 2, 'b': 'y'}]
  assert su.zip_(**{'model.depth': [18, 50], 'input.size': [256, 512]}) == [
      {'model.depth': 18, 'input.size': 256}, {'model.depth': 50, 'input.size': 512}]
  assert su.product(optimizer__learning_rate=[0.1]) == [{'optimizer.learning_rate': 0.1}]
  assert su.fixed(num_train_steps=5) == [{'num_train_steps': 5}]
  assert su.concat(su.fixed(a=1), su.product(a=[2, 3])) == [{'a': 1}, {'a': 2}, {'a': 3}]
  assert su.cross(su.zip_(a=[1, 2], b=[3, 4]), su.product(c=[5, 6])) == [
      {'a': 1, 'b': 3, 'c': 5}, {'a': 1, 'b': 3, 'c': 6},
      {'a': 2, 'b': 4, 'c': 5}, {'a': 2, 'b': 4, 'c': 6}]
  assert su.product() == [{}]


def test_sweep_utils_errors():
  with pytest.raises(ValueError, match='one length'):
    su.zip_(a=[1, 2], b=[1])
  with pytest.raises(ValueError, match='set by two'):
    su.cross(su.fixed(a=1), su.fixed(a=2))
  with pytest.raises(TypeError):
    su.product(a='abc')


# ---- names -------------------------------------------------------------------------------------


def test_run_name_is_readable_stable_and_order_independent():
  point = {'optimizer.learning_rate': 0.001, 'batch_size': 16}
  name = sweep.run_name(point)
  # Pinned: changing the scheme would orphan the workdirs of existing sweeps.
  assert name == 'batch_size=16,learning_rate=0.001-73451e91'
  assert sweep.run_name({'batch_size': 16, 'optimizer.learning_rate': 0.001}) == name
  assert sweep.run_name({'batch_size': 16, 'optimizer.learning_rate': 1e-3}) == name
  assert sweep.run_name({}) == 'default'


def test_run_names_are_filesystem_safe_and_unique():
  points = su.concat(
      su.product(**{'dataset.train_images': ['/data/a b/x', '/data/a_b/x', '/data/a?b/x'],
                    'optimizer.manual_rates': [(0.8, 1.25), (0.9, 1.1)]}),
      su.fixed(**{'eval.batch_size': 8, 'batch_size': 8}),
      su.fixed(**{'dataset.train_annotations': 'x' * 300}),
  )
  names = [sweep.run_name(p) for p in points]
  assert len(set(names)) == len(names)
  for name in names:
    assert set(name) <= set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._=,+-')
    assert len(name) <= 80 + 9
  # Two fields with the same last part keep their full keys.
  assert names[6].startswith('batch_size=8,eval.batch_size=8-')


def test_expand_rejects_duplicates():
  runs = sweep.expand(su.product(a=[1, 2]), 'gs://b/root/')
  assert [r.workdir for r in runs] == ['gs://b/root/a=1-' + sweep.override_hash({'a': 1}),
                                       'gs://b/root/a=2-' + sweep.override_hash({'a': 2})]
  with pytest.raises(ValueError, match='same run'):
    sweep.expand([{'a': 1, 'b': 2}, {'b': 2, 'a': 1}], 'root')


def test_apply_overrides_checks_fields_and_coerces():
  module, _ = sweep.load_experiment(EXPERIMENT)
  config = module.get_config()
  sweep.apply_overrides(config, {'optimizer.learning_rate': 1, 'num_train_steps': '7',
                                 'eval.on_train_end': 'false',
                                 'optimizer.manual_rates': '(0.5, 2.0)'})
  assert config.optimizer.learning_rate == 1.0 and isinstance(config.optimizer.learning_rate,
                                                              float)
  assert config.num_train_steps == 7 and config.eval.on_train_end is False
  assert config.optimizer.manual_rates == (0.5, 2.0)
  with pytest.raises(KeyError, match='lerning_rate'):
    sweep.apply_overrides(config, {'optimizer.lerning_rate': 1e-3})
  with pytest.raises(ValueError):
    sweep.apply_overrides(config, {'num_train_steps': 'many'})


# ---- status, launching, results ----------------------------------------------------------------


def _finish(workdir, step, ap):
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'eval_metrics.json').write_text(json.dumps(
      {'step': step, 'AP': ap, 'AP50': min(1.0, ap * 1.5), 'AR100': ap + 0.1}))


def test_run_status(tmp_path):
  assert sweep.run_status(str(tmp_path / 'nothing'), 4) == ('new', None)
  (tmp_path / 'started' / 'checkpoints').mkdir(parents=True)
  assert sweep.run_status(str(tmp_path / 'started'), 4) == ('partial', None)
  _finish(tmp_path / 'mid', 2, 0.1)
  assert sweep.run_status(str(tmp_path / 'mid'), 4)[0] == 'partial'
  _finish(tmp_path / 'done', 4, 0.3)
  status, metrics = sweep.run_status(str(tmp_path / 'done'), 4)
  assert status == 'finished' and metrics['AP'] == 0.3


def test_sweep_skips_finished_resumes_others_and_tabulates(tmp_path, monkeypatch):
  root = tmp_path / 'root'
  module, _ = sweep.load_experiment(EXPERIMENT)
  runs = sweep.expand(module.get_sweep(), str(root))
  assert len(runs) == 6
  by_name = {r.name: r for r in runs}
  lr1_bs8 = sweep.run_name({'optimizer.learning_rate': 1e-3, 'batch_size': 8})
  steps3 = sweep.run_name({'num_train_steps': 3, 'model.depth': 18})
  steps6 = sweep.run_name({'num_train_steps': 6, 'model.depth': 34})
  # Finished at the config's 4 steps; finished at its own 3 steps; stopped at 4 of its 6.
  _finish(by_name[lr1_bs8].workdir, 4, 0.20)
  _finish(by_name[steps3].workdir, 3, 0.05)
  _finish(by_name[steps6].workdir, 4, 0.01)

  launched = []

  def fake_launch(run, args, launcher_args, runner):
    launched.append((run.name, list(args.overrides)))
    _finish(run.workdir, sweep.target_steps(module, None, run.overrides), 0.1 + 0.1 * len(launched))
    return 0

  monkeypatch.setattr(sweep, 'launch_run', fake_launch)
  out = io.StringIO()
  assert sweep.main(['--config', EXPERIMENT, '--workdir', str(root),
                     '--config.dataset.synthetic_num_val=4'], out=out) == 0
  assert [n for n, _ in launched] == [r.name for r in runs if r.name not in (lr1_bs8, steps3)]
  assert all(o == ['--config.dataset.synthetic_num_val=4'] for _, o in launched)
  text = out.getvalue()
  assert f'skip   {lr1_bs8}' in text and f'resume {steps6}' in text

  # results.csv: every run, sorted by AP descending, overrides and metrics as columns.
  with open(root / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6
  aps = [float(r['AP']) for r in rows]
  assert aps == sorted(aps, reverse=True)
  assert list(rows[0]) == ['name', 'status', 'step', 'optimizer.learning_rate', 'batch_size',
                           'num_train_steps', 'model.depth', 'AP', 'AP50', 'AR100', 'workdir']
  assert all(r['status'] == 'finished' for r in rows)
  row = next(r for r in rows if r['name'] == steps3)
  assert (row['num_train_steps'], row['model.depth'], row['step'], row['AP']) == ('3', '18', '3',
                                                                                  '0.05')
  md = (root / 'results.md').read_text()
  assert md in text
  lines = md.splitlines()
  assert lines[2].startswith('| # | name | status | step | optimizer.learning_rate | batch_size')
  # The last launched run got the best AP (0.1 + 0.1 * 4).
  assert lines[4].startswith(f'| 1 | {steps6} | finished | 6 |') and '| 0.5000 |' in lines[4]
  assert json.loads((root / 'sweep.json').read_text())['runs'].keys() == by_name.keys()

  # A second invocation finds everything finished and launches nothing.
  launched.clear()
  assert sweep.main(['--config', EXPERIMENT, '--workdir', str(root),
                     '--config.dataset.synthetic_num_val=4'], out=io.StringIO()) == 0
  assert not launched


def test_failed_runs_give_nonzero_status(tmp_path, monkeypatch):
  monkeypatch.setattr(sweep, 'launch_run', lambda run, *a: 1 if 'depth=34' in run.name else 0)
  out = io.StringIO()
  assert sweep.main(['--config', EXPERIMENT, '--workdir', str(tmp_path)], out=out) == 1
  assert '1 run(s) failed: depth=34' in out.getvalue()


def test_results_sorting_and_missing_metrics():
  rows = [
      {'name': 'a', 'status': 'new', 'overrides': {'x': 1}, 'workdir': 'w/a', 'metrics': {}},
      {'name': 'b', 'status': 'finished', 'overrides': {'x': 2}, 'workdir': 'w/b',
       'metrics': {'step': 4, 'AP': 0.1, 'AP50': 0.9}},
      {'name': 'c', 'status': 'finished', 'overrides': {'x': 3, 'y': 'p|q'}, 'workdir': 'w/c',
       'metrics': {'step': 4, 'AP': 0.3, 'AP50': 0.2}},
      {'name': 'd', 'status': 'partial', 'overrides': {'x': 4}, 'workdir': 'w/d',
       'metrics': {'step': 2, 'AP': float('nan')}},
  ]
  assert [r['name'] for r in sweep.sort_rows(rows, 'AP')] == ['c', 'b', 'a', 'd']
  assert [r['name'] for r in sweep.sort_rows(rows, 'AP50')] == ['b', 'c', 'a', 'd']
  csv_text, md = sweep.results_tables(rows, 'AP50')
  parsed = list(csv.reader(io.StringIO(csv_text)))
  assert parsed[0] == ['name', 'status', 'step', 'x', 'y', 'AP50', 'AP', 'workdir']
  assert parsed[1] == ['b', 'finished', '4', '2', '', '0.9', '0.1', 'w/b']
  assert parsed[3] == ['a', 'new', '', '1', '', '', '', 'w/a']
  assert md.startswith('Sorted by AP50 (descending); 4 run(s).')
  assert '| 2 | c | finished | 4 | 3 | p\\|q | 0.2000 | 0.3000 |' in md


def test_collect_only_keeps_runs_dropped_from_the_sweep(tmp_path, monkeypatch):
  root = tmp_path / 'root'
  monkeypatch.setattr(sweep, 'launch_run', lambda *a: 0)
  sweep.main(['--config', EXPERIMENT, '--workdir', str(root), '--only', 'depth=18'],
             out=io.StringIO())
  recorded = json.loads((root / 'sweep.json').read_text())['runs']
  assert len(recorded) == 1
  old_name = next(iter(recorded))
  # An older get_sweep() point, no longer produced, with a finished run.
  old = {'optimizer.learning_rate': 0.5}
  recorded[sweep.run_name(old)] = old
  (root / 'sweep.json').write_text(json.dumps({'config': EXPERIMENT, 'runs': recorded}))
  _finish(root / sweep.run_name(old), 4, 0.9)
  _finish(root / old_name, 3, 0.4)
  out = io.StringIO()
  assert sweep.main(['--config', EXPERIMENT, '--workdir', str(root), '--collect_only'],
                    out=out) == 0
  with open(root / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 7
  assert [r['name'] for r in rows[:2]] == [sweep.run_name(old), old_name]
  assert [r['status'] for r in rows[2:]] == ['new'] * 5


def test_dry_run_prints_commands_and_writes_nothing(tmp_path):
  out = io.StringIO()
  assert sweep.main(['--config', EXPERIMENT, '--workdir', str(tmp_path / 'root'), '--dry_run',
                     "--config.dataset.train_images=/data/my images,x"], out=out) == 0
  text = out.getvalue()
  assert text.count('-m centernet_jax.main --config tests/data/sweep_experiment.py') == 6
  assert ("'--config.dataset.train_images=/data/my images,x' "
          '--config.optimizer.learning_rate=0.001') in text
  assert not (tmp_path / 'root').exists()


def test_sweep_hands_runs_to_slurm(tmp_path):
  out = io.StringIO()
  assert sweep.main(['--config', EXPERIMENT, '--workdir', str(tmp_path / 'root'), '--launcher',
                     'slurm', '--nodes', '2', '--gpus_per_node', '8', '--log_dir',
                     str(tmp_path / 'logs'), '--only', 'num_train_steps=3', '--dry_run'],
                    out=out) == 0
  (script,) = (tmp_path / 'logs').glob('*.sbatch')
  text = script.read_text()
  assert '#SBATCH --nodes=2' in text
  assert '--config.num_train_steps=3 --config.model.depth=18' in text
  assert f'--workdir {tmp_path}/root/depth=18,num_train_steps=3-' in text
  assert f'sbatch {script}' in out.getvalue()


def test_sweep_unknown_launcher_args_rejected_for_local(tmp_path, capsys):
  with pytest.raises(SystemExit):
    sweep.main(['--config', EXPERIMENT, '--workdir', str(tmp_path), '--nodes', '2'])
  assert 'unrecognized' in capsys.readouterr().err


def test_names_spell_out_what_varies_and_recorded_names_are_kept():
  points = su.cross(su.product(**{'optimizer.learning_rate': [1e-3, 2e-3]}),
                    su.fixed(**{'num_train_steps': 500, 'checkpoint_every_steps': 250}))
  runs = sweep.expand(points, 'root')
  assert [r.name for r in runs] == [
      f'learning_rate={lr}-{sweep.override_hash(p)}' for lr, p in zip(('0.001', '0.002'), points)]
  # A sweep edited to vary another field: the runs already recorded keep their names.
  recorded = {r.name: r.overrides for r in runs}
  edited = points + [{'optimizer.learning_rate': 1e-3, 'num_train_steps': 900,
                      'checkpoint_every_steps': 250}]
  again = sweep.expand(edited, 'root', recorded)
  assert [r.name for r in again[:2]] == [r.name for r in runs]
  assert again[2].name.startswith('num_train_steps=900,learning_rate=0.001-')


# ---- plots -------------------------------------------------------------------------------------


def _history(workdir, points):
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with open(workdir / 'eval_metrics_history.jsonl', 'w') as f:
    for step, ap in points:
      f.write(json.dumps({'step': step, 'AP': ap, 'per_class/AP/a': ap}) + '\n')
  (workdir / 'eval_metrics.json').write_text(json.dumps(
      {'step': points[-1][0], 'AP': points[-1][1], 'per_class/AP/a': points[-1][1],
       'per_class/AP50/a': 1.0}))


def test_collect_writes_the_sweep_plot_from_each_runs_history(tmp_path, monkeypatch):
  root = tmp_path / 'root'
  module, _ = sweep.load_experiment(EXPERIMENT)
  runs = sweep.expand(module.get_sweep(), str(root))
  for i, run in enumerate(runs[:3]):
    _history(run.workdir, [(2, 0.1 * i), (4, 0.1 * i + 0.05)])
  seen = {}
  real = sweep.plots.sweep_png

  def spy(rows, metric, fields, histories):
    seen.update(rows=rows, metric=metric, fields=fields, histories=histories)
    return real(rows, metric, fields, histories)

  monkeypatch.setattr(sweep.plots, 'sweep_png', spy)
  out = io.StringIO()
  sweep.collect(runs, module, None, str(root), 'AP', out=out)
  assert seen['metric'] == 'AP'
  assert seen['fields'] == sweep.varying_keys([r.overrides for r in runs])
  assert len(seen['fields']) >= 2
  assert [h['step'] for h in seen['histories'][runs[1].name]] == [2, 4]
  assert seen['histories'][runs[5].name] == []
  png = (root / 'results.png').read_bytes()
  assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10_000
  assert 'results.png' in out.getvalue()
  # Per-class entries stay out of the table (one column per class would bury it).
  assert 'per_class' not in (root / 'results.md').read_text()


def test_sweep_plot_problems_do_not_fail_the_sweep(tmp_path, monkeypatch):
  module, _ = sweep.load_experiment(EXPERIMENT)
  runs = sweep.expand(module.get_sweep(), str(tmp_path / 'root'))

  def broken(*args):
    raise RuntimeError('no fonts')

  monkeypatch.setattr(sweep.plots, 'sweep_png', broken)
  out = io.StringIO()
  sweep.collect(runs, module, None, str(tmp_path / 'root'), 'AP', out=out)
  assert '(no plot: RuntimeError: no fonts)' in out.getvalue()
  assert (tmp_path / 'root' / 'results.md').exists()
