"""Training augmentations as TF graph ops on one example dict, TF2 OD API semantics.

An example is a dict of tensors:
  image    uint8 or float32 [H, W, 3] raw 0..255 (the decoded image, before the resizer), or,
    once a geometric op has run, the view of it (view.py: the untouched `source` plus how the
    ops cropped, padded and mirrored it; `view.materialize` gives the pixels, `view.to_canvas`
    the resized input canvas in one resampling);
  boxes    float32 [N, 4] y-first, normalized to the current (augmented) image (N dynamic);
  classes  int32 [N], and any other key of PER_BOX_KEYS present, follows the boxes;
  keypoints float32 [N, J, 2] (y, x) normalized like the boxes, and keypoint_mask float32
    [N, J] (1 labelled): present only for keypoint tasks; the geometric ops move them and a
    crop unlabels the joints it leaves outside its window.
Every op is `op(example, seed, **arguments) -> example`: the keys present decide what it
touches (no keypoints, no keypoint work), other keys pass through unchanged.

Where an op runs is a property of the op (`OPS[name].kind`):
  'geometric'  on the host, on the view only (no pixel is touched until the resample);
  'pixel'      on the host, on the materialized float32 pixels (random_patch_gaussian);
  'device'     the colour ops: the host only draws the op's parameter (the same random number
               the op always drew) and records the part of the augmented image it applies to;
               the jitted train step applies it (colour_augment.py) after the resample, on the
               float image, in the order of the list. Pointwise colour ops commute with the
               geometry (docs/odapi_reference.md, section 8, says what differs), but not with
               a host pixel op, so a 'pixel' op after a 'device' op is refused.

Every op is stateless: `seed` is a shape-[2] int seed and the op derives its own sub-seeds with
`stateless_fold_in`, so a given (seed, example) always produces the same output.

The experiment lists the ops in order in `config.input.augmentations`, a spec string such as
  'random_horizontal_flip|random_crop_image(random_coef=0.25)|random_adjust_hue(0.02)'
(augment_spec.py: `|` separates ops; arguments are Python literals, positional ones in the
order of the op's signature after `example, seed`). Op i of the list gets the seed
`fold_in(fold_in(example_seed, i), crc32(name))`, so the stream is a pure function of
(config.seed, stream position) and the spec. The zoo's order (docs/odapi_reference.md, section 8):
  flip -> patch gaussian -> crop -> hue -> contrast -> saturation -> brightness
  -> square crop by scale -> pad
(zoo_recipes.py writes it per row; no zoo row uses both crops or both the square crop and the
pad).
"""

from __future__ import annotations

import dataclasses
import inspect
import zlib
from typing import Any, Callable, Sequence

import tensorflow as tf

from centernet_jax.data import augment_spec
from centernet_jax.data import view

# Per-box keys: an op that drops or reorders boxes gathers all of those present.
PER_BOX_KEYS = ('boxes', 'classes', 'keypoints', 'keypoint_mask')

Example = dict[str, tf.Tensor]


def _sub_seed(seed, tag):
  return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tag)


def _uniform(seed, minval=0.0, maxval=1.0):
  return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval,
                                     dtype=tf.float32)


def _keep_boxes(example: Example, kept) -> Example:
  """The example with only the boxes at int32 indices `kept` (every per-box key)."""
  return {**example, **{k: tf.gather(example[k], kept) for k in PER_BOX_KEYS if k in example}}


def _keypoints_to_window(example: Example, window) -> Example:
  """Keypoints normalized to an image -> normalized to `window` (wy0, wx0, wh, ww, in the
  image's normalized units); joints outside [0, 1] x [0, 1] become unlabelled (the OD API's
  `prune_outside_window`, inclusive bounds). No-op without keypoints."""
  if 'keypoints' not in example:
    return example
  wy0, wx0, wh, ww = window
  k = (example['keypoints'] - tf.stack([wy0, wx0])) / tf.stack([wh, ww])
  inside = tf.reduce_all((k >= 0.0) & (k <= 1.0), axis=-1)
  mask = example['keypoint_mask'] * tf.cast(inside, tf.float32)
  return {**example, 'keypoints': tf.where(mask[..., tf.newaxis] > 0, k, 0.0),
          'keypoint_mask': mask}


