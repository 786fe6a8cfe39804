"""export.py: the SavedModel (OD API signature), the jax.export artifact and the ONNX model, run
by real clients in separate processes without this repository, against evaluation's own
detections."""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import jax2onnx
import numpy as np
import onnxruntime
from PIL import Image
import pytest

from centernet_jax import checkpointing
from centernet_jax import decoder
from centernet_jax import export
from centernet_jax import inference
from centernet_jax.data import sources
from centernet_jax.data.sources import record_table

from tests import helpers
from tests import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every test but the decoder's reads the module fixture `runs`, which exports two models in
# three formats.
pytestmark = pytest.mark.slow

# The OD API inference tutorial's client, run with TensorFlow only: every `inputs` entry is one
# uint8 [N, H, W, 3] call of `serving_default`. JAX is made unimportable first, as on a machine
# without it (keras, which TF imports, would otherwise load the installed jax).
TF_CLIENT = r'''
import sys


class NoJax:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('jax', 'jaxlib', 'flax', 'centernet_jax'):
      raise ModuleNotFoundError(f'No module named {name!r}')


sys.meta_path.insert(0, NoJax())
import numpy as np
import tensorflow as tf
*pairs, outputs = sys.argv[1:]
result = {}
for model_dir, inputs in zip(pairs[0::2], pairs[1::2]):
  detect_fn = tf.saved_model.load(model_dir).signatures['serving_default']
  data = np.load(inputs)
  for name in data.files:
    detections = detect_fn(input_tensor=tf.convert_to_tensor(data[name]))
    result.update({f'{model_dir}/{name}/{k}': v.numpy() for k, v in detections.items()})
np.savez(outputs, **result)
assert 'jax' not in sys.modules and 'centernet_jax' not in sys.modules, [
    m for m in sys.modules if 'jax' in m]
'''

# The jax.export artifact, deserialized and called by a process that has JAX only.
JAX_CLIENT = r'''
import sys
import jax
import numpy as np
*pairs, outputs = sys.argv[1:]
result = {}
for artifact, inputs in zip(pairs[0::2], pairs[1::2]):
  with open(artifact, 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  data = np.load(inputs)
  for n in (4, 3):  # the batch dimension is symbolic
    out = exported.call(data['image'][:n], data['true_size'][:n], data['original_size'][:n])
    result.update({f'{artifact}/{n}/{k}': np.asarray(v) for k, v in out.items()})
np.savez(outputs, **result)
assert 'centernet_jax' not in sys.modules and 'tensorflow' not in sys.modules
'''


# The ONNX model run by onnxruntime alone: every `inputs` file holds host-resized images, run
# `batch` (the model's fixed batch) at a time.
ONNX_CLIENT = r'''
import sys
import numpy as np
import onnxruntime as ort
*pairs, outputs = sys.argv[1:]
result = {}
for model, inputs in zip(pairs[0::2], pairs[1::2]):
  session = ort.InferenceSession(model, providers=['CPUExecutionProvider'])
  batch = session.get_inputs()[0].shape[0]
  names = [o.name for o in session.get_outputs()]
  data = np.load(inputs)
  for start in range(0, len(data['image']), batch):
    feed = {i.name: data[i.name][start:start + batch] for i in session.get_inputs()}
    result.update({f'{model}/{start}/{k}': v for k, v in zip(names, session.run(None, feed))})
np.savez(outputs, **result)
assert not {'jax', 'centernet_jax', 'tensorflow'} & set(sys.modules), [
    m for m in sys.modules if 'jax' in m or 'tensorflow' in m]
'''


