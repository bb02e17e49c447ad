"""How fast the commands answer a mistake, and what a checkpoint costs.

    python benchmarks/bench_cli.py [--rounds 5]

Times, as separate processes, interleaved over rounds (medians):
- `python -m gmsop_keras.fit --head vlad` (a typo: answered before TensorFlow loads),
- `python -m gmsop_keras.fit --epochs 0`,
- `python -c "import tensorflow"` (what every answer cost when the commands loaded TensorFlow first),
- a re-run of a finished run (answered from metrics.json).
And, in this process, the time of one epoch-end checkpoint of GM-SOP-16-8 on ResNet-18 (weights and
optimizer state, marker last) against Keras' `BackupAndRestore` writing the same state.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def timed(args, env):
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=ROOT)
    work = tempfile.mkdtemp()
    data, run = os.path.join(work, "data"), os.path.join(work, "run")
    tiny = ["--dataset", data, "--head", "gap", "--epochs", "1", "--batch-size", "16", "--model-dir", run]
    subprocess.run([sys.executable, "-m", "pipelines.convert", "synthetic", "--output", data, "--num-classes", "4",
                    "--train-per-class", "16", "--val-per-class", "8", "--image-size", "16", "--no-progress"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "gmsop_keras.fit", *tiny], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    cases = {
        "fit --head vlad (typo)": ["-m", "gmsop_keras.fit", "--head", "vlad"],
        "fit --epochs 0": ["-m", "gmsop_keras.fit", "--epochs", "0"],
        "re-run of a finished run": ["-m", "gmsop_keras.fit", *tiny],
        "import tensorflow alone": ["-c", "import tensorflow"],
    }
    times = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            times[name].append(timed(case, env))
    tensorflow = statistics.median(times["import tensorflow alone"])
    print(f"| command | median s ({args.rounds} rounds) | / import tensorflow |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {statistics.median(values) / tensorflow:.2f} |")
    checkpoint_costs(args.rounds)


def checkpoint_costs(rounds):
    import keras
    import numpy as np

    from gmsop_keras.models import build_model
    from gmsop_keras.training.run_directory import RunDirectory

    model = build_model("resnet18", "gm-sop-16-8", num_classes=1000, input_shape=(64, 64, 3))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(np.zeros((2, 64, 64, 3), "float32"), np.zeros((2,), "int32"))
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as folder:
        run = RunDirectory(folder)
        backup = keras.callbacks.BackupAndRestore(os.path.join(folder, "keras_backup"))
        backup.set_model(model)
        for epoch in range(1, rounds + 1):
            start = time.perf_counter()
            run.save_checkpoint(model, epoch)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            backup.on_epoch_end(epoch - 1)
            theirs.append(time.perf_counter() - start)
        size = os.path.getsize(os.path.join(folder, "backup", f"epoch-{rounds:05d}.weights.h5"))
    print(f"\ncheckpoint of GM-SOP-16-8 + ResNet-18 ({size / 2**20:.0f} MiB): "
          f"{statistics.median(ours):.3f} s, Keras BackupAndRestore {statistics.median(theirs):.3f} s "
          f"(ratio {statistics.median(ours) / statistics.median(theirs):.2f})")


if __name__ == "__main__":
    main()