def random_horizontal_flip(example: Example, seed, probability=0.5, *,
                           flip_permutation=None) -> Example:
  """Flips left-right with `probability`; boxes become x' = 1 - x.

  Keypoints become x' = 1 - x and are renamed through `flip_permutation` (joint j of the
  output is joint `flip_permutation[j]` of the input, so left and right swap); the pipeline
  passes the keypoint spec's permutation.
  """
  do_flip = _uniform(_sub_seed(seed, 0)) < probability
  with_kps = 'keypoints' in example
  if with_kps and flip_permutation is None:
    raise ValueError('random_horizontal_flip: an example with keypoints needs a '
                     'flip_permutation')

  example = view.start(example)

  def flip():
    ymin, xmin, ymax, xmax = tf.unstack(example['boxes'], axis=1)
    out = {**view.flip_left_right(example),
           'boxes': tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=1)}
    if with_kps:
      perm = tf.constant(list(flip_permutation), tf.int32)
      k = tf.gather(example['keypoints'], perm, axis=1)
      m = tf.gather(example['keypoint_mask'], perm, axis=1)
      k = tf.stack([k[..., 0], 1.0 - k[..., 1]], axis=-1)
      out['keypoints'] = tf.where(m[..., tf.newaxis] > 0, k, 0.0)
      out['keypoint_mask'] = m
    return out

  return tf.cond(do_flip, flip, lambda: dict(example))


def random_crop_image(example: Example, seed, *, min_object_covered=1.0,
                      aspect_ratio_range=(0.5, 1.7), area_range=(0.1, 1.0), overlap_thresh=0.3,
                      clip_boxes=True, random_coef=0.25, max_attempts=100) -> Example:
  """The zoo's `random_crop_image`.

  With probability `random_coef` the example is returned unchanged. Otherwise a window is drawn
  by `sample_distorted_bounding_box` (it fully contains at least one box when
  min_object_covered=1; an image without boxes is kept whole), boxes whose intersection with
  the window covers less than `overlap_thresh` of their own area are dropped (with their
  per-box entries), and the rest are moved to the window's frame and clipped to it; joints
  outside the window are unlabelled.
  """
  example = view.start(example)
  boxes = example['boxes']
  keep_original = _uniform(_sub_seed(seed, 0)) < random_coef

  def crop():
    shape = tf.concat([example['view_size'], [3]], 0)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.clip_by_value(boxes, 0.0, 1.0)[tf.newaxis],
        seed=_sub_seed(seed, 1),
        min_object_covered=min_object_covered,
        aspect_ratio_range=list(aspect_ratio_range),
        area_range=list(area_range),
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True)
    wy0 = tf.cast(begin[0], tf.float32) / h
    wx0 = tf.cast(begin[1], tf.float32) / w
    wh = tf.cast(size[0], tf.float32) / h
    ww = tf.cast(size[1], tf.float32) / w
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    ih = tf.maximum(0.0, tf.minimum(ymax, wy0 + wh) - tf.maximum(ymin, wy0))
    iw = tf.maximum(0.0, tf.minimum(xmax, wx0 + ww) - tf.maximum(xmin, wx0))
    area = (ymax - ymin) * (xmax - xmin)
    ioa = tf.math.divide_no_nan(ih * iw, area)
    kept = tf.cast(tf.reshape(tf.where(ioa >= overlap_thresh), [-1]), tf.int32)
    out = _keep_boxes(view.window(example, begin[0], begin[1], size[0], size[1]), kept)
    b = (out['boxes'] - tf.stack([wy0, wx0, wy0, wx0])) / tf.stack([wh, ww, wh, ww])
    out['boxes'] = tf.clip_by_value(b, 0.0, 1.0) if clip_boxes else b
    return _keypoints_to_window(out, (wy0, wx0, wh, ww))

  return tf.cond(keep_original, lambda: dict(example), crop)


