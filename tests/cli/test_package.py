"""The package as users meet it: `import gmsop_keras` registers the layers, the commands know they are
commands, names parse without Keras, and the CLI wrapper hides no bugs."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gmsop_keras.cli import startup
from gmsop_keras.training.errors import UsageError
from gmsop_keras.cli.errors import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code, cwd, env=None):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, **(env or {})))


def test_importing_the_package_alone_lets_keras_load_its_models(tmp_path):
    import keras

    from gmsop_keras import build_model

    model = build_model("resnet18", "gm-sop-4-2", num_classes=4, input_shape=(16, 16, 3), sop_channels=16)
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", keras.ops.convert_to_numpy(model(images, training=False)))
    # A user's script, outside the repository: only `import gmsop_keras`, then Keras' own loader.
    result = run_python("""
        import sys, numpy as np
        import gmsop_keras, keras
        assert keras.saving.get_registered_object("gmsop_keras>GatedMixture") is not None
        model = keras.saving.load_model("m.keras")
        got = keras.ops.convert_to_numpy(model(np.load("images.npy"), training=False))
        np.testing.assert_allclose(got, np.load("expected.npy"), rtol=1e-5, atol=1e-5)
        print("loaded", model.count_params())
    """, cwd=tmp_path, env={"PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loaded {model.count_params()}" in result.stdout


@pytest.mark.parametrize("orig_argv, argv0, expected", [
    (["python", "-m", "gmsop_keras.fit", "--epochs", "3"], "-m", True),
    (["python", "-X", "importtime", "-m", "pipelines.convert"], "-m", True),
    (["python", "-mtuning.search", "alpha"], "-m", True),
    (["python", "-m", "pytest", "-q"], "-m", False),
    (["python", "train.py"], "train.py", False),
    (["/venv/bin/python", "/venv/bin/gmsop-fit", "--head", "gap"], "/venv/bin/gmsop-fit", True),
    (["python", "-c", "import gmsop_keras"], "-c", False),
])
def test_a_command_is_recognised_from_its_command_line(monkeypatch, orig_argv, argv0, expected):
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(sys, "argv", [argv0])
    assert startup.started_as_command() is expected


def test_names_agree_with_the_builders():
    from gmsop_keras.models import names
    from gmsop_keras.models.backbones import BACKBONES
    from gmsop_keras.layers.gated_mixture import DISPATCHES
    from gmsop_keras.models.imagenet_resnets import IMAGENET_MODELS

    assert names.SMALL_IMAGE_BACKBONES == tuple(BACKBONES)
    assert names.IMAGENET_BACKBONES == tuple(IMAGENET_MODELS)
    # The command line's copy of the dispatches the layer accepts (the layer cannot import from models).
    assert names.DISPATCHES == DISPATCHES
    with pytest.raises(ValueError, match="Valid backbones: resnet18, resnet50, wrn-36-2, resnet50-imagenet"):
        names.check_backbone("resnet101")


def test_the_cli_wrapper_turns_only_the_projects_errors_into_one_line(capsys):
    assert run_cli(lambda argv: (_ for _ in ()).throw(UsageError("bad flag")), []) == 2
    assert capsys.readouterr().err == "error: bad flag\n"
    with pytest.raises(ValueError, match="a bug"):  # not the user's mistake: a traceback
        run_cli(lambda argv: (_ for _ in ()).throw(ValueError("a bug")), [])
    assert run_cli(lambda argv: (_ for _ in ()).throw(UsageError("bad flag")), ["--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: bad flag\n")


def test_best_model_is_replaced_only_by_a_strictly_better_epoch(tmp_path):
    import keras

    from gmsop_keras.training.callbacks import BestModel
    from gmsop_keras.training.run_directory import RunDirectory

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    run = RunDirectory(str(tmp_path))
    callback = BestModel(run)
    callback.set_model(model)
    callback.on_train_begin()
    saved = []
    for epoch, (value, loss) in enumerate([(0.5, 1.0), (0.5, 1.0), (0.4, 1.0), (0.9, float("nan")), (0.6, 1.0)]):
        callback.on_epoch_end(epoch, {"val_top1": value, "loss": loss, "val_loss": loss})
        saved.append(json.loads((tmp_path / "best.json").read_text())["epoch"])
    # Epoch 2 ties, epoch 3 is worse, epoch 4 diverged: only epochs 1 and 5 are saved.
    assert saved == [1, 1, 1, 1, 5]
    resumed = BestModel(run)
    resumed.on_train_begin()
    assert resumed.best == 0.6


def test_a_checkpoint_without_its_marker_is_ignored_and_removed(tmp_path):
    import keras

    from gmsop_keras.training.run_directory import RunDirectory

    def make_model():
        inputs = keras.Input((2,))
        model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones")(inputs))
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
        return model

    model = make_model()
    model.fit(np.ones((4, 2)), np.zeros((4, 1)), batch_size=4, verbose=0)  # one step: momentum is set
    run = RunDirectory(str(tmp_path))
    run.save_checkpoint(model, 1)
    run.save_checkpoint(model, 2)
    kernel, momentum = (keras.ops.convert_to_numpy(v).copy() for v in (model.layers[-1].kernel,
                                                                       model.optimizer.variables[-2]))
    model.layers[-1].kernel.assign(np.zeros((2, 1), "float32"))
    run.save_checkpoint(model, 3)
    assert run.checkpoints() == [3, 2]  # epoch 1 removed, the previous one kept
    os.remove(tmp_path / "backup" / "epoch-00003.json")  # as if killed before the marker
    fresh = make_model()  # a new process: optimizer not built yet
    assert run.restore(fresh) == 2
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fresh.layers[-1].kernel), kernel)
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fresh.optimizer.variables[-2]), momentum)
    assert np.abs(momentum).sum() > 0
    assert sorted(os.listdir(tmp_path / "backup")) == ["epoch-00002.json", "epoch-00002.weights.h5"]


def test_the_install_gives_console_scripts_and_an_importable_package(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    scripts = ["gmsop-fit", "gmsop-evaluate", "gmsop-export", "gmsop-predict", "gmsop-convert", "gmsop-tune"]
    missing = [s for s in scripts if not os.path.isfile(os.path.join(bin_dir, s))]
    assert not missing, f"{missing} not in {bin_dir}: install the package as the README says (pip install -e .)"
    # Outside the repository, without PYTHONPATH: the installed package is found.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", "import gmsop_keras, pipelines, tuning; print(gmsop_keras.__file__)"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith(os.path.join("gmsop_keras", "__init__.py"))
    result = subprocess.run([os.path.join(bin_dir, "gmsop-fit"), "--head", "gm-sop-4-8"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: Head 'gm-sop-4-8': K must be <= N")
    result = subprocess.run([os.path.join(bin_dir, "gmsop-convert"), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "imagenet64" in result.stdout
