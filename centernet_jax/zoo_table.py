r"""The TF2 zoo table in one command: import every zoo archive found, evaluate it, time it.

  python -m centernet_jax.zoo_table --archives DIR --coco_dir DIR --out table.md \
      [--rows NAME,NAME] [--runs_dir runs/zoo_table]

For every row of `PUBLISHED` (the zoo's table, docs/zoo.md) it looks for the unpacked archive
`DIR/<row>/` (holding `pipeline.config` and `checkpoint/`) or the tarball `DIR/<row>.tar.gz`
(unpacked under `--runs_dir`), imports it with `import_tf_checkpoint.import_archive` into
`<runs_dir>/<row>/` (the row's experiment file is `experiments/<row>.py`), evaluates it on
COCO val2017 (`--coco_dir` holds `annotations/` and `val2017/`, the official layout; box AP, and
keypoint AP for the keypoint rows) and times the jitted network + decoder at batch 1. It writes
the table (published AP, ours, the difference, the zoo's ms and ours) after every row.

Resumable: a finished row leaves `<runs_dir>/<row>/zoo_row.json` and is not redone; an imported
but unevaluated row is evaluated without importing again. A row whose archive is missing is
listed as missing; a row that fails (a mismatching archive, unreadable data) is listed with its
error and retried on the next run, and the command exits with status 1.
"""

import dataclasses
import json
import os
import platform
import tarfile
import time
from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging

from centernet_jax import checkpointing
from centernet_jax import import_tf_checkpoint
from centernet_jax import inference
from centernet_jax import run_files
from centernet_jax import train

ROW_FILE = 'zoo_row.json'


@dataclasses.dataclass(frozen=True)
class PublishedRow:
  """One row of the TF2 zoo's CenterNet table (tf2_detection_zoo.md; docs/zoo.md).

  APs are COCO val2017 percentages; `ms` is the zoo's speed column (end to end, batch 1, on the
  zoo's unspecified GPU). None: the zoo gives no such figure for the row.
  """
  name: str  # the archive name, also the experiment file's name
  label: str
  box_ap: Optional[float]
  keypoint_ap: Optional[float]
  ms: float


PUBLISHED = (
    PublishedRow('centernet_hg104_512x512_coco17_tpu-8', 'Hourglass-104 512', 41.9, None, 70),
    PublishedRow('centernet_hg104_512x512_kpts_coco17_tpu-32', 'Hourglass-104 512 kpts', 40.0,
                 61.4, 76),
    PublishedRow('centernet_hg104_1024x1024_coco17_tpu-32', 'Hourglass-104 1024', 44.5, None,
                 197),
    PublishedRow('centernet_hg104_1024x1024_kpts_coco17_tpu-32', 'Hourglass-104 1024 kpts',
                 42.8, 64.5, 211),
    PublishedRow('centernet_resnet50_v1_fpn_512x512_coco17_tpu-8', 'ResNet50 V1 FPN 512', 31.2,
                 None, 27),
    PublishedRow('centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8',
                 'ResNet50 V1 FPN 512 kpts', 29.3, 50.7, 30),
    PublishedRow('centernet_resnet101_v1_fpn_512x512_coco17_tpu-8', 'ResNet101 V1 FPN 512',
                 34.2, None, 34),
    PublishedRow('centernet_resnet50_v2_512x512_coco17_tpu-8', 'ResNet50 V2 512', 29.5, None,
                 27),
    PublishedRow('centernet_resnet50_v2_512x512_kpts_coco17_tpu-8', 'ResNet50 V2 512 kpts',
                 27.6, 48.2, 30),
    PublishedRow('centernet_mobilenetv2fpn_512x512_coco17_od', 'MobileNetV2 FPN 512', 23.4, None,
                 6),
    PublishedRow('centernet_mobilenetv2fpn_512x512_coco17_kpts', 'MobileNetV2 FPN 512 kpts',
                 None, 41.7, 6),
)
PUBLISHED_BY_NAME = {row.name: row for row in PUBLISHED}


