"""predict: image files of any size -> the dataset's preprocessing -> the SavedModel's top-5, bad files reported."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from gmsop_keras import build_model
from gmsop_keras.cli.errors import run_cli
from gmsop_keras.serving.export import export_model
from gmsop_keras.predict import main as predict_main
from gmsop_keras.serving.paths import resolve_saved_model
from gmsop_keras.serving.predictor import Predictor, prepare_image

CLASS_NAMES = ["apple", "bear", "cloud", "dolphin", "eagle", "fox"]
# Stored 20x20, model input 16x16: like Places365's 100x100 images and 96x96 crops.
MANIFEST = {"dataset": "tiny", "image_shape": [20, 20, 3], "num_classes": 6, "class_names": CLASS_NAMES}


@pytest.fixture(scope="module")
def model():
    return build_model("resnet18", "gm-gap-4-2", num_classes=6, input_shape=(16, 16, 3))


@pytest.fixture(scope="module")
def saved_model(model, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("saved_models") / "tiny")
    export_model(model, base, manifest=MANIFEST)
    return base


@pytest.fixture
def image_files(tmp_path):
    """Three PNGs of different sizes and modes (RGB, grey, RGBA) and a corrupt one."""
    rng = np.random.default_rng(0)
    paths = [str(tmp_path / name) for name in ("rgb.png", "grey.png", "rgba.png", "corrupt.png")]
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), mode="L").save(paths[1])
    Image.fromarray(rng.integers(0, 256, (9, 13, 4), dtype=np.uint8), mode="RGBA").save(paths[2])
    with open(paths[3], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is no image")
    return paths


def test_prepare_resizes_to_the_stored_size_then_centre_crops():
    from pipelines.augment import center_crop
    from pipelines.resize import resize_images

    image = np.random.default_rng(0).integers(0, 256, (57, 75, 3), dtype=np.uint8)
    prepared = prepare_image(image, [20, 20], [16, 16])
    assert prepared.shape == (16, 16, 3) and prepared.dtype == np.uint8
    expected = center_crop(resize_images(image[None], (20, 20)), 16)[0]
    np.testing.assert_array_equal(prepared, np.asarray(expected))
    assert prepare_image(image, [16, 16]).shape == (16, 16, 3)


def test_cli_predicts_every_readable_image_and_names_the_bad_one(saved_model, image_files, capsys):
    assert run_cli(predict_main, [saved_model] + image_files) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"error: {image_files[3]}: unreadable image (cannot identify image file '{image_files[3]}')"
    ]
    lines = captured.out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == image_files[:3]
    for line in lines:
        predictions = line.split(": ", 1)[1].split(", ")
        assert len(predictions) == 5 and all(p.split(" (")[0] in CLASS_NAMES for p in predictions)


def test_json_output_matches_the_keras_model(model, saved_model, image_files, capsys):
    import keras

    from pipelines.folder import load_image

    assert run_cli(predict_main, [saved_model, "--json", "--batch-size", "2"] + image_files[:3]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in results] == image_files[:3]
    batch = np.stack([prepare_image(load_image(path), [20, 20], [16, 16]) for path in image_files[:3]])
    probabilities = np.asarray(keras.ops.softmax(model.predict(batch.astype("float32"), verbose=0)))
    for result, expected in zip(results, probabilities):
        classes = [p["class"] for p in result["predictions"]]
        assert classes == list(np.argsort(-expected)[:5])
        assert [p["name"] for p in result["predictions"]] == [CLASS_NAMES[c] for c in classes]
        np.testing.assert_allclose([p["score"] for p in result["predictions"]], expected[classes], atol=1e-5)


def test_json_reports_the_bad_file_in_place(saved_model, image_files, capsys):
    assert run_cli(predict_main, [saved_model, "--json", image_files[3], image_files[0]]) == 1
    results = json.loads(capsys.readouterr().out)
    assert "unreadable image" in results[0]["error"] and len(results[1]["predictions"]) == 5


def test_model_folder_means_its_newest_version(model, saved_model, tmp_path):
    assert resolve_saved_model(saved_model) == os.path.join(saved_model, "1")
    base = str(tmp_path / "versions")
    export_model(model, base, version=10)
    shutil.copytree(os.path.join(saved_model, "1"), os.path.join(base, "2"))  # newest: 10, not "2"
    predictor = Predictor(base)
    assert predictor.path == os.path.join(base, "10")
    assert predictor.class_names is None and predictor.preprocessing["crop_to"] is None
    top = predictor.predict([np.zeros((3, 5, 3), np.uint8)])[0]
    assert [name for _, name, _ in top] == [None] * 5


def test_missing_saved_model_is_a_usage_error(tmp_path, image_files, capsys):
    assert run_cli(predict_main, [str(tmp_path / "nowhere"), image_files[0]]) == 2
    assert capsys.readouterr().err == (f"error: model {tmp_path / 'nowhere'} not found; pass a run directory or "
                                       ".keras file of python -m gmsop_keras.fit, or an export of python -m "
                                       "gmsop_keras.export\n")