def random_absolute_pad_image(example: Example, seed, max_height_padding=200,
                              max_width_padding=200) -> Example:
  """The zoo's `random_absolute_pad_image` with black padding (a zoom-out).

  The new size is a uniform integer in [H, H + max_height_padding] x [W, W + max_width_padding]
  and the image is placed at a uniform random integer offset; boxes and joints move with it.
  """
  example = view.start(example)
  h, w = tf.unstack(example['view_size'])
  th = h + tf.random.stateless_uniform([], _sub_seed(seed, 0), 0, max_height_padding + 1,
                                       dtype=tf.int32)
  tw = w + tf.random.stateless_uniform([], _sub_seed(seed, 1), 0, max_width_padding + 1,
                                       dtype=tf.int32)
  oy = tf.random.stateless_uniform([], _sub_seed(seed, 2), 0, th - h + 1, dtype=tf.int32)
  ox = tf.random.stateless_uniform([], _sub_seed(seed, 3), 0, tw - w + 1, dtype=tf.int32)
  hf, wf, thf, twf, oyf, oxf = (tf.cast(v, tf.float32) for v in (h, w, th, tw, oy, ox))
  scale = tf.stack([hf / thf, wf / twf, hf / thf, wf / twf])
  offset = tf.stack([oyf / thf, oxf / twf, oyf / thf, oxf / twf])
  out = {**view.window(example, -oy, -ox, th, tw), 'boxes': example['boxes'] * scale + offset}
  if 'keypoints' in example:
    out['keypoints'] = example['keypoints'] * scale[:2] + offset[:2]
  return out


def _colour_op(example: Example, value) -> Example:
  """Records a device colour op: its drawn parameter and the whole current image as the part
  it applies to (as the OD API's op, which sees the current image, black pads included)."""
  example = view.start(example)
  h, w = tf.unstack(tf.cast(example['view_size'], tf.float32))
  return {**example,
          'colour_params': tf.concat([example['colour_params'], [value]], 0),
          'colour_windows': tf.concat([example['colour_windows'], [[0.0, 0.0, h, w]]], 0)}


def random_adjust_hue(example: Example, seed, max_delta=0.02) -> Example:
  """Parameter: the hue shift, uniform in [-max_delta, max_delta] (turns)."""
  return _colour_op(example, _uniform(seed, -max_delta, max_delta))


def random_adjust_contrast(example: Example, seed, min_delta=0.8, max_delta=1.25) -> Example:
  """Parameter: the contrast factor, uniform in [min_delta, max_delta]."""
  return _colour_op(example, _uniform(seed, min_delta, max_delta))


def random_adjust_saturation(example: Example, seed, min_delta=0.8, max_delta=1.25) -> Example:
  """Parameter: the saturation factor, uniform in [min_delta, max_delta]."""
  return _colour_op(example, _uniform(seed, min_delta, max_delta))


def random_adjust_brightness(example: Example, seed, max_delta=0.2) -> Example:
  """Parameter: the brightness delta on the 0..1 scale, uniform in [-max_delta, max_delta]."""
  return _colour_op(example, _uniform(seed, -max_delta, max_delta))


def _crop_center_border(max_border, size):
  """The border kept free of crop centres on an axis of `size` pixels (int32 scalar).

  `max_border` divided by the smallest power of two (at least 1, at most `max_border`) that
  brings it to no more than size / 2, as the OD API's `_get_crop_border`: 128 for sides of 256
  pixels or more, 64 for 128..255, and so on.
  """
  size_f = tf.maximum(tf.cast(size, tf.float32), 1.0)
  border_f = tf.cast(max_border, tf.float32)
  exponent = tf.math.ceil(tf.math.log(2.0 * border_f / size_f) / tf.math.log(2.0))
  divisor = tf.clip_by_value(tf.pow(2.0, exponent), 1.0, border_f)
  return tf.cast(max_border, tf.int32) // tf.cast(divisor, tf.int32)


