"""python -m gmsop_keras.convert_matconvnet, run as a separate process: an official DagNN .mat -> .keras, refusals.

The `.mat` files are written here in the form the official trainer saves (`saveobj`, MATLAB v7), with
the layers `cnn_init_resnet_GM.m` builds for ResNet18-GM-GAP (`tests/weights/matconvnet_reference.py`);
the converted model's logits are compared with a NumPy forward of that DagNN, float64.
"""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.weights import matconvnet_reference as reference

WORKTREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE, CLASSES = 64, 10
MEAN = (122.7, 114.9, 101.4)  # an RGB mean, [0, 255] units, as imdb.meta.rgbMean
HEAVY = {"tensorflow", "keras", "jax", "torch"}


def run_cli(*args, importtime=False):
    env = dict(os.environ, PYTHONPATH=WORKTREE, TF_CPP_MIN_LOG_LEVEL="3")
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, "-m", "gmsop_keras.convert_matconvnet", *map(str, args)],
                          cwd=WORKTREE, env=env, capture_output=True, text=True, timeout=600)


def error_lines(result):
    """stderr without -X importtime's report; the modules it reported."""
    lines = result.stderr.splitlines()
    loaded = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    return [line for line in lines if not line.startswith("import time:")], loaded


def write_model(path, seed=0, **architecture):
    layers, shapes = reference.official_layers(num_classes=CLASSES, image_size=SIZE, **architecture)
    calibration = np.random.default_rng(seed + 100).uniform(0, 255, (4, SIZE, SIZE, 3))
    params = reference.random_params(layers, shapes, calibration, MEAN, seed=seed)
    reference.save_dagnn(path, layers, params, MEAN, image_size=SIZE)
    return layers, params


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "net-epoch-75.mat"
    return (path, *write_model(path))


def test_converts_the_official_layout_and_matches_a_numpy_forward(official_file, tmp_path):
    import keras

    import gmsop_keras.layers  # noqa: F401  (registers the layers for loading)

    path, layers, params = official_file
    output = tmp_path / "out" / "model.keras"
    result = run_cli("--model", "resnet18", "--head", "gm-gap-16-8", path, "--output", output)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    values = sum(int(np.prod(v.shape)) for v in params.values())
    assert result.stdout.splitlines() == [
        f"loaded {len(params)} params ({values:,} values) of {path} into resnet18 + gm-gap-16-8 "
        f"(64x64, 10 classes, input minus RGB mean 122.70, 114.90, 101.40): {output}"]
    assert len(params) == 112 and sorted(os.listdir(output.parent)) == ["model.keras"]

    images = np.random.default_rng(7).uniform(0, 255, (3, SIZE, SIZE, 3))
    assert reference.gate_margin(layers, params, images, MEAN) > 1e-2  # the top 8 are not a near tie
    expected = reference.forward(layers, params, images, MEAN)
    model = keras.saving.load_model(output)
    got = np.asarray(model(images.astype("float32"), training=False), dtype=np.float64)
    assert model.output_shape == (None, CLASSES) and model.input_shape == (None, SIZE, SIZE, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # The converted model routes each sample to the same 8 components as the official gate.
    gate_logits = reference.forward(layers, params, images, MEAN, variable="H_x")
    official_top = np.sort(np.argsort(-gate_logits, axis=1)[:, :8], axis=1)
    trunk = keras.Model(model.input, model.get_layer("mixture").input)
    mixture = model.get_layer("mixture")
    weights = np.asarray(mixture.gate(mixture._gate_features(trunk(images.astype("float32")), False)))
    assert np.array_equal(np.sort(np.argsort(-weights, axis=1)[:, :8], axis=1), official_top)


@pytest.mark.parametrize("architecture, head, message", [
    (dict(num_components=8, top_k=4), "gm-gap-16-8",
     "layer 'H_x': param 'gating_w' has shape 128x8, expected 128x16"),
    (dict(stage5_stride=1), "gm-gap-16-8", "layer 'conv5_1_adapt_conv_conv' has stride 1, expected 2"),
])
def test_a_file_of_another_architecture_is_refused_naming_the_first_layer_that_differs(
        architecture, head, message, tmp_path):
    path = tmp_path / "other.mat"
    write_model(path, **architecture)
    result = run_cli("--model", "resnet18", "--head", head, path, "--output", tmp_path / "m.keras", importtime=True)
    errors, loaded = error_lines(result)
    assert result.returncode == 2, result.stderr[-2000:]
    assert errors == [f"error: {path}: {message}: it is not the model named by --model and --head"]
    assert not HEAVY & loaded, sorted(HEAVY & loaded)  # refused before TensorFlow loads
    assert not os.path.exists(tmp_path / "m.keras")


def test_files_that_are_not_a_dagnn_mat_are_refused_in_one_line(tmp_path):
    text = tmp_path / "notes.mat"
    text.write_text("not a MATLAB file\n")
    other = tmp_path / "weights.mat"
    import scipy.io

    scipy.io.savemat(other, {"weights": np.ones((2, 2))})
    simplenn = tmp_path / "simplenn.mat"  # vl_simplenn's form: net.layers a cell array of structures
    layers = np.empty((1, 2), dtype=object)
    layers[0, 0], layers[0, 1] = {"type": "conv", "weights": np.ones((1, 2))}, {"type": "relu"}
    scipy.io.savemat(simplenn, {"net": {"layers": layers, "meta": {"classes": "x"}}})
    hdf5 = tmp_path / "v73.mat"  # save(f, 'net', '-v7.3'): HDF5 behind MATLAB's 128-byte header
    with h5py.File(hdf5, "w", userblock_size=512) as f:
        f["net"] = np.ones(3)
    with open(hdf5, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + bytes(8) + b"\x00\x02IM")
    cases = [
        (tmp_path / "missing.mat", f"error: model file not found: {tmp_path / 'missing.mat'}"),
        (text, f"error: cannot read {text} as a MATLAB .mat file ("),
        (other, f"error: {other} holds no variable `net` (it holds: weights): give the model file"),
        (hdf5, f"error: {hdf5} is a MATLAB v7.3 (HDF5) file: load it in MATLAB and save it again with "
               "save(f, 'net', '-v7')"),
        (simplenn, f"error: {simplenn}: `net` is not a MatConvNet DagNN saved by saveobj ("),
    ]
    for path, message in cases:
        result = run_cli("--model", "resnet18", "--head", "gm-gap-16-8", path, "--output", tmp_path / "m.keras",
                         importtime=True)
        errors, loaded = error_lines(result)
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(errors) == 1 and errors[0].startswith(message), errors
        assert "Traceback" not in result.stderr and not HEAVY & loaded


def test_a_head_without_an_official_mapping_is_refused_before_reading(tmp_path):
    result = run_cli("--model", "resnet18", "--head", "gm-sop-16-8", tmp_path / "x.mat", "--output", "m.keras")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: --head gm-sop-16-8: only the official GM-GAP models (gm-gap-N-K) convert"]
