"""export: the SavedModel serves what the Keras model computes, loads without this package, versions."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from gmsop_keras import build_model
from gmsop_keras.training.errors import UsageError
from gmsop_keras.cli.errors import run_cli
from gmsop_keras.export import main as export_main
from gmsop_keras.serving.export import export_model, next_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
CLASS_NAMES = ["apple", "bear", "cloud", "dolphin"]
# Stored 20x20, model input 16x16: like Places365's 100x100 images and 96x96 crops.
MANIFEST = {"dataset": "tiny", "image_shape": [20, 20, 3], "num_classes": 4, "class_names": CLASS_NAMES}
OUTPUTS = ("logits", "probabilities", "classes", "scores")


@pytest.fixture(scope="module")
def model():
    """A second-order mixture (gate noise on when training), trained one step so BatchNorm has statistics."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_model("resnet18", "gm-sop-4-2", num_classes=4, input_shape=(16, 16, 3), sop_channels=16)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.fit(rng.integers(0, 256, (8, 16, 16, 3)).astype("float32"), np.arange(8) % 4, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (6, 16, 16, 3)).astype("uint8")


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_model(model, str(tmp_path_factory.mktemp("saved_models") / "tiny"), manifest=MANIFEST)


def serve(path, images):
    signature = tf.saved_model.load(path).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(image=tf.constant(images)).items()}


def test_served_probabilities_equal_the_keras_model(model, exported, images):
    import keras

    outputs = serve(exported, images)
    assert sorted(outputs) == sorted(OUTPUTS)
    logits = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"], keras.ops.softmax(logits), atol=1e-5)
    # Top-5 of 4 classes: all of them, best first, with their probabilities.
    assert outputs["classes"].dtype == np.int32 and outputs["classes"].shape == (6, 4)
    np.testing.assert_array_equal(outputs["classes"], np.argsort(-outputs["probabilities"], axis=1, kind="stable"))
    np.testing.assert_array_equal(outputs["scores"], np.take_along_axis(outputs["probabilities"], outputs["classes"], 1))


def test_inference_is_deterministic_and_in_inference_mode(model, exported, images):
    first, second = serve(exported, images), serve(exported, images)
    np.testing.assert_array_equal(first["logits"], second["logits"])
    # Each image alone gives what it gives in a batch: BatchNorm uses its moving statistics.
    alone = np.concatenate([serve(exported, images[i:i + 1])["logits"] for i in range(2)])
    np.testing.assert_allclose(alone, first["logits"][:2], atol=1e-5)
    training = model(images.astype("float32"), training=True)
    assert np.abs(np.asarray(training) - first["logits"]).max() > 1e-3


def test_signature_and_assets(exported):
    assert os.path.basename(exported) == "1"
    signature = tf.saved_model.load(exported).signatures["serving_default"]
    spec = signature.structured_input_signature[1]
    assert list(spec) == ["image"] and spec["image"].dtype == tf.uint8
    assert spec["image"].shape.as_list() == [None, 16, 16, 3]
    with open(os.path.join(exported, "assets", "class_names.txt")) as f:
        assert f.read().splitlines() == CLASS_NAMES
    with open(os.path.join(exported, "assets", "preprocessing.json")) as f:
        preprocessing = json.load(f)
    assert preprocessing["resize_to"] == [20, 20] and preprocessing["crop_to"] == [16, 16]


def test_loads_in_a_fresh_interpreter_with_only_tensorflow(exported, images, tmp_path):
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import tensorflow as tf
        serving = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        images = np.array(json.loads(sys.argv[2]), dtype=np.uint8)
        outputs = serving(image=tf.constant(images))
        assert not any(name.startswith("gmsop_keras") for name in sys.modules), "gmsop_keras was imported"
        print(json.dumps(outputs["probabilities"].numpy().tolist()))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script, os.path.abspath(exported), json.dumps(images.tolist())],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(served, serve(exported, images)["probabilities"], atol=1e-6)