def random_square_crop_by_scale(example: Example, seed, *, scale_min=0.6, scale_max=1.3,
                                max_border=128, num_scales=8) -> Example:
  """The zoo's `random_square_crop_by_scale` (HG104 1024 rows): a square crop, zero padded.

  The side is `scale * max(H, W)` with `scale` drawn uniformly from
  `linspace(scale_min, scale_max, num_scales)`; the centre is a uniform integer pixel at least
  `_crop_center_border(max_border, side of that axis)` from the image edges; the window
  `[c - side // 2, c - side // 2 + side)` is cut out and whatever falls outside the image is
  black. Boxes move to the window's frame; boxes completely outside it are dropped (with their
  per-box entries), the others are clipped to it; joints outside the window are unlabelled, as
  the OD API prunes them. (The OD API also leaves the last image row/column out of the window
  and can make the visible part one pixel shorter than the side for odd sides; those zero
  pixels are not reproduced: here the pixels agree exactly with the box frame.)
  The output image is [side, side, 3].
  """
  example = view.start(example)
  h, w = tf.unstack(example['view_size'])
  scales = tf.linspace(float(scale_min), float(scale_max), int(num_scales))
  index = tf.random.stateless_uniform([], _sub_seed(seed, 0), 0, int(num_scales),
                                      dtype=tf.int32)
  side = tf.cast(scales[index] * tf.cast(tf.maximum(h, w), tf.float32), tf.int32)
  side = tf.maximum(side, 1)

  def center(size, sub):
    border = _crop_center_border(max_border, size)
    hi = tf.maximum(size - border + 1, border + 1)
    c = tf.random.stateless_uniform([], _sub_seed(seed, sub), border, hi, dtype=tf.int32)
    return tf.clip_by_value(c, 0, size - 1)

  y0 = center(h, 1) - side // 2
  x0 = center(w, 2) - side // 2
  hf, wf, sf = (tf.cast(v, tf.float32) for v in (h, w, side))
  wy0, wx0 = tf.cast(y0, tf.float32) / hf, tf.cast(x0, tf.float32) / wf
  wh, ww = sf / hf, sf / wf
  b = (example['boxes'] - tf.stack([wy0, wx0, wy0, wx0])) / tf.stack([wh, ww, wh, ww])
  ymin, xmin, ymax, xmax = tf.unstack(b, axis=1)
  inside = (ymin < 1.0) & (ymax > 0.0) & (xmin < 1.0) & (xmax > 0.0)
  kept = tf.cast(tf.reshape(tf.where(inside), [-1]), tf.int32)
  out = _keep_boxes({**view.window(example, y0, x0, side, side), 'boxes': b}, kept)
  out['boxes'] = tf.clip_by_value(out['boxes'], 0.0, 1.0)
  return _keypoints_to_window(out, (wy0, wx0, wh, ww))


def random_patch_gaussian(example: Example, seed, *, min_patch_size=1, max_patch_size=250,
                          min_gaussian_stddev=0.0, max_gaussian_stddev=1.0,
                          random_coef=0.0) -> Example:
  """The zoo's `random_patch_gaussian` (MobileNetV2 rows): Gaussian noise inside one square.

  With probability `random_coef` the image is returned unchanged (0: always applied).
  Otherwise the patch side is a uniform integer in [min_patch_size, max_patch_size), sigma is
  uniform in [min_gaussian_stddev, max_gaussian_stddev), the patch centre is a uniform pixel,
  and the patch `[c - side // 2, c - side // 2 + side)` (cut at the image edges) gets
  `clip(x / 255 + N(0, sigma), 0, 1) * 255`; pixels outside it are unchanged. Geometry (and so
  the boxes) does not change. The pixels are materialized (float32) for it; geometric ops
  after it view those.
  """
  colour = {k: example[k] for k in ('colour_params', 'colour_windows') if k in example}
  example = view.materialize(example)
  image = example['image']
  apply_patch = _uniform(_sub_seed(seed, 0)) >= random_coef

  def patch():
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    side = tf.random.stateless_uniform([], _sub_seed(seed, 1), int(min_patch_size),
                                       int(max_patch_size), dtype=tf.int32)
    sigma = _uniform(_sub_seed(seed, 2), min_gaussian_stddev, max_gaussian_stddev)
    cy = tf.random.stateless_uniform([], _sub_seed(seed, 3), 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], _sub_seed(seed, 4), 0, w, dtype=tf.int32)
    y0, x0 = cy - side // 2, cx - side // 2
    rows = tf.range(h)[:, tf.newaxis]
    cols = tf.range(w)[tf.newaxis, :]
    mask = (rows >= y0) & (rows < y0 + side) & (cols >= x0) & (cols < x0 + side)
    noise = tf.random.stateless_normal(shape, _sub_seed(seed, 5), stddev=sigma)
    noisy = tf.clip_by_value(image / 255.0 + noise, 0.0, 1.0) * 255.0
    return tf.where(mask[:, :, tf.newaxis], noisy, image)

  return {**example, **colour, 'image': tf.cond(apply_patch, patch, lambda: image)}


