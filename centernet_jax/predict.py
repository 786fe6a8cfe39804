"""The jitted network + decoder that evaluation, `detect`, the benchmarks and exports run.

Only jax and the model/decoder code are needed here (no pycocotools or TensorFlow).
"""

from typing import Any, Callable

import jax

from centernet_jax import decoder as decoder_lib


def keypoint_decode_params(keypoint_spec, config):
  """The decoder's static `KeypointDecodeParams` for a spec and `config.keypoints` (None
  without a spec)."""
  if keypoint_spec is None:
    return None
  k = config.get('keypoints') or {}
  return decoder_lib.KeypointDecodeParams(
      task_name=keypoint_spec.task_name, class_channel=int(keypoint_spec.channel),
      num_candidates=int(k.get('num_candidates', 100)),
      candidate_score_threshold=float(k.get('candidate_score_threshold', 0.1)),
      unmatched_score=float(k.get('unmatched_score', 0.1)),
      box_scale=float(k.get('box_scale', 1.2)),
      candidate_search_scale=float(k.get('candidate_search_scale', 0.3)))


def make_predict_fn(model, *, input_size: int, max_detections: int,
                    keypoint_params=None, multiclass_scores: bool = False
                    ) -> Callable[..., Any]:
  """A jitted (variables, batch) -> detections function for the last feature output.

  The batch needs `image` [B, S, S, 3] raw RGB, `true_size` and `original_size` [B, 2];
  detections are {'boxes' [B, K, 4] original pixels y-first, 'scores', 'classes'}, plus
  'keypoints' [B, K, J, 2] and 'keypoint_scores' [B, K, J] with `keypoint_params`
  (`decoder.KeypointDecodeParams`), and 'multiclass_scores' [B, K, C] with
  `multiclass_scores` (the exports' OD API signature needs them).
  """

  def predict(variables, batch):
    outputs = model.apply(variables, batch['image'], train=False)
    return decoder_lib.decode_detections(
        outputs[-1], true_size=batch['true_size'], original_size=batch['original_size'],
        input_size=input_size, max_detections=max_detections,
        keypoint_params=keypoint_params, multiclass_scores=multiclass_scores)

  return jax.jit(predict)


PREDICT_KEYS = ('image', 'true_size', 'original_size')
