"""evaluate: a fresh `python -m gmsop_keras.evaluate` loads the package's layers and refuses a model/data mismatch."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from gmsop_keras import build_model
from gmsop_keras.training.errors import UsageError
from gmsop_keras.serving.loading import check_model_matches_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_module(module, *args, cwd=ROOT):
    """`python -m MODULE ARGS` in a fresh interpreter that has imported nothing of the project."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def gm_sop_file(tmp_path_factory):
    """A saved gm-sop-4-2 model (4 classes, 16x16, untrained): it holds GatedMixture and SquareRootSOP."""
    model = build_model("resnet18", "gm-sop-4-2", num_classes=4, input_shape=(16, 16, 3), sop_channels=16)
    path = str(tmp_path_factory.mktemp("models") / "gm.keras")
    model.save(path)
    return path


def test_fresh_process_evaluates_a_gm_sop_model(gm_sop_file, tiny_synthetic, tmp_path):
    import keras

    import pipelines

    result = run_module("gmsop_keras.evaluate", gm_sop_file, "--data-dir", tiny_synthetic,
                        "--batch-size", "8", "--output", tmp_path / "result.json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Could not locate class" not in result.stderr
    reported = json.loads(result.stdout)
    assert reported == json.loads((tmp_path / "result.json").read_text())
    # The same numbers computed here from the same file and the same 32 validation images.
    model = keras.saving.load_model(gm_sop_file)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in
                           pipelines.make_dataset(tiny_synthetic, "validation", 8, training=False)])
    logits = model.predict(np.concatenate(images), verbose=0)
    labels = np.concatenate(labels)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert reported["num_examples"] == 32
    assert reported["top1_error"] == pytest.approx(1 - np.mean(top5[:, 0] == labels))
    assert reported["top5_error"] == pytest.approx(0.0)  # 4 classes: the top 5 hold every label


def test_fresh_process_refuses_a_model_of_other_data(gm_sop_file, tmp_path):
    import pipelines

    other = pipelines.ensure_synthetic(str(tmp_path / "other"), num_classes=3, train_per_class=4,
                                       val_per_class=2, image_size=24, min_shards=1)
    result = run_module("gmsop_keras.evaluate", gm_sop_file, "--data-dir", other)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(f"error: model {gm_sop_file} takes 16x16x3 images and predicts 4 classes, "
                               f"but {other} holds synthetic images of 24x24x3 (3 classes;")
    assert "evaluate the model on the dataset it was trained on" in lines[0]


def fake_model(input_shape, num_classes):
    return types.SimpleNamespace(input_shape=(None,) + input_shape, output_shape=(None, num_classes))


@pytest.mark.parametrize("dataset, stored, model_input, classes, expected", [
    ("imagenet64", (64, 64, 3), (64, 64, 3), 1000, None),       # whole images
    ("places365", (100, 100, 3), (96, 96, 3), 365, 96),          # the 96x96 crop training takes
    ("places365", (100, 100, 3), (100, 100, 3), 365, None),
    ("imagenet64", (64, 64, 3), (32, 32, 3), 1000, "32x32x3"),  # not a crop any training takes
    ("imagenet64", (64, 64, 3), (56, 56, 3), 1000, "56x56x3"),
    ("places365", (100, 100, 3), (64, 64, 3), 365, "64x64x3"),
    ("imagenet64", (64, 64, 3), (64, 64, 3), 4, "predicts 4 classes"),
    ("imagenet64", (64, 64, 3), (32, 32, 3), 4, "takes 32x32x3 images and predicts 4 classes"),
])
def test_model_and_data_pairing(dataset, stored, model_input, classes, expected):
    num_classes = 365 if dataset == "places365" else 1000
    manifest = {"dataset": dataset, "image_shape": list(stored), "num_classes": num_classes}
    model = fake_model(model_input, classes)
    if expected is None or isinstance(expected, int):
        assert check_model_matches_data(model, manifest, "m.keras", "data") == expected
        return
    with pytest.raises(UsageError) as info:
        check_model_matches_data(model, manifest, "m.keras", "data")
    message = str(info.value)
    assert expected in message and f"{stored[0]}x{stored[1]}x3 ({num_classes} classes" in message
    assert "\n" not in message


def test_wrong_split_and_batch_size_are_answered_before_tensorflow_loads(gm_sop_file, tiny_synthetic):
    for args, expected in (
        (["--split", "test"], f"error: {tiny_synthetic} has no split 'test' (it has train, validation); "
                              "choose one with --split"),
        (["--batch-size", "0"], "error: --batch-size and --steps must be positive, got 0 and None"),
        ([], None),
    ):
        if expected is None:  # a missing model file, named
            result = run_module("gmsop_keras.evaluate", gm_sop_file + ".missing", "--data-dir", tiny_synthetic)
            expected = f"error: model {gm_sop_file}.missing not found"
        else:
            result = run_module("gmsop_keras.evaluate", gm_sop_file, "--data-dir", tiny_synthetic, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [expected]


def test_fresh_process_pad_crop_test_time_augmentation(tiny_synthetic, tmp_path):
    """`--test-time-augment pad-crop`: the softmax averaged over seeded pad-4 crops, as computed here."""
    import keras
    import tensorflow as tf

    import pipelines
    from pipelines.augment import prediction_pad_crops

    model = build_model("resnet18", "gap", num_classes=4, input_shape=(16, 16, 3), seed=0)
    path = str(tmp_path / "gap.keras")
    model.save(path)
    args = ("--data-dir", tiny_synthetic, "--batch-size", "8", "--test-time-augment", "pad-crop",
            "--test-time-crops", "3", "--seed", "5")
    result = run_module("gmsop_keras.evaluate", path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    reported = json.loads(result.stdout)
    assert reported["crops"] == 3 and reported["test_time_augment"] == "pad-crop"

    correct = 0
    for index, (images, labels) in enumerate(pipelines.make_dataset(tiny_synthetic, "validation", 8, training=False)):
        crops = prediction_pad_crops(images, 5, index, 3)
        for crop in crops:  # each crop is the image shifted by up to 4 pixels, zeros coming in
            assert crop.shape == images.shape and crop.dtype == tf.uint8
        probabilities = np.mean([keras.ops.softmax(model(c.numpy().astype("float32"))).numpy() for c in crops], axis=0)
        correct += int((probabilities.argmax(axis=1) == labels.numpy()).sum())
    assert reported["num_examples"] == 32
    assert reported["top1_error"] == pytest.approx(1 - correct / 32)

    again = run_module("gmsop_keras.evaluate", path, *args)
    assert json.loads(again.stdout)["top1_error"] == reported["top1_error"]  # deterministic by --seed


@pytest.mark.parametrize(
    "args, message",
    [
        (["--test-time-crops", "2"], "together with --test-time-augment pad-crop"),
        (["--test-time-augment", "pad-crop", "--ten-crop"], "choose one"),
        (["--test-time-augment", "flip"], "invalid choice: 'flip'"),
    ],
)
def test_fresh_process_refuses_bad_test_time_options(tiny_synthetic, tmp_path, args, message):
    result = run_module("gmsop_keras.evaluate", tmp_path / "missing.keras", "--data-dir", tiny_synthetic, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
