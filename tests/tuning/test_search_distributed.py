"""python -m tuning.search --strategy mirrored on 2 logical CPU devices (a subprocess: the devices must be
configured before TensorFlow starts)."""

import csv
import os
import subprocess
import sys
import textwrap

from tuning.results import read_results

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIRRORED = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from gmsop_keras.cli.errors import run_cli
    from tuning.search import main
    sys.exit(run_cli(main, sys.argv[1:]))
    """
)


def run(args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", MIRRORED] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400)


def test_nk_study_under_mirrored_strategy_on_two_logical_devices(tiny_synthetic, tmp_path):
    directory = str(tmp_path / "nk")
    common = ["nk", "--dataset", tiny_synthetic, "--directory", directory, "--strategy", "mirrored",
              "--n", "4", "--k", "2", "--epochs", "1", "--steps-per-epoch", "2", "--lr", "0.02", "--verbose", "0"]
    bad = run(common + ["--batch-size", "15"])
    assert bad.returncode == 2 and "not divisible by the 2 replicas" in bad.stderr
    assert "Traceback" not in bad.stderr

    good = run(common + ["--batch-size", "16"])
    assert good.returncode == 0, good.stderr[-3000:]
    (row,) = read_results(os.path.join(directory, "results.csv"))
    assert (row["head"], row["status"], row["epochs"]) == ("gm-gap-4-2", "COMPLETED", "1")
    assert 0.0 <= float(row["val_top1_error"]) <= 1.0 and float(row["images_per_second"]) > 0
    usage = os.path.join(directory, "keras_tuner", f"trial_{row['trial_id']}", "component_usage.csv")
    with open(usage) as f:
        (counts,) = list(csv.DictReader(f))
    # Both replicas' samples are counted: 2 steps x 16 images (8 per replica) x K = 2.
    assert sum(int(counts[f"component_{i}"]) for i in range(1, 5)) == 2 * 16 * 2