def _run_client(tmp, source: str, *args) -> dict[str, np.ndarray]:
  """Runs a client script isolated from this checkout (-I: no PYTHONPATH, no script folder on
  sys.path), in an empty folder; returns what it saved."""
  script = tmp / 'client.py'
  script.write_text(source)
  out = tmp / 'client_out.npz'
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  result = subprocess.run([sys.executable, '-I', str(script), *map(str, args), str(out)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return dict(np.load(out))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """A box and a keypoint workdir at random weights, each exported as jax, SavedModel and ONNX,
  and
  the images: two synthetic val images (64 x 64) and two 48 x 80 ones (another aspect, so the
  in-graph resize is exercised), decoded as evaluation decodes files, with evaluation's
  detections of them for each model."""
  root = tmp_path_factory.mktemp('export')
  box_config = tiny.tiny_config(os.path.join(REPO, 'data_cache', 'tests_synthetic'))
  kp_config = tiny.tiny_keypoint_config(
      os.path.join(REPO, 'data_cache', 'tests_synthetic_keypoints'))
  val_dir = sources.resolve(box_config).annotation_paths('val')[1]
  images = [record_table.decode_image_file(p).numpy()
            for p in sorted(glob.glob(os.path.join(val_dir, '*.png')))[:2]]
  images += [np.asarray(Image.fromarray(a).resize((80, 48), Image.BILINEAR)) for a in images]
  out = {'images': images}
  for name, config in (('box', box_config), ('kp', kp_config)):
    workdir = str(root / f'{name}_run')
    tiny.write_random_workdir(config, workdir)
    # The keypoint SavedModel and ONNX model have a fixed batch of 2; the box SavedModel a
    # dynamic batch, the box ONNX model the default batch 1. The keypoint ONNX model has flip
    # TTA inside (its references: the Predictor's, which runs evaluation's TTA).
    batch = 2 if name == 'kp' else None
    onnx_tta = 'flip' if name == 'kp' else 'none'
    out[name] = {'workdir': workdir, 'jax': str(root / f'{name}_jax'),
                 'saved_model': str(root / f'{name}_sm'), 'onnx': str(root / f'{name}_onnx'),
                 'refs': tiny.evaluation_detections(workdir, images)}
    out[name]['onnx_refs'] = out[name]['refs'] if onnx_tta == 'none' else [
        r.detections for r in inference.Predictor.from_workdir(workdir, tta=onnx_tta)(images)]
    export.export(workdir, out[name]['jax'], 'jax')
    export.export(workdir, out[name]['saved_model'], 'saved_model', batch=batch)
    export.export(workdir, out[name]['onnx'], 'onnx', batch=batch, tta=onnx_tta)
  return out


def _od_api_expected(ref, image, label_map):
  h, w = image.shape[:2]
  exp = {'detection_boxes': ref['boxes'] / np.array([h, w, h, w], np.float32),
         'detection_scores': ref['scores'],
         'detection_classes': np.asarray(label_map['category_ids'], np.float32)[ref['classes']],
         'num_detections': np.float32(np.sum(ref['scores'] > 0))}
  if 'keypoints' in ref:
    exp['detection_keypoints'] = ref['keypoints'] / np.array([h, w], np.float32)
    exp['detection_keypoint_scores'] = ref['keypoint_scores']
  return exp


def _check_od_api(got: dict[str, np.ndarray], ref, image, label_map):
  for key, want in _od_api_expected(ref, image, label_map).items():
    np.testing.assert_allclose(got[key], want, atol=1e-4, err_msg=key)
  # Every class's score at the peak pixel: a peak's own class holds the detection's score
  # (detections past the last peak score 0, their pixel's scores are read all the same).
  multi = got['detection_multiclass_scores']
  assert multi.shape == ref['scores'].shape + (len(label_map['names']),)
  picked = np.take_along_axis(multi, ref['classes'][:, None], axis=1)[:, 0]
  peak = ref['scores'] > 0
  assert peak.any()
  np.testing.assert_allclose(picked[peak], ref['scores'][peak], atol=1e-4)


def test_saved_model_in_a_tensorflow_only_client(runs, tmp_path):
  a, b, c, d = runs['images']
  calls = {'box': {'a': [a], 'b': [b], 'c': [c], 'd': [d], 'ab': [a, b]},
           'kp': {'ab': [a, b], 'cd': [c, d]}}
  args = []
  for name, model_calls in calls.items():
    inputs = tmp_path / f'{name}_inputs.npz'
    np.savez(inputs, **{k: np.stack(v) for k, v in model_calls.items()})
    args += [runs[name]['saved_model'], inputs]
  got = _run_client(tmp_path, TF_CLIENT, *args)
  for name, model_calls in calls.items():
    model_dir = runs[name]['saved_model']
    refs = dict(zip('abcd', runs[name]['refs']))
    label_map = json.loads(open(os.path.join(model_dir, 'label_map.json')).read())
    for call, members in model_calls.items():
      prefix = f'{model_dir}/{call}/'
      for i, member in enumerate(call):
        _check_od_api({k[len(prefix):]: v[i] for k, v in got.items() if k.startswith(prefix)},
                      refs[member], dict(zip('abcd', runs['images']))[member], label_map)
    assert any(k.startswith(model_dir + '/') and k.endswith('/detection_keypoints')
               for k in got) == (name == 'kp')


def test_signature_equals_the_od_api_exporters(runs):
  """Names, dtypes and ranks of `serving_default` equal those of the OD API's own exporter
  (recorded in tests/data/odapi_serving_signature.json by `make export-signature`, which
  also re-checks them live against the reference environment)."""
  with open(os.path.join(REPO, 'tests', 'data', 'odapi_serving_signature.json')) as f:
    odapi = json.load(f)
  for name, key in (('box', 'box'), ('kp', 'keypoints')):
    ours = export.signature_summary(runs[name]['saved_model'])
    assert ours == {k: tuple(v) for k, v in odapi[key].items()}, name


def _client_args(runs, tmp_path, fmt: str, artifact: str) -> list:
  """[artifact path, inputs .npz] of the box and keypoint exports of `fmt`: the test images
  prepared on the host as the Predictor (and docs/export.md's host-side resize) does."""
  args = []
  for name in ('box', 'kp'):
    predictor = inference.Predictor.from_workdir(runs[name]['workdir'])
    examples = [predictor.prepare(im) for im in runs['images']]
    inputs = tmp_path / f'{name}_inputs.npz'
    np.savez(inputs, **{k: np.stack([e[k] for e in examples]) for k in export.ONNX_INPUTS})
    args += [os.path.join(runs[name][fmt], artifact), inputs]
  return args


def test_jax_artifact_in_a_client_without_the_repository(runs, tmp_path):
  args = _client_args(runs, tmp_path, 'jax', inference.JAX_ARTIFACT)
  got = _run_client(tmp_path, JAX_CLIENT, *args)
  for name, artifact in zip(('box', 'kp'), args[0::2]):
    for n in (4, 3):
      for i in range(n):
        for key, want in runs[name]['refs'][i].items():
          np.testing.assert_allclose(got[f'{artifact}/{n}/{key}'][i], want, atol=1e-4,
                                     err_msg=f'{name} {key}')


def test_onnx_model_in_an_onnxruntime_only_client(runs, tmp_path):
  args = _client_args(runs, tmp_path, 'onnx', inference.ONNX_ARTIFACT)
  got = _run_client(tmp_path, ONNX_CLIENT, *args)
  # The flip references differ from the plain ones, so the keypoint model's TTA is checked.
  assert not np.allclose(runs['kp']['onnx_refs'][0]['scores'], runs['kp']['refs'][0]['scores'])
  for name, model, batch, tta in (('box', args[0], 1, 'none'), ('kp', args[2], 2, 'flip')):
    meta = inference.read_export_meta(runs[name]['onnx'], 'onnx')
    assert meta['batch'] == batch and meta['config']['eval']['tta'] == tta
    label_map = json.loads(open(os.path.join(runs[name]['onnx'], 'label_map.json')).read())
    for i, (image, ref) in enumerate(zip(runs['images'], runs[name]['onnx_refs'])):
      prefix = f'{model}/{i - i % batch}/'
      _check_od_api({k[len(prefix):]: v[i % batch] for k, v in got.items()
                     if k.startswith(prefix)}, ref, image, label_map)
    assert (f'{model}/0/detection_keypoints' in got) == (name == 'kp')


def test_predictor_from_export_equals_from_workdir(runs):
  for name in ('box', 'kp'):
    predictor = inference.Predictor.from_export(runs[name]['jax'], batch_size=3)
    results = list(predictor(runs['images']))
    assert predictor.step == 1 and len(results) == 4
    assert predictor.class_names == checkpointing.read_meta(
        runs[name]['workdir'])['label_map']['names']
    for result, ref in zip(results, runs[name]['refs']):
      assert set(result.detections) == set(ref)
      for key, want in ref.items():
        np.testing.assert_allclose(result.detections[key], want, atol=1e-4, err_msg=key)


def test_bad_exports_are_refused(runs, tmp_path):
  with pytest.raises(inference.ExportError, match="a 'saved_model' export, not a 'jax' one"):
    inference.Predictor.from_export(runs['box']['saved_model'])
  with pytest.raises(inference.ExportError, match="an? 'onnx' export, not a 'jax' one"):
    inference.Predictor.from_export(runs['box']['onnx'])
  with pytest.raises(inference.ExportError, match='export_meta.json is missing'):
    inference.Predictor.from_export(tmp_path)
  old = tmp_path / 'old'
  shutil.copytree(runs['box']['jax'], old)
  meta = json.loads((old / 'export_meta.json').read_text())
  (old / 'export_meta.json').write_text(json.dumps({**meta, 'format_version': 0}))
  with pytest.raises(inference.ExportError, match='format_version 0, this version reads 1'):
    inference.Predictor.from_export(old)
  # A label map of another model beside the artifact.
  (old / 'export_meta.json').write_text(json.dumps(meta))
  shutil.copy(os.path.join(runs['kp']['jax'], 'label_map.json'), old / 'label_map.json')
  with pytest.raises(inference.ExportError, match='classes'):
    inference.Predictor.from_export(old)


def test_bad_export_arguments(runs, tmp_path):
  with pytest.raises(ValueError, match='--batch=0: must be >= 1'):
    export.export(runs['box']['workdir'], str(tmp_path / 'x'), 'saved_model', batch=0)
  with pytest.raises(ValueError, match='--batch=0: must be >= 1'):
    export.export(runs['box']['workdir'], str(tmp_path / 'x'), 'onnx', batch=0)
  with pytest.raises(ValueError, match="--tta='multiscale'.*onnx exports none or flip only"):
    export.export(runs['box']['workdir'], str(tmp_path / 'x'), 'onnx', tta='multiscale')
  with pytest.raises(ValueError, match="--format='tflite'"):
    export.export(runs['box']['workdir'], str(tmp_path / 'x'), 'tflite')
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    export.export(str(tmp_path / 'empty'), str(tmp_path / 'x'), 'jax')


def test_onnx_decoder_selects_the_stage_that_settles_the_top_k():
  # The tests' exports decode maps of 16 x 16 pixels, which `decoder.top_k_peaks` peak-tests
  # whole; a zoo model's 128 x 128 map goes through its `cond`s. One ONNX graph of it (96
  # pixels, then 128 more, at 32 x 40 x 6) on three maps, each settled by another stage:
  # noise by the first, smooth noise by the second, broad maxima by the whole map.
  b, h, w, c, k, p, more = 2, 32, 40, 6, 30, 96, 128
  maps = {'noise': np.random.default_rng(7).normal(-4.0, 2.0, (b, h, w, c)),
          'smooth_noise': helpers.smooth_noise(b, h, w, c),
          'broad_maxima': helpers.broad_maxima(b, h, w, c, seed=1)}
  maps = {name: jnp.asarray(m, jnp.float32) for name, m in maps.items()}
  # pylint: disable=protected-access
  for name, stage in (('noise', 1), ('smooth_noise', 2), ('broad_maxima', 3)):
    first, found = decoder._top_k_peaks_of_pixels(maps[name], k, p)
    found_more = decoder._top_k_peaks_of_more_pixels(maps[name], first, p, p + more)[1]
    assert bool(np.all(found)) == (stage == 1), name
    assert stage == 1 or bool(np.all(found_more)) == (stage == 2), name
  spec = jax.ShapeDtypeStruct((b, h, w, c), jnp.float32)
  with jax.disable_jit():
    closed = jax.make_jaxpr(lambda logits: decoder.top_k_peaks(logits, k, p, more))(spec)
  model = jax2onnx.to_onnx(lambda logits: export._replay(closed, logits), [spec],
                           model_name='top_k_peaks', opset=export.ONNX_OPSET)
  # pylint: enable=protected-access
  session = onnxruntime.InferenceSession(model.SerializeToString())
  for name, logits in maps.items():
    values, pixels, classes = decoder.top_k_peaks_whole_map(logits, k)
    got_values, got_pixels, got_classes = session.run(
        None, {session.get_inputs()[0].name: np.asarray(logits)})
    np.testing.assert_array_equal(got_pixels, pixels, err_msg=name)
    np.testing.assert_array_equal(got_classes, classes, err_msg=name)
    # onnxruntime's sigmoid rounds a few scores differently from XLA's (6e-8 here).
    np.testing.assert_allclose(got_values, values, rtol=0, atol=1e-6, err_msg=name)
