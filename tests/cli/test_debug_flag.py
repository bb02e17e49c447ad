"""Every command answers a user's mistake in one `error:` line without a traceback, and with
`--debug` shows the full traceback above the same line: each case a fresh `python -m` process."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cases(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    notes = tmp_path / "notes.mat"
    notes.write_text("not a MATLAB file\n")
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    from PIL import Image
    import numpy as np

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photos" / "cat" / "a.png")
    (tmp_path / "photos" / "dog").mkdir()
    return {
        "convert_torch": ["gmsop_keras.convert_torch", empty, "--model", "resnet50-imagenet", "--output",
                          tmp_path / "m.keras"],
        "convert_matconvnet": ["gmsop_keras.convert_matconvnet", notes, "--model", "resnet18", "--head",
                               "gm-gap-16-8", "--output", tmp_path / "m.keras"],
        "predict": ["gmsop_keras.predict", tmp_path / "no-such-run", tmp_path / "a.png"],
        "evaluate": ["gmsop_keras.evaluate", tmp_path / "no-such-run"],
        "pipelines.convert": ["pipelines.convert", "folder", "--source", tmp_path / "photos", "--size", "8",
                              "--output", tmp_path / "out", "--no-progress"],
    }


@pytest.mark.parametrize("command", ["convert_torch", "convert_matconvnet", "predict", "evaluate",
                                     "pipelines.convert"])
def test_one_error_line_and_the_traceback_only_with_debug(command, tmp_path):
    module, *args = _cases(tmp_path)[command]
    env = dict(os.environ, PYTHONPATH=ROOT)
    plain = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    lines = plain.stderr.strip().splitlines()
    assert plain.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), plain.stderr[-2000:]
    debug = subprocess.run([sys.executable, "-m", module, *map(str, args), "--debug"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == lines[0]  # the same line, after the traceback