SHAPE_PROBE = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    answers = {}
    for path in sys.argv[1:]:
        serving = tf.saved_model.load(path).signatures["serving_default"]
        for shape in ([2, 32, 32, 3], [2, 16, 16, 1], [16, 16, 3], [0, 16, 16, 3]):
            key = path + " " + "x".join(map(str, shape))
            try:
                answers[key] = {k: v.shape.as_list() for k, v in serving(image=tf.zeros(shape, tf.uint8)).items()}
            except tf.errors.InvalidArgumentError as error:
                answers[key] = error.message
    print(json.dumps(answers))
    """
)


@pytest.fixture(scope="module")
def exported_gap(tmp_path_factory):
    """A plain global-average-pooling model: without a check it answers images of any size."""
    model = build_model("resnet18", "gap", num_classes=4, input_shape=(16, 16, 3))
    return export_model(model, str(tmp_path_factory.mktemp("saved_models") / "gap"), manifest=MANIFEST)


def test_served_signature_refuses_other_shapes_and_answers_empty_batches(exported, exported_gap, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    paths = [os.path.abspath(exported), os.path.abspath(exported_gap)]
    result = subprocess.run([sys.executable, "-c", SHAPE_PROBE, *paths], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    expected = "the model takes uint8 images of shape [batch, 16, 16, 3]; resize or crop the images to 16x16 RGB"
    for path in paths:
        for shape, printed in (("2x32x32x3", "[2 32 32 3]"), ("2x16x16x1", "[2 16 16 1]"), ("16x16x3", "[16 16 3]")):
            answer = answers[f"{path} {shape}"]
            assert isinstance(answer, str) and expected in answer and f"Received shape:] {printed}" in answer
        assert answers[f"{path} 0x16x16x3"] == {"logits": [0, 4], "probabilities": [0, 4], "classes": [0, 4],
                                                 "scores": [0, 4]}


def test_cli_exports_a_gm_sop_file_in_a_fresh_process(model, tmp_path):
    from pipelines.manifest import write_manifest

    model.save(str(tmp_path / "gm.keras"))
    for name, manifest in (("data", MANIFEST), ("six", dict(MANIFEST, num_classes=6, class_names=None))):
        (tmp_path / name).mkdir()
        write_manifest(str(tmp_path / name), dict(manifest, splits={}))
    env = dict(os.environ, PYTHONPATH=ROOT)

    def export(data_dir):
        return subprocess.run([sys.executable, "-m", "gmsop_keras.export", str(tmp_path / "gm.keras"), "--output",
                               str(tmp_path / "saved"), "--data-dir", str(tmp_path / data_dir)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    result = export("data")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(tmp_path / "saved" / "1")
    served = serve(str(tmp_path / "saved" / "1"), np.full((2, 16, 16, 3), 7, np.uint8))["logits"]
    np.testing.assert_allclose(served, model.predict(np.full((2, 16, 16, 3), 7.0), verbose=0), atol=1e-5)
    result = export("six")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: model {tmp_path / 'gm.keras'} predicts 4 classes, but {tmp_path / 'six'} has 6; "
                      "pass --data-dir with the dataset the model was trained on"], result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "saved")) == ["1"]


def test_tfsm_layer_serves_the_signature(exported, images):
    import keras

    layer = keras.layers.TFSMLayer(exported, call_endpoint="serving_default")
    outputs = layer(images)
    np.testing.assert_allclose(outputs["probabilities"], serve(exported, images)["probabilities"], atol=1e-6)


def test_saved_model_cli_show_and_run(exported):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    show = subprocess.run([SAVED_MODEL_CLI, "show", "--dir", exported, "--tag_set", "serve",
                           "--signature_def", "serving_default"], capture_output=True, text=True, env=env, timeout=120)
    assert show.returncode == 0, show.stderr[-3000:]
    assert "inputs['image']" in show.stdout and "DT_UINT8" in show.stdout and "(-1, 16, 16, 3)" in show.stdout
    for name in OUTPUTS:
        assert f"outputs['{name}']" in show.stdout
    run = subprocess.run([SAVED_MODEL_CLI, "run", "--dir", exported, "--tag_set", "serve",
                          "--signature_def", "serving_default",
                          # --input_exprs takes Python literals only (numpy calls need --inputs with a .npy file).
                          "--input_exprs", f"image={np.full((2, 16, 16, 3), 128).tolist()}"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in OUTPUTS:
        assert f"Result for output key {name}:" in run.stdout
    expected = serve(exported, np.full((2, 16, 16, 3), 128, np.uint8))["classes"]
    assert f"Result for output key classes:\n{expected}" in run.stdout


def small_model(num_classes=4):
    """Any classifier of images will do where only the files matter: this one exports in a second."""
    import keras

    images = keras.Input((16, 16, 3), name="image")
    return keras.Model(images, keras.layers.Dense(num_classes)(keras.layers.GlobalAveragePooling2D()(images)))


def test_exporting_twice_gives_versions_1_and_2_and_never_overwrites(tmp_path):
    model = small_model()
    base = str(tmp_path / "twice")
    assert export_model(model, base) == os.path.join(base, "1")
    assert export_model(model, base) == os.path.join(base, "2")
    assert next_version(base) == 3
    with pytest.raises(UsageError, match=r"twice/2 exists"):
        export_model(model, base, version=2)
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temporary folder left behind
    assert not os.path.exists(os.path.join(base, "1", "assets", "class_names.txt"))  # no names known
    with pytest.raises(ValueError, match="3 class names for a model with 4 classes"):
        export_model(model, base, class_names=["a", "b", "c"])


def test_cli_exports_a_model_dir_with_the_manifest_named_in_its_config(model, tmp_path, capsys):
    import yaml

    from pipelines.manifest import write_manifest

    data_dir, model_dir = tmp_path / "data", tmp_path / "run"
    data_dir.mkdir()
    model_dir.mkdir()
    write_manifest(str(data_dir), dict(MANIFEST, splits={}))
    (model_dir / "config.yaml").write_text(yaml.safe_dump({"dataset": "tiny", "data_dir": str(data_dir)}))
    model.save(str(model_dir / "final.keras"))
    output = str(tmp_path / "saved" / "tiny")
    assert run_cli(export_main, [str(model_dir), "--output", output, "--version", "7"]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(output, "7")
    with open(os.path.join(output, "7", "assets", "class_names.txt")) as f:
        assert f.read().splitlines() == CLASS_NAMES

    assert run_cli(export_main, [str(model_dir), "--output", output, "--version", "7"]) == 2
    assert "7 exists" in capsys.readouterr().err
    assert run_cli(export_main, [str(tmp_path / "nothing"), "--output", output]) == 2
    assert capsys.readouterr().err.startswith("error: model")


MIRRORED_FIT = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from gmsop_keras.cli.errors import run_cli
    from gmsop_keras.fit import main
    sys.exit(run_cli(main, sys.argv[1:]))
    """
)


