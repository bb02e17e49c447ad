"""`python -m pipelines.convert` in a subprocess: one-line errors, exit status, overwrite, skip-bad."""

import json
import os

import numpy as np
import pytest
from PIL import Image


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def write_tree(root, corrupt=False):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        os.makedirs(root / cls)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    if corrupt:
        (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


@pytest.mark.parametrize("problem", ["truncated", "labels", "shape", "mat", "missing"])
def test_bad_imagenet64_input(tmp_path, fakes, run_cli, problem):
    data, labels = fakes.release_arrays(3)
    source = tmp_path / "src"
    source.mkdir()
    expected = [str(source / "val_data") + ":"]
    if problem == "truncated":
        fakes.write_pickle(source / "val_data", data, labels)
        fakes.truncate(source / "val_data")
        expected.append("truncated or corrupt")
    elif problem == "labels":
        fakes.write_pickle(source / "val_data", data, [3, 2000, 1])
        expected.append("label 2000 at index 1 is out of range 1..1000")
    elif problem == "shape":
        fakes.write_npz(source / "val_data.npz", data[:, :100], labels)
        expected = [str(source / "val_data.npz") + ":", "expected uint8 [3, 12288]"]
    elif problem == "mat":
        (source / "imdb.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 50)
        source, expected = source / "imdb.mat", [str(source / "imdb.mat") + ":", "not a readable MATLAB file"]
    else:
        source, expected = tmp_path / "nowhere", [str(tmp_path / "nowhere") + ": no such file or folder"]
    result = run_cli("imagenet64", "--source", source, "--output", tmp_path / "out")
    assert_clean_error(result, *expected)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_unreadable_image_stops_or_is_skipped(tmp_path, run_cli):
    write_tree(tmp_path / "tree", corrupt=True)
    out = tmp_path / "out"
    args = ["folder", "--source", tmp_path / "tree", "--size", "8", "--output", out, "--min-shards", "1"]
    result = run_cli(*args)
    assert_clean_error(result, f"{tmp_path / 'tree' / 'dog' / 'broken.jpg'}: unreadable image", "--skip-bad")
    assert not (out / "manifest.json").exists()
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]

    result = run_cli(*args, "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable files" in result.stderr and "broken.jpg" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["num_examples"] == 6
    assert len(manifest["skipped"]) == 1 and "broken.jpg" in manifest["skipped"][0]


def test_success_then_refuse_then_overwrite(tmp_path, run_cli):
    out = tmp_path / "out"
    args = ["synthetic", "--output", out, "--num-classes", "3", "--train-per-class", "4",
            "--val-per-class", "2", "--image-size", "8"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}: synthetic 8x8x3, 3 classes; train 12 examples in 4 shards")
    assert "Traceback" not in result.stderr and not result.stderr.strip()  # TensorFlow kept quiet
    assert_clean_error(run_cli(*args), f"{out}: already holds a finished dataset", "--overwrite")
    result = run_cli(*args[:-1], "16", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["image_shape"] == [16, 16, 3]


def test_invalid_option_values(tmp_path, run_cli):
    result = run_cli("synthetic", "--output", tmp_path, "--num-classes", "99")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: `num_classes` must be in 2..63. Received: num_classes=99" in result.stderr
    result = run_cli("folder", "--output", tmp_path, "--source", tmp_path, "--size", "8x")
    assert result.returncode == 2 and "expected N or HxW" in result.stderr