@dataclasses.dataclass(frozen=True)
class Op:
  """A registered op: its function and where it runs ('geometric', 'pixel' or 'device', see
  the module docstring)."""
  fn: Callable[..., Example]
  kind: str


OPS: dict[str, Op] = {
    **{fn.__name__: Op(fn, 'geometric') for fn in (
        random_horizontal_flip, random_crop_image, random_square_crop_by_scale,
        random_absolute_pad_image)},
    random_patch_gaussian.__name__: Op(random_patch_gaussian, 'pixel'),
    **{fn.__name__: Op(fn, 'device') for fn in (
        random_adjust_hue, random_adjust_contrast, random_adjust_saturation,
        random_adjust_brightness)},
}

# Arguments the pipeline supplies from the dataset, never written in the spec.
_SUPPLIED = ('flip_permutation',)


# ---------------------------------------------------------------------------------------------
# The spec string of config.input.augmentations.


@dataclasses.dataclass(frozen=True)
class OpSpec:
  name: str
  kwargs: dict[str, Any]


def parse_spec(spec: str, field: str = 'input.augmentations') -> list[OpSpec]:
  """'op|op(1, b=2)|...' -> [OpSpec]; ValueError naming `field`, the op and its position.

  Arguments are bound to the op's signature here, so a wrong name or count fails at start-up.
  """
  ops = []
  for raw in augment_spec.split_spec(spec, field):
    name, args, kwargs, where = raw.name, raw.args, raw.kwargs, raw.where
    if name not in OPS:
      raise ValueError(f'{where}: unknown op; the ops are {sorted(OPS)}')
    params = [p for p in inspect.signature(OPS[name].fn).parameters.values()][2:]
    params = [p for p in params if p.name not in _SUPPLIED]
    positional = [p.name for p in params]
    if len(args) > len(positional):
      raise ValueError(f'{where}: {len(args)} positional arguments, the op takes at most '
                       f'{len(positional)} ({", ".join(positional)})')
    bound = dict(zip(positional, args))
    for k, v in kwargs.items():
      if k not in positional:
        raise ValueError(f'{where}: no argument {k!r}; it takes {", ".join(positional)}')
      if k in bound:
        raise ValueError(f'{where}: argument {k!r} given twice')
      bound[k] = v
    ops.append(OpSpec(name, bound))
  return ops


def _arguments(op: OpSpec) -> dict[str, Any]:
  """The op's arguments with its defaults filled in."""
  params = list(inspect.signature(OPS[op.name].fn).parameters.values())[2:]
  out = {p.name: p.default for p in params if p.name not in _SUPPLIED}
  out.update(op.kwargs)
  return out


