"""The README's path, each step a separate `python -m` process in a fresh interpreter:
convert -> fit -> evaluate -> export -> predict -> load the SavedModel with TensorFlow alone."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def run(*args, cwd=ROOT):
    result = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{args[:3]}: {result.stderr[-3000:]}"
    for noise in ("oneDNN", "cuInit", "absl::InitializeLog"):
        assert noise not in result.stderr, result.stderr
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("head", ["gm-sop-4-2", "gap"])
def test_the_readme_chain_in_fresh_processes(head, tmp_path):
    data, model_dir, saved = tmp_path / "data", tmp_path / "run", tmp_path / "saved_models" / "tiny"
    run("-m", "pipelines.convert", "synthetic", "--output", data, "--num-classes", "4", "--train-per-class", "16",
        "--val-per-class", "8", "--image-size", "16", "--min-shards", "2", "--no-progress")
    out = run("-m", "gmsop_keras.fit", "--dataset", data, "--head", head, "--epochs", "1", "--batch-size", "16",
              "--lr", "0.01", "--model-dir", model_dir)
    assert out.splitlines()[-1].endswith(f"model dir {model_dir}")
    metrics = json.loads((model_dir / "metrics.json").read_text())

    evaluated = json.loads(run("-m", "gmsop_keras.evaluate", model_dir / "final.keras", "--data-dir", data))
    assert evaluated["num_examples"] == 32
    assert evaluated["top1_error"] == pytest.approx(metrics["top1_error"], abs=1e-6)

    version = run("-m", "gmsop_keras.export", model_dir, "--output", saved).strip().splitlines()[-1]
    assert version == str(saved / "1")

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)
    predicted = json.loads(run("-m", "gmsop_keras.predict", saved, *paths, "--json"))
    assert [p["path"] for p in predicted] == [str(p) for p in paths]

    # A process with TensorFlow alone: no PYTHONPATH, outside the repository, nothing of this package.
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        signature = tf.saved_model.load({str(saved / "1")!r}).signatures["serving_default"]
        outputs = signature(image=tf.constant(np.load("images.npy")))
        assert not any(name.split(".")[0] in ("gmsop_keras", "pipelines") for name in sys.modules)
        print(json.dumps({{k: v.numpy().tolist() for k, v in outputs.items()}}))
    """)
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    for row, prediction in zip(range(2), predicted):
        assert [p["class"] for p in prediction["predictions"]] == served["classes"][row]
        # Two float32 graphs (Keras' predict, the SavedModel): the same probabilities to round-off, which
        # for a probability near 1e-9 is relative 1e-5 or more; 1e-7 absolute still tells any real difference.
        np.testing.assert_allclose([p["score"] for p in prediction["predictions"]], served["scores"][row],
                                   rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.sum(served["probabilities"], axis=1), 1.0, rtol=1e-5)


def _code_blocks(text, heading):
    """The ```bash blocks of the README section under `heading`, as lists of lines."""
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n```", 1)[0].splitlines() for block in section.split("```bash\n")[1:]]


def test_the_readme_installs_and_tests_as_ci_does_and_says_where_the_synthetic_set_goes():
    from gmsop_keras.training.config import resolve
    from gmsop_keras.training.data import synthetic_dir

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    blocks = _code_blocks(readme, "## Set up")
    install, test = blocks[0], blocks[-1]  # the first block installs, the last runs the tests
    readme_pip = [step.split("pip install ", 1)[1].split() for step in install[0].split(" && ") if "pip install" in step]
    ci_pip = [[a for a in line.split("pip install ", 1)[1].split() if a != "--quiet"]
              for line in ci if "pip install" in line and "--upgrade pip" not in line]
    assert readme_pip == ci_pip == [["-r", "requirements.txt", "-e", "."]]  # one install, nothing beside it
    assert test == ["python -m pytest -q"] and ci[-1] == ".venv/bin/python -m pytest -q"
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
        pins = [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    assert "torch==2.13.0" in pins  # the converter's tests run for a README user, as in CI

    config = resolve({})
    cache = synthetic_dir(config).replace(os.path.expanduser("~"), "~", 1)
    assert f"`{cache}/`" in readme.replace("\n", "")
    assert f"`{config['model_dir']}/`" in readme and f"evaluate {config['model_dir']} " in readme