class ZooTableError(ValueError):
  """A bad flag or input folder, named in the message."""


@dataclasses.dataclass(frozen=True)
class CocoFiles:
  """COCO val2017 in the official layout under one folder."""
  images: str  # val2017/
  instances: str  # annotations/instances_val2017.json
  person_keypoints: str  # annotations/person_keypoints_val2017.json (keypoint rows only)

  @classmethod
  def from_dir(cls, coco_dir: str) -> 'CocoFiles':
    return cls(images=os.path.join(coco_dir, 'val2017'),
               instances=os.path.join(coco_dir, 'annotations', 'instances_val2017.json'),
               person_keypoints=os.path.join(coco_dir, 'annotations',
                                             'person_keypoints_val2017.json'))

  def check(self, need_keypoints: bool) -> None:
    needed = [self.images, self.instances] + ([self.person_keypoints] if need_keypoints else [])
    missing = [p for p in needed if not os.path.exists(p)]
    if missing:
      raise ZooTableError(f'--coco_dir lacks {missing} (expected the official COCO 2017 layout: '
                          'val2017/ and annotations/).')


def _safe_extract(tar_path: str, dest: str) -> None:
  """Unpacks a zoo tarball, refusing members that would land outside `dest`."""
  root = os.path.realpath(dest)
  with tarfile.open(tar_path) as tar:
    for member in tar.getmembers():
      target = os.path.realpath(os.path.join(dest, member.name))
      if not (target == root or target.startswith(root + os.sep)) or member.issym() or \
          member.islnk():
        raise ZooTableError(f'{tar_path}: member {member.name!r} is a link or leaves the '
                            'archive folder; refusing to unpack it.')
    tar.extractall(dest)


def find_archive(archives_dir: str, name: str, unpack_dir: str) -> Optional[str]:
  """The unpacked archive folder of row `name` (holding pipeline.config), or None if absent.

  Looks for `archives_dir/name/`, then the tarball `archives_dir/name.tar.gz` (unpacked once
  into `unpack_dir/name/`; the zoo's tarballs hold one top folder named like the row).
  """
  folder = os.path.join(archives_dir, name)
  if os.path.isfile(os.path.join(folder, 'pipeline.config')):
    return folder
  tarball = os.path.join(archives_dir, name + '.tar.gz')
  if not os.path.isfile(tarball):
    return None
  unpacked = os.path.join(unpack_dir, name)
  if not os.path.isfile(os.path.join(unpacked, 'pipeline.config')):
    _safe_extract(tarball, unpack_dir)
    if not os.path.isfile(os.path.join(unpacked, 'pipeline.config')):
      raise ZooTableError(f'{tarball} holds no {name}/pipeline.config.')
  return unpacked


def evaluation_config(workdir: str, coco: CocoFiles) -> ml_collections.ConfigDict:
  """The imported run's config, reading COCO val2017 from `coco` (COCO JSON source).

  Box AP is against `instances_val2017.json`; a person-only keypoint model (1 class: the
  MobileNetV2 keypoint row) is scored against `person_keypoints_val2017.json` for boxes too,
  so that its label map has the one category it predicts (docs/zoo.md, Data).
  """
  config = run_files.read_run_files(workdir).config
  keypoints = bool(config.keypoints.enabled)
  person_only = keypoints and int(config.model.num_classes) == 1
  with config.unlocked():
    config.dataset.source = 'coco_json'
    config.dataset.val_images = coco.images
    config.dataset.val_annotations = coco.person_keypoints if person_only else coco.instances
    config.dataset.val_keypoint_annotations = coco.person_keypoints if keypoints else ''
    config.eval.on_train_end = True
  return config


