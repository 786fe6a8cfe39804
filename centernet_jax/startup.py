"""What runs before any model is built, and the run-time guard of the training stream.

`check_before_build(config, workdir, splits=...)`, called first by train.Trainer:
1. the whole configuration (config_check.check_config: types, ranges, unknown fields, batch
   sizes against the devices and processes);
2. every file the config names exists (the message names the config field);
3. the label map and `model.num_classes` against it; the keypoint definition;
4. both splits ('train' and 'val'; only 'val' in eval mode) read and validated
   (coco_json.load_coco_json: every record and field, duplicate ids, the val fields COCOeval
   reads, keypoint joints of both splits the same) with every image checked as
   `dataset.check_images` says (image_check.py, verdicts cached in
   `<workdir>/image_checks.json`). Images skipped under `skip_bad_images` are listed in
   `<workdir>/skipped_images.txt`.
It returns the run's `DatasetFacts` (sources.resolve: label map, keypoint spec, files), resolved
once here, and the loaded splits, which the pipeline then uses instead of reading them again.

`TrainBatches` wraps the training iterator: when a batch fails because an image no longer
decodes (a file changed after start-up, a flaky remote read), the images of that batch are
decoded again one by one to find which; under `skip_bad_images` each bad one is replaced by
the next good record (the stream keeps its length and order otherwise), counted and listed,
else the run stops with the file named.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from etils import epath

from centernet_jax import config_check
from centernet_jax import file_io
from centernet_jax.data import coco_json
from centernet_jax.data import image_check
from centernet_jax.data import pipeline
from centernet_jax.data import sources
from centernet_jax.data import stream

IMAGE_CHECK_CACHE = 'image_checks.json'
SKIPPED_IMAGES = 'skipped_images.txt'
# Config fields naming files that must exist when set, whatever the source.
_OPTIONAL_PATH_FIELDS = ('dataset.train_keypoint_annotations', 'dataset.val_keypoint_annotations',
                         'init_checkpoint')


def _field(config, dotted: str):
  value = config
  for part in dotted.split('.'):
    value = value[part]
  return value


def _check_paths(config, splits) -> None:
  """Every file the config names exists; the source's required fields are set."""
  missing = []
  fields = dict(sources.for_config(config).path_fields(splits))
  fields.update({name: False for name in _OPTIONAL_PATH_FIELDS})
  for name, required in fields.items():
    split = name.split('.')[-1].split('_')[0]
    if split in ('train', 'val') and split not in splits:
      continue
    path = str(_field(config, name))
    if not path:
      if required:
        missing.append(f"{name}='' must be set for dataset.source={config.dataset.source!r}")
    elif not file_io.exists(path):
      missing.append(f'{name}={path!r}: does not exist')
  if missing:
    raise config_check.ConfigError('\n'.join(['files named by the config are missing:']
                                             + [f'  {m}' for m in missing]))


def check_before_build(config: ml_collections.ConfigDict, workdir: str | epath.PathLike, *,
                       splits: tuple[str, ...] = ('train', 'val')
                       ) -> tuple[sources.DatasetFacts, dict[str, coco_json.CocoDataset]]:
  """Validates `config` and the data of `splits`; returns the run's dataset facts (resolved
  here, once) and the loaded splits ({} for a streamed source).

  Raises config_check.ConfigError or ValueError naming the field, file, record and value.
  """
  config_check.check_config(config, num_devices=jax.device_count(),
                            num_processes=jax.process_count())
  _check_paths(config, splits)
  _check_workdir_writable(workdir)
  source = sources.for_config(config)
  # Raises for a missing or malformed keypoint category too.
  facts = source.facts()
  config_check.check_num_classes(config, facts.num_classes,
                                 facts.label_map_file or facts.source)
  cache = ''
  if config.dataset.image_check_cache:  # read by every process, written by process 0
    cache = file_io.join(file_io.absolute(workdir), IMAGE_CHECK_CACHE)
  datasets = {}
  skipped = []
  for split in splits:
    loaded = source.load_split(facts, split, image_check_cache=cache,
                               write_image_check_cache=jax.process_index() == 0)
    if loaded is None:  # a streamed source: nothing held on the host
      continue
    datasets[split] = loaded
    skipped += datasets[split].skipped_images
    logging.info('start-up check of the %s split passed: %s (%s)', split,
                 coco_json.records_summary(datasets[split].records),
                 datasets[split].annotation_file)
  if 'train' in datasets and not datasets['train'].records:
    raise ValueError(f'{datasets["train"].annotation_file}: the training split has no usable '
                     f'images ({len(skipped)} skipped as unreadable)')
  if 'val' in datasets and not datasets['val'].records:
    logging.warning('%s: the val split has no usable images; evaluation will report zeros',
                    datasets['val'].annotation_file)
  if skipped:
    write_skipped(workdir, skipped)
    logging.warning('%d images skipped (dataset.skip_bad_images=True), listed in %s',
                    len(skipped), file_io.join(str(workdir), SKIPPED_IMAGES))
  return facts, datasets


