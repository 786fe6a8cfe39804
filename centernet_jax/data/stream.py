"""Positions and seeds of the deterministic training stream.

The example at global stream position g = step * global_batch + process_index * local_batch + i
is record `shuffled_index(g)` of a file-backed source (a fresh stateless permutation per epoch)
augmented with `example_aug_seed(g)`: the stream is a pure function of (config.seed, g), so a
run resumes exactly at any step and the global batch does not depend on the process count.
"""

from __future__ import annotations

import tensorflow as tf

_SHUFFLE_TAG = 0x5EED
_AUG_TAG = 0xA06


def _base_seed(config, tag):
  return tf.constant([int(config.seed) & 0x7FFFFFFF, tag], tf.int64)


def example_aug_seed(config, g):
  """Augmentation seed (shape [2]) of global stream position g (int64 scalar tensor)."""
  return tf.random.experimental.stateless_fold_in(_base_seed(config, _AUG_TAG),
                                                  tf.cast(g, tf.int64))


def shuffled_index(config, g, num_records: int):
  """Record index at global stream position g: a fresh stateless permutation per epoch."""
  g = tf.cast(g, tf.int64)
  epoch = g // num_records
  seed = tf.random.experimental.stateless_fold_in(_base_seed(config, _SHUFFLE_TAG), epoch)
  return tf.random.experimental.index_shuffle(
      g % num_records, tf.cast(seed, tf.int64), tf.constant(num_records - 1, tf.int64))


def global_position(j, *, local_batch: int, global_batch: int, process_index: int):
  """Global stream position of this process's j-th example (j counts from step 0)."""
  return (j // local_batch) * global_batch + process_index * local_batch + j % local_batch


def local_batch_size(global_batch: int, process_count: int, what='batch_size') -> int:
  if global_batch % process_count:
    raise ValueError(f'{what}={global_batch} is not divisible by process_count={process_count}')
  return global_batch // process_count


def check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