def time_batch1_ms(workdir: str, image_path: str, repeats: int) -> float:
  """Median ms of the jitted network + decoder at batch 1 on one image, after two warm-up
  calls (compile); host decoding and resizing excluded (`inference.Predictor`)."""
  predictor = inference.Predictor.from_workdir(workdir, batch_size=1)
  _, image = predictor.load(image_path, 0)
  example = predictor.prepare(image)
  for _ in range(2):
    predictor.run_batch([example])
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    predictor.run_batch([example])  # fetches the detections: the call is complete
    times.append(time.perf_counter() - start)
  return 1000.0 * float(np.median(times))


def _first_val_image(coco: CocoFiles) -> str:
  with open(coco.instances) as f:
    images = json.load(f).get('images') or []
  if not images:
    raise ZooTableError(f'{coco.instances}: no images listed.')
  return os.path.join(coco.images, images[0]['file_name'])


def run_row(row: PublishedRow, archive: str, workdir: str, coco: CocoFiles, *,
            experiments_dir: str, repeats: int) -> dict[str, Any]:
  """Imports (unless already imported), evaluates and times one row; returns its result."""
  start = time.time()
  manager = checkpointing.make_manager(workdir, read_only=True)
  imported = manager.latest_step() is not None
  manager.close()
  if not imported:
    experiment = os.path.join(experiments_dir, row.name + '.py')
    if not os.path.isfile(experiment):
      raise ZooTableError(f'No experiment file {experiment} for row {row.name}.')
    import_tf_checkpoint.import_archive(archive, workdir, experiment=experiment,
                                        experiments_dir=experiments_dir)
  config = evaluation_config(workdir, coco)
  coco.check(bool(config.keypoints.enabled))
  metrics = train.evaluate_checkpoint(config, workdir) or {}
  ms = time_batch1_ms(workdir, _first_val_image(coco), repeats)

  def percent(key):
    return round(100.0 * float(metrics[key]), 2) if key in metrics else None

  return {'status': 'done', 'archive': os.path.abspath(archive), 'box_ap': percent('AP'),
          'keypoint_ap': percent('keypoints/AP'), 'ms': round(ms, 2),
          'backend': jax.default_backend(), 'seconds': round(time.time() - start, 1)}


def _fmt(value: Optional[float]) -> str:
  return '-' if value is None else f'{value:.1f}'


def _diff(ours: Optional[float], published: Optional[float]) -> str:
  return '-' if ours is None or published is None else f'{ours - published:+.1f}'