def _check_workdir_writable(workdir) -> None:
  """Creates the workdir and writes a probe file there (process 0), so that a workdir that
  cannot be written fails now rather than at the first checkpoint."""
  if jax.process_index() != 0:
    return
  probe = epath.Path(workdir) / '.write_probe'
  try:
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except  # OSError, tf.errors alike
    raise config_check.ConfigError(f'workdir {workdir}: cannot be written ({_first_line(e)})'
                                   ) from None


def write_skipped(workdir, lines: list[str], append: bool = False) -> None:
  """Writes (or appends to) `<workdir>/skipped_images.txt` on process 0."""
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir) / SKIPPED_IMAGES
  path.parent.mkdir(parents=True, exist_ok=True)
  old = path.read_text() if append and path.exists() else ''
  path.write_text(old + ''.join(line + '\n' for line in lines))


def _first_line(error: Exception) -> str:
  text = getattr(error, 'message', None) or str(error)
  return (text.strip().splitlines() or [type(error).__name__])[0]


@dataclasses.dataclass
class _Bad:
  index: int
  message: str


class TrainBatches:
  """The training batches of this process, with images that fail to decode named or skipped.

  Iterates like `pipeline.make_train_iterator(config, facts, start_step=...)`; `num_skipped`
  counts the records replaced at run time.
  """

  def __init__(self, config: ml_collections.ConfigDict, facts: sources.DatasetFacts, *,
               start_step: int,
               process_index: int, process_count: int,
               dataset: coco_json.CocoDataset | None, workdir):
    self.config = config
    self.facts = facts
    self.step = int(start_step)  # batches consumed so far
    self.process_index = process_index
    self.process_count = process_count
    self.dataset = dataset
    self.workdir = workdir
    self.replaced: dict[int, str] = {}  # record index -> why it is skipped
    self._it = self._make()

  @property
  def num_skipped(self) -> int:
    return len(self.replaced)

  def _substitutes(self) -> list[int]:
    """For each record index, the record used in its place: itself, or for a replaced one the
    next good record (same length, so the shuffle of every other position stays the same)."""
    n = len(self.dataset.records)
    if len(self.replaced) >= n:
      raise ValueError(f'{self.dataset.annotation_file}: no training image decodes any more '
                       f'({n} skipped)')
    out = []
    for i in range(n):
      j = i
      while j in self.replaced:
        j = (j + 1) % n
      out.append(j)
    return out

  def _effective_dataset(self):
    if not self.replaced:
      return self.dataset
    records = self.dataset.records
    return dataclasses.replace(self.dataset, records=[records[j] for j in self._substitutes()])

  def _make(self):
    while True:
      try:
        return pipeline.make_train_iterator(
            self.config, self.facts, start_step=self.step, process_index=self.process_index,
            process_count=self.process_count, dataset=self._effective_dataset())
      except tf.errors.OpError as e:  # dataset.cache_decoded decodes every image up front
        if self.dataset is None:
          raise
        self._handle(e, range(len(self.dataset.records)), 'building the decoded-image cache')

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    while True:
      try:
        batch = next(self._it)
      except tf.errors.OpError as e:
        if self.dataset is None:
          raise RuntimeError(f'reading the training batch of step {self.step + 1} failed: '
                             f'{_first_line(e)}') from None
        self._handle(e, self._batch_indices(self.step), f'training step {self.step + 1}')
        self._it = self._make()
        continue
      self.step += 1
      return batch

  def _batch_indices(self, batch: int) -> list[int]:
    """Record indices (before replacement) of this process's examples of batch `batch`."""
    global_batch = int(self.config.batch_size)
    local = global_batch // self.process_count
    num = len(self.dataset.records)
    out = []
    for i in range(local):
      g = batch * global_batch + self.process_index * local + i
      out.append(int(stream.shuffled_index(self.config, g, num)))
    return out

  def _handle(self, error: Exception, indices, where: str) -> None:
    subs = self._substitutes() if self.replaced else None
    bad = []
    for idx in sorted({subs[i] if subs else i for i in indices}):
      rec = self.dataset.records[idx]
      hw, err, _ = image_check.check_one(rec.path, 'decode')
      if err is None and hw != (rec.height, rec.width):
        err = (f'decodes to {hw[0]}x{hw[1]} but the JSON says height={rec.height} '
               f'width={rec.width}')
      if err is not None:
        bad.append(_Bad(idx, f'{self.dataset.annotation_file}: image id {rec.image_id}: '
                             f'image file {rec.path!r} (field \'file_name\'): {err}'))
    if not bad:
      raise RuntimeError(f'{where}: the input pipeline failed ({_first_line(error)}), but '
                         'every image of the batch decodes when checked again') from None
    if not self.config.dataset.skip_bad_images:
      raise ValueError(f'{bad[0].message} -- at {where}; the file changed or cannot be read '
                       'since the start-up check. Replace it, or set '
                       'dataset.skip_bad_images=True to skip such images') from None
    for b in bad:
      logging.warning('skipping an image that no longer decodes, at %s: %s', where, b.message)
      self.replaced[b.index] = b.message
    write_skipped(self.workdir, [f'{b.message} (at {where})' for b in bad], append=True)


