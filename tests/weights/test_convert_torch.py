"""python -m gmsop_keras.convert_torch, run as a separate process: .pth -> .keras (+ SavedModel), refusals."""

import os
import subprocess
import sys

import numpy as np
import pytest

WORKTREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TORCH_REASON = "torch is not installed (pip install torch==2.13.0): writing .pth files needs it"
SIZE = 64
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def run_cli(*args, pythonpath=WORKTREE):
    env = dict(os.environ, PYTHONPATH=pythonpath, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "gmsop_keras.convert_torch", *map(str, args)],
        cwd=WORKTREE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def gauss_checkpoint(tmp_path_factory):
    """The Gaussian-pooling ResNet-50's state_dict as the authors' scripts save it: wrapped, DataParallel names."""
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    from tests.weights.torch_reference import reference_model

    reference = reference_model("gauss-resnet50", "gap", num_classes=7, size=SIZE)
    path = tmp_path_factory.mktemp("checkpoint") / "gauss.pth.tar"
    state = {f"module.{key}": value for key, value in reference.state_dict().items()}
    torch.save({"epoch": 90, "arch": "resnet50", "state_dict": state}, path)
    return path, reference


def test_converts_a_wrapped_checkpoint_to_a_keras_model_and_a_saved_model(gauss_checkpoint, tmp_path):
    import keras
    import torch

    import gmsop_keras.layers  # noqa: F401  (registers the layers for loading)

    path, reference = gauss_checkpoint
    output = tmp_path / "out" / "gauss.keras"
    serving = tmp_path / "serving"
    options = ("--model", "gauss-resnet50", "--output", output, "--input-size", SIZE, "--saved-model", serving)
    result = run_cli(path, *options)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(output), str(serving / "1")]
    assert os.path.isfile(serving / "1" / "saved_model.pb")
    assert sorted(os.listdir(output.parent)) == ["gauss.keras"]  # no partial file left

    model = keras.saving.load_model(output)
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    got = np.asarray(model(images, training=False))
    normalised = ((images / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    with torch.no_grad():
        want = reference.double()(torch.from_numpy(normalised)).numpy()
    bias = reference.fc.bias.detach().numpy()
    assert np.abs(got - want).max() / np.abs(want - bias).max() < 1e-4


def test_a_checkpoint_of_another_model_is_refused_with_its_extra_tensors(gauss_checkpoint, tmp_path):
    path, _ = gauss_checkpoint
    output = tmp_path / "wrong.keras"
    result = run_cli(path, "--model", "resnet50-imagenet", "--output", output, "--input-size", SIZE)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # TensorFlow logs too
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1]
    assert errors[0].startswith("error: The checkpoint is not a 'resnet50-imagenet' state_dict")
    assert "unexpected: pool1.ToHidden.1.weight" in errors[0]
    assert "mis-shaped" not in errors[0]  # same shapes where the two networks agree
    assert not output.exists()


def test_an_unknown_model_name_lists_the_models(gauss_checkpoint, tmp_path):
    path, _ = gauss_checkpoint
    result = run_cli(path, "--model", "resnet51", "--output", tmp_path / "m.keras")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: Unknown model: 'resnet51'. Valid models: resnet50-imagenet, gsop1-resnet50, gsop2-resnet50, "
        "gauss-resnet50, resnet50-3g."
    )


def test_without_torch_the_error_names_the_pip_command(tmp_path):
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named torch')\n")
    checkpoint = tmp_path / "any.pth"
    checkpoint.write_bytes(b"not read")
    result = run_cli(checkpoint, "--model", "gsop1-resnet50", "--output", tmp_path / "m.keras",
                     pythonpath=f"{fake.parent}{os.pathsep}{WORKTREE}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: reading a PyTorch checkpoint needs torch: pip install torch==2.13.0 (or pip install torch)"
    )


def test_an_output_that_is_not_keras_is_refused(tmp_path):
    result = run_cli(tmp_path / "x.pth", "--model", "gsop1-resnet50", "--output", tmp_path / "model.h5")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --output must end in .keras, got {tmp_path / 'model.h5'}"


def _not_a_checkpoint(tmp_path, kind):
    """A file (or folder) that `convert_torch` is given by mistake, and the one line it must print."""
    path = tmp_path / f"{kind}.pth"
    if kind == "empty":
        path.write_bytes(b"")
        return path, f"error: checkpoint {path} is empty (0 bytes): it was cut short; save or download it again"
    if kind == "folder":
        path.mkdir()
        return path, f"error: checkpoint {path} is a folder; pass the .pth file in it"
    if kind == "missing":
        return path, f"error: checkpoint not found: {path}"
    if kind == "text":
        path.write_text("hello\n")
        reason = "not a pickle"
    else:  # the first half of a real checkpoint: a download cut short
        torch = pytest.importorskip("torch", reason=TORCH_REASON)
        torch.save({"fc.weight": torch.zeros(64, 64)}, tmp_path / "whole.pth")
        path.write_bytes((tmp_path / "whole.pth").read_bytes()[:4000])
        reason = "PytorchStreamReader failed reading zip archive: failed finding central directory"
    return path, (f"error: cannot read {path} as a PyTorch checkpoint ({reason}): it is not one, or it is "
                  "cut short; save or download it again")


@pytest.mark.parametrize("kind", ["empty", "folder", "missing", "text", "truncated"])
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, kind):
    path, expected = _not_a_checkpoint(tmp_path, kind)
    result = run_cli(path, "--model", "resnet50-imagenet", "--output", tmp_path / "m.keras")
    assert result.returncode == 2
    assert result.stderr.strip() == expected
    assert not (tmp_path / "m.keras").exists()