def _pair(v):
  return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def spec_problems(spec: str, field: str = 'input.augmentations') -> list[str]:
  """Every problem of the spec as `<field>: op i name: argument=value: <what is allowed>`."""
  try:
    ops = parse_spec(spec, field)
  except ValueError as e:
    return [str(e)]
  problems = []

  def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)

  for i, op in enumerate(ops):
    a = _arguments(op)
    where = f'{field}: op {i} {op.name}'

    def need(name, ok, what):
      if name in a and not ok(a[name]):
        problems.append(f'{where}: {name}={a[name]!r}: {what}')

    for name in ('probability', 'random_coef', 'overlap_thresh', 'min_object_covered'):
      need(name, lambda v: number(v) and 0 <= v <= 1, 'must be a number in [0, 1]')
    for name in ('max_height_padding', 'max_width_padding', 'max_border'):
      need(name, lambda v: isinstance(v, int) and v >= 0, 'must be an integer >= 0')
    for name in ('num_scales', 'min_patch_size', 'max_patch_size', 'max_attempts'):
      need(name, lambda v: isinstance(v, int) and v >= 1, 'must be an integer >= 1')
    for name in ('min_gaussian_stddev', 'max_gaussian_stddev', 'scale_min', 'scale_max'):
      need(name, lambda v: number(v) and v >= 0, 'must be a number >= 0')
    need('area_range', lambda v: len(_pair(v)) == 2 and all(number(x) for x in _pair(v))
         and 0 < v[0] <= v[1] <= 1, 'must be two numbers (low, high) with 0 < low <= high <= 1')
    need('aspect_ratio_range', lambda v: len(_pair(v)) == 2 and all(number(x) for x in _pair(v))
         and 0 < v[0] <= v[1], 'must be two numbers (low, high) with 0 < low <= high')
    if op.name == 'random_adjust_hue':
      need('max_delta', lambda v: number(v) and 0 <= v <= 0.5, 'must be in [0, 0.5]')
    elif op.name == 'random_adjust_brightness':
      need('max_delta', lambda v: number(v) and v >= 0, 'must be a number >= 0')
    elif op.name in ('random_adjust_contrast', 'random_adjust_saturation'):
      if not (number(a['min_delta']) and number(a['max_delta'])
              and 0 < a['min_delta'] <= a['max_delta']):
        problems.append(f"{where}: min_delta={a['min_delta']!r}, max_delta="
                        f"{a['max_delta']!r}: must be numbers with 0 < min_delta <= max_delta")
    for lo, hi in (('scale_min', 'scale_max'), ('min_patch_size', 'max_patch_size'),
                   ('min_gaussian_stddev', 'max_gaussian_stddev')):
      if lo in a and number(a[lo]) and number(a[hi]) and a[lo] > a[hi]:
        problems.append(f'{where}: {lo}={a[lo]!r} > {hi}={a[hi]!r}: the minimum must not '
                        'exceed the maximum')
  # The device ops run after every host op: a host pixel op listed after one would move
  # before it (geometric ops commute with the pointwise colour ops, pixel ops do not).
  first_device = next((i for i, op in enumerate(ops) if OPS[op.name].kind == 'device'), None)
  for i, op in enumerate(ops):
    if first_device is not None and i > first_device and OPS[op.name].kind == 'pixel':
      problems.append(
          f'{field}: op {i} {op.name}: comes after the colour op {first_device} '
          f'{ops[first_device].name}, which runs on the device after every host op; list '
          f'it before the colour ops')
  return problems


def op_seed(example_seed, index: int, name: str):
  """The seed of op `index` (named `name`) of the list: a function of its name and position
  only, so the stream stays a pure function of (seed, stream position)."""
  seed = tf.random.experimental.stateless_fold_in(tf.cast(example_seed, tf.int64), index)
  return tf.random.experimental.stateless_fold_in(seed, zlib.crc32(name.encode()) & 0x7FFFFFFF)


class Augmenter:
  """The ordered ops of a spec, applied to an example dict with per-op seeds."""

  def __init__(self, spec: str, *, flip_permutation: Sequence[int] | None = None):
    """flip_permutation: the keypoint spec's left/right renaming (keypoint tasks)."""
    self.ops = parse_spec(spec)
    self._flip_permutation = (tuple(int(j) for j in flip_permutation)
                              if flip_permutation is not None else None)

  @property
  def num_device_ops(self) -> int:
    """K: the colour ops the train step applies (`colour_params` [K], `colour_windows` [K, 4])."""
    return sum(OPS[op.name].kind == 'device' for op in self.ops)

  def __call__(self, example: Example, seed) -> Example:
    """The augmented example as a view (view.py) of its `image` (uint8 or float32, kept as
    it is), with `colour_params` / `colour_windows` of the device ops.

    seed: shape-[2] per-example seed (from the stream position).
    """
    example = dict(example)
    for key in ('boxes', 'keypoints', 'keypoint_mask'):
      if key in example:
        example[key] = tf.cast(example[key], tf.float32)
    example = view.start(example)
    for i, op in enumerate(self.ops):
      kwargs = dict(op.kwargs)
      if op.name == 'random_horizontal_flip':
        kwargs['flip_permutation'] = self._flip_permutation
      example = view.start(OPS[op.name].fn(example, op_seed(seed, i, op.name), **kwargs))
    return example