def render_table(results: dict[str, dict[str, Any]], rows: Sequence[PublishedRow]) -> str:
  """The zoo table as markdown: published AP, ours, the difference, the zoo's ms and ours."""
  lines = [
      '# The TF2 CenterNet zoo, evaluated with centernet-jax',
      '',
      f'Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; JAX '
      f'backend {jax.default_backend()}. Written by `python -m centernet_jax.zoo_table`. APs '
      'are COCO val2017 percentages; our ms: jitted network + decoder at batch 1 (median), the '
      "zoo's: end to end on its GPU.",
      '',
      '| row | box AP zoo | box AP ours | diff | kpt AP zoo | kpt AP ours | diff | zoo ms | '
      'our ms | status |',
      '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for row in rows:
    r = results.get(row.name, {'status': 'missing'})
    lines.append(
        f"| {row.label} (`{row.name}`) | {_fmt(row.box_ap)} | {_fmt(r.get('box_ap'))} | "
        f"{_diff(r.get('box_ap'), row.box_ap)} | {_fmt(row.keypoint_ap)} | "
        f"{_fmt(r.get('keypoint_ap'))} | {_diff(r.get('keypoint_ap'), row.keypoint_ap)} | "
        f"{row.ms:g} | {_fmt(r.get('ms'))} | {r['status']} |")
  return '\n'.join(lines) + '\n'


def select_rows(names: str) -> list[PublishedRow]:
  """`--rows` (comma-separated archive names; empty: all) -> rows, unknown names refused."""
  if not names:
    return list(PUBLISHED)
  wanted = [n.strip() for n in names.split(',') if n.strip()]
  unknown = [n for n in wanted if n not in PUBLISHED_BY_NAME]
  if unknown:
    raise ZooTableError(f'--rows: unknown rows {unknown}; known: {sorted(PUBLISHED_BY_NAME)}.')
  return [PUBLISHED_BY_NAME[n] for n in wanted]


def make_table(archives_dir: str, coco_dir: str, out: str, *, rows: Sequence[PublishedRow],
               runs_dir: str, experiments_dir: str = 'experiments',
               repeats: int = 10) -> dict[str, dict[str, Any]]:
  """Runs every row (resuming finished ones) and writes `out`; returns {row: result}."""
  if not os.path.isdir(archives_dir):
    raise ZooTableError(f'--archives {archives_dir} is not a folder.')
  if not os.path.isdir(coco_dir):
    raise ZooTableError(f'--coco_dir {coco_dir} is not a folder.')
  if repeats <= 0:
    raise ZooTableError(f'--repeats must be positive, got {repeats}.')
  coco = CocoFiles.from_dir(coco_dir)
  coco.check(need_keypoints=False)
  os.makedirs(runs_dir, exist_ok=True)
  unpack_dir = os.path.join(runs_dir, 'archives')
  results = {}
  for row in rows:
    workdir = os.path.join(runs_dir, row.name)
    row_file = os.path.join(workdir, ROW_FILE)
    if os.path.isfile(row_file):
      with open(row_file) as f:
        results[row.name] = json.load(f)
      logging.info('%s: done earlier (%s), not redone.', row.name, row_file)
    else:
      try:
        archive = find_archive(archives_dir, row.name, unpack_dir)
        if archive is None:
          results[row.name] = {'status': 'missing'}
          logging.info('%s: no archive under %s.', row.name, archives_dir)
        else:
          logging.info('%s: %s', row.name, archive)
          result = run_row(row, archive, workdir, coco, experiments_dir=experiments_dir,
                           repeats=repeats)
          with open(row_file + '.tmp', 'w') as f:
            json.dump(result, f, indent=2)
          os.replace(row_file + '.tmp', row_file)
          results[row.name] = result
      except Exception as e:  # pylint: disable=broad-except
        # One broken archive must not cost the other rows; the error is in the table and
        # the log, the row is retried next time, and the command's exit status says it.
        logging.exception('%s failed', row.name)
        message = f'{type(e).__name__}: {e}'.replace('|', '/').replace('\n', ' ')
        results[row.name] = {'status': f'failed: {message[:300]}'}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
      f.write(render_table(results, rows))
  return results


def _define_flags() -> None:
  """The command's flags (defined when run, so importing this module defines none)."""
  flags.DEFINE_string('archives', None, 'Folder of zoo archives (unpacked or .tar.gz).')
  flags.DEFINE_string('coco_dir', None, 'COCO 2017: val2017/ and annotations/.')
  flags.DEFINE_string('out', 'zoo_table.md', 'The markdown table to write.')
  flags.DEFINE_string('rows', '', 'Comma-separated archive names (default: every row).')
  flags.DEFINE_string('runs_dir', 'runs/zoo_table',
                      'Imported workdirs, unpacked tarballs and per-row results.')
  flags.DEFINE_string('experiments_dir', 'experiments', 'Where experiments/<row>.py are read.')
  flags.DEFINE_integer('repeats', 10, 'Timed batch-1 calls per row.')
  flags.mark_flags_as_required(['archives', 'coco_dir'])


def main(argv):
  del argv
  f = flags.FLAGS
  results = make_table(f.archives, f.coco_dir, f.out, rows=select_rows(f.rows),
                       runs_dir=f.runs_dir, experiments_dir=f.experiments_dir,
                       repeats=f.repeats)
  with open(f.out) as table:
    print(table.read())
  if any(r['status'].startswith('failed') for r in results.values()):
    raise SystemExit(1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
