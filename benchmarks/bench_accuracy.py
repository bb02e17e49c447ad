"""Validation error of GM-SOP against GAP on the synthetic set, same backbone and budget.

Converts a synthetic set (32x32, 10 classes, 400 training and 100 validation images per
class), then trains ResNet-18 with each head through `python -m gmsop_keras.fit` with the
same schedule, batch and learning rate, and prints the final top-1 / top-5 errors read from
each run's metrics.json. On the synthetic set only the co-occurrence of two pattern types
carries the label, so first-order pooling is expected to struggle.

    python benchmarks/bench_synthetic_accuracy.py --heads gap gm-sop-16-8 --stages 4 2
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=["gap", "gm-sop-16-8"])
    parser.add_argument("--stages", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--train-per-class", type=int, default=400)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=os.path.join("runs", "bench_synthetic_accuracy"))
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=ROOT)
    data = os.path.join(args.workdir, f"synthetic{args.image_size}")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        subprocess.run([sys.executable, "-m", "pipelines.convert", "synthetic", "--output", data,
                        "--image-size", str(args.image_size), "--train-per-class", str(args.train_per_class),
                        "--val-per-class", str(args.val_per_class), "--no-progress"], check=True, env=env, cwd=ROOT)
    rows = []
    for head in args.heads:
        model_dir = os.path.join(args.workdir, f"{head}-seed{args.seed}")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gmsop_keras.fit", "--dataset", data, "--head", head,
                        "--stages", *map(str, args.stages), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
                        "--seed", str(args.seed), "--model-dir", model_dir, "--verbose", "2"],
                       check=True, env=env, cwd=ROOT)
        with open(os.path.join(model_dir, "metrics.json")) as f:
            metrics = json.load(f)
        rows.append((head, metrics["top1_error"], metrics["top5_error"], time.perf_counter() - start))
    print(f"\nResNet-18, synthetic {args.image_size}x{args.image_size}, stages {args.stages}, lr {args.lr}, "
          f"batch {args.batch_size}, seed {args.seed}")
    print("| head | top-1 error | top-5 error | wall time |\n| --- | ---: | ---: | ---: |")
    for head, top1, top5, seconds in rows:
        print(f"| `{head}` | {100 * top1:.1f}% | {100 * top5:.1f}% | {seconds / 60:.1f} min |")


if __name__ == "__main__":
    main()
