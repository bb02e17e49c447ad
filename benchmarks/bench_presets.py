"""GM-SOP-16-8 on the synthetic set with `--preset paper` and `--preset default`, side by side.

Trains ResNet-18 + GM-SOP-16-8 through `python -m gmsop_keras.fit` once per preset, with the
same seed, data and epochs (the synthetic recipe's stages scaled to `--epochs`), and prints the
final top-1 / top-5 errors and loss from each run's metrics.json, the switches each preset set
(from its config.yaml) and the wall time. Short runs: a few epochs on a CPU tell whether a
preset trains at all and how fast it starts, not which one ends better; say so when quoting them.

    python benchmarks/bench_presets.py                       # paper and default, 3 epochs
    python benchmarks/bench_presets.py --presets official paper default --epochs 6
"""

import argparse
import json
import os
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOWN = ("weight_decay", "weight_decay_mode", "decay_norms_and_biases", "num_iterations", "gate_input_norm",
         "gate_init", "representation_gamma", "bn_momentum", "stages", "lr")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "default"], choices=("default", "paper", "official"))
    parser.add_argument("--head", default="gm-sop-16-8")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, help="fewer steps per epoch (a smoke run)")
    parser.add_argument("--validation-steps", type=int)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--train-per-class", type=int, default=400)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=os.path.join("runs", "bench_presets"))
    args = parser.parse_args(argv)

    env = dict(os.environ, PYTHONPATH=ROOT)
    data = os.path.abspath(os.path.join(args.workdir, f"synthetic{args.image_size}"))
    if not os.path.exists(os.path.join(data, "manifest.json")):
        subprocess.run([sys.executable, "-m", "pipelines.convert", "synthetic", "--output", data,
                        "--image-size", str(args.image_size), "--train-per-class", str(args.train_per_class),
                        "--val-per-class", str(args.val_per_class), "--no-progress"], check=True, env=env, cwd=ROOT)
    extra = []
    for flag in ("steps_per_epoch", "validation_steps"):
        if getattr(args, flag):
            extra += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    rows = []
    for preset in args.presets:
        model_dir = os.path.abspath(os.path.join(args.workdir, f"{args.head}-{preset}-e{args.epochs}-seed{args.seed}"))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gmsop_keras.fit", "--dataset", data, "--head", args.head,
                        "--preset", preset, "--epochs", str(args.epochs), "--seed", str(args.seed),
                        "--model-dir", model_dir, "--verbose", "2", *extra], check=True, env=env, cwd=ROOT)
        seconds = time.perf_counter() - start
        with open(os.path.join(model_dir, "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(model_dir, "config.yaml")) as f:
            config = yaml.safe_load(f)
        rows.append((preset, metrics, config, seconds))
    print(f"\nResNet-18 + {args.head}, synthetic {args.image_size}x{args.image_size}, {args.epochs} epochs, "
          f"seed {args.seed}{', ' + ' '.join(extra) if extra else ''}")
    print(format_table(rows))


def format_table(rows):
    """A markdown table: one column per preset, one row per result and switch."""
    lines = ["| | " + " | ".join(f"`{preset}`" for preset, *_ in rows) + " |",
             "| --- |" + " ---: |" * len(rows)]
    lines.append("| top-1 error | " + " | ".join(f"{100 * m['top1_error']:.1f}%" for _, m, _, _ in rows) + " |")
    lines.append("| top-5 error | " + " | ".join(f"{100 * m['top5_error']:.1f}%" for _, m, _, _ in rows) + " |")
    lines.append("| validation loss | " + " | ".join(f"{m['loss']:.3f}" for _, m, _, _ in rows) + " |")
    for key in SHOWN:
        lines.append(f"| `{key}` | " + " | ".join(_shown(c.get(key)) for _, _, c, _ in rows) + " |")
    lines.append("| wall time | " + " | ".join(f"{s / 60:.1f} min" for *_, s in rows) + " |")
    return "\n".join(lines)


def _shown(value):
    if value is None:
        return "model default"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
