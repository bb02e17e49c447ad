"""The argv sniff (`gmsop_keras.cli.startup.started_as_command`), both ways, in fresh processes.

A user's script that imports `gmsop_keras` gets every layer registered, so Keras' own loader
reads the package's models. A command (`python -m gmsop_keras.fit`, ...) does not: it checks its
arguments first, and a mistake answers before TensorFlow (or Keras) has been imported at all.
`-X importtime` makes Python list every module a process imports, so the test sees exactly what
was loaded before the error line.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "v0.2.0", "every_layer.keras")


def imported_modules(stderr):
    """The modules `-X importtime` reported (the last column of its lines)."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_a_users_script_gets_the_layers_registered_by_the_import(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import keras
        import gmsop_keras

        assert "gmsop_keras.layers" in sys.modules and "gmsop_keras.training.optimizers" in sys.modules
        assert keras.saving.get_registered_object("gmsop_keras>CoupledWeightDecaySGD") is not None
        model = keras.saving.load_model({FIXTURE!r})
        print(type(model.get_layer("gm_sop")).__name__, gmsop_keras.build_model.__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["GatedMixture", "build_model"]


@pytest.mark.parametrize("command, message", [
    (["-m", "gmsop_keras.fit", "--head", "gm-sop-4-8"], "error: Head 'gm-sop-4-8': K must be <= N"),
    (["-m", "gmsop_keras.fit", "--backbone", "resnet101"], "error: Unknown backbone"),
    (["-m", "gmsop_keras.fit", "--epochs", "0"], "error: "),
    (["-m", "gmsop_keras.evaluate", "no/such/model", "--data-dir", "no/such/data"], "error: model no/such/model not found"),
    (["-m", "gmsop_keras.export", "no/such/model"], "error: model no/such/model not found"),
    (["-m", "gmsop_keras.predict", "no/such/export", "x.png", "--batch-size", "0"], "error: --batch-size"),
    (["-m", "gmsop_keras.predict", "no/such/model", "x.png"], "error: model no/such/model not found; pass a run"),
    (["-m", "gmsop_keras.convert_torch", "x.pth", "--model", "resnet101", "--output", "m.keras"], "error: Unknown model"),
    (["-m", "gmsop_keras.convert_matconvnet", "x.mat", "--model", "resnet18", "--head", "gm-gap-16-8", "--output",
      "m.keras"], "error: model file not found: x.mat"),
    (["-m", "tuning.search", "nk", "--backbone", "resnet101"], "error: "),
    (["-m", "pipelines.convert", "folder", "--source", "no/such/folder", "--size", "16", "--output", "out"],
     "error: no/such/folder: no such folder"),
])
def test_a_commands_mistake_answers_before_tensorflow_is_imported(command, message, tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith(message), errors
    loaded = imported_modules(result.stderr)
    assert command[1].split(".")[0] in loaded  # the report is real
    assert not {"tensorflow", "keras", "jax", "torch"} & loaded, sorted({"tensorflow", "keras", "jax", "torch"} & loaded)
    assert "gmsop_keras.layers" not in loaded