def _first_bad(dataset: coco_json.CocoDataset, records) -> str | None:
  """The message of the first record whose image no longer decodes as the JSON says."""
  for rec in records:
    hw, err, _ = image_check.check_one(rec.path, 'decode')
    if err is None and hw != (rec.height, rec.width):
      err = f'decodes to {hw[0]}x{hw[1]} but the JSON says height={rec.height} width={rec.width}'
    if err is not None:
      return (f'{dataset.annotation_file}: image id {rec.image_id}: image file {rec.path!r} '
              f"(field 'file_name'): {err}")
  return None


class EvalBatches:
  """Wraps a pipeline.EvalIterator: an input error during evaluation names the image file.

  (Evaluation never skips an image: its ground truth would count as missed.) Every other
  attribute is the wrapped iterator's.
  """

  def __init__(self, inner, dataset: coco_json.CocoDataset | None):
    self._inner = inner
    self._dataset = dataset

  def __getattr__(self, name):
    return getattr(self._inner, name)

  def __len__(self):
    return len(self._inner)

  def __iter__(self):
    iter(self._inner)
    return self

  def __next__(self):
    try:
      return next(self._inner)
    except tf.errors.OpError as e:
      if self._dataset is None:
        raise RuntimeError(f'reading an evaluation batch failed: {_first_line(e)}') from None
      wanted = set(self._inner.image_ids or ())
      message = _first_bad(self._dataset, [r for r in self._dataset.records
                                           if r.image_id in wanted])
      if message is None:
        raise RuntimeError(f'reading an evaluation batch failed ({_first_line(e)}), but every '
                           'val image decodes when checked again') from None
      raise ValueError(f'{message} -- during evaluation; the file changed or cannot be read '
                       'since the start-up check') from None