def test_fit_under_mirrored_strategy_exports(tiny_synthetic, tmp_path, images):
    import keras

    import gmsop_keras  # noqa: F401  (registers the layers for loading)

    model_dir = str(tmp_path / "mirrored")
    args = ["--dataset", tiny_synthetic, "--backbone", "resnet18", "--head", "gm-gap-4-2", "--strategy", "mirrored",
            "--batch-size", "16", "--epochs", "1", "--steps-per-epoch", "2", "--validation-steps", "1",
            "--seed", "0", "--verbose", "0", "--model-dir", model_dir, "--export", "tiny"]
    result = subprocess.run([sys.executable, "-c", MIRRORED_FIT] + args, cwd=tmp_path, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    exported = os.path.join("saved_models", "tiny", "1")
    assert f"exported {exported}" in result.stdout
    # MirroredStrategy keeps BatchNorm statistics per replica; the first replica's are saved and exported.
    saved = keras.saving.load_model(os.path.join(model_dir, "final.keras"))
    outputs = serve(str(tmp_path / exported), images)
    np.testing.assert_allclose(outputs["probabilities"], keras.ops.softmax(saved(images.astype("float32"))), atol=1e-5)
    with open(tmp_path / exported / "assets" / "class_names.txt") as f:
        assert len(f.read().splitlines()) == 4
