"""Validation error of heads and presets over several seeds: one row per run, then mean and spread.

Trains ResNet-18 through `python -m gmsop_keras.fit` once per (head, preset, seed), every run
with the same data, step schedule, batch and learning rate, and prints a markdown table of the
final top-1 / top-5 errors (each run's metrics.json) followed by one row per configuration with
the mean, the standard deviation (n - 1) and the range over its seeds. A run that diverges
(fit's exit status 3) is a row saying so and counts in no mean; any other failure stops the
benchmark. Finished runs in --workdir are read back, not trained again, so an interrupted
benchmark continues where it stopped.

    python benchmarks/bench_accuracy.py --dataset synthetic --heads gm-sop-16-8 gap sr-sop --seeds 0 1 2
    python benchmarks/bench_accuracy.py --dataset digits --presets default paper official --seeds 0 1 2

Datasets: `synthetic` is the built-in set exactly as `python -m gmsop_keras.fit` trains on it
(its recipe: stages 4 2, lr 0.05, batch 64); `digits` is scikit-learn's 1,797 real 8x8
handwritten digit scans (benchmarks/real_sets.py), converted at 16x16 with half of each class
held out by seed 0 (899 training, 898 validation images), trained without augmentation,
stages 6 2, lr 0.05, batch 64; any other value is a folder converted by `python -m pipelines.convert`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Per dataset: the schedule and flags every run gets unless given (synthetic: its recipe's).
SCHEDULES = {
    "synthetic": dict(stages=[4, 2], lr=0.05, batch_size=64, augment=None),
    "digits": dict(stages=[6, 2], lr=0.05, batch_size=64, augment="none"),
}
FOLDER_SCHEDULE = dict(stages=[20, 5, 5], lr=0.05, batch_size=128, augment=None)
DIVERGED = 3  # fit's exit status when the loss became NaN or infinite (gmsop_keras.cli.errors)
COMPARED = ("stages", "lr", "batch_size", "augment", "steps_per_epoch", "validation_steps", "deterministic")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic", help="synthetic | digits | a converted folder")
    parser.add_argument("--heads", nargs="+", default=["gm-sop-16-8"])
    parser.add_argument("--presets", nargs="+", default=["default"], choices=("default", "paper", "official"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stages", type=int, nargs="+", help="step schedule (default: the dataset's, above)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--augment")
    parser.add_argument("--steps-per-epoch", type=int, help="fewer steps per epoch (a smoke run)")
    parser.add_argument("--validation-steps", type=int)
    parser.add_argument("--deterministic", action="store_true", help="pass --deterministic to every run")
    parser.add_argument("--workdir", default=os.path.join("runs", "bench_accuracy"))
    args = parser.parse_args(argv)

    name = args.dataset if args.dataset in SCHEDULES else os.path.basename(os.path.normpath(args.dataset))
    settings = dict(SCHEDULES.get(args.dataset, FOLDER_SCHEDULE))
    for key in ("stages", "lr", "batch_size", "augment", "steps_per_epoch", "validation_steps"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings["deterministic"] = args.deterministic
    data = dataset_path(args.dataset, args.workdir)
    rows = []
    for head in args.heads:
        for preset in args.presets:
            for seed in args.seeds:
                model_dir = os.path.join(args.workdir, name, f"{head}-{preset}-seed{seed}")
                rows.append(dict(head=head, preset=preset, seed=seed,
                                 **train(data, head, preset, seed, model_dir, settings)))
    print(f"\nResNet-18, {describe(args.dataset)}, stages {' '.join(map(str, settings['stages']))}, "
          f"lr {settings['lr']:g}, batch {settings['batch_size']}, augment {settings['augment'] or 'auto'}"
          f"{', deterministic' if args.deterministic else ''}")
    print(format_table(rows))


def dataset_path(dataset, workdir):
    """The `--dataset` value of the runs: `synthetic` itself, the digits converted once into `workdir`, or the folder."""
    if dataset != "digits":
        return dataset
    env = dict(os.environ, PYTHONPATH=ROOT)
    images, converted = os.path.join(workdir, "data", "digits"), os.path.join(workdir, "data", "digits16")
    if not os.path.exists(os.path.join(converted, "manifest.json")):
        if not os.path.isdir(images):
            subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "real_sets.py"), "digits",
                            "--output", images], check=True, env=env, cwd=ROOT)
        subprocess.run([sys.executable, "-m", "pipelines.convert", "folder", "--source", images, "--output",
                        converted, "--size", "16", "--validation-fraction", "0.5", "--seed", "0", "--no-progress"],
                       check=True, env=env, cwd=ROOT)
    return converted


def describe(dataset):
    return {"synthetic": "the built-in synthetic set (32x32, 10 classes, 4,000 training / 1,000 validation images)",
            "digits": "scikit-learn's digits (real 8x8 scans at 16x16, 10 classes, 899 training / 898 validation)"
            }.get(dataset, dataset)


def train(data, head, preset, seed, model_dir, settings):
    """Trains one run (or reads back a finished one); returns its errors, or `diverged`."""
    check_workdir(model_dir, settings)
    flags = ["--dataset", data, "--head", head, "--preset", preset, "--seed", str(seed), "--model-dir", model_dir,
             "--stages", *map(str, settings["stages"]), "--lr", str(settings["lr"]),
             "--batch-size", str(settings["batch_size"]), "--verbose", "2"]
    for key in ("augment", "steps_per_epoch", "validation_steps"):
        if settings.get(key):
            flags += ["--" + key.replace("_", "-"), str(settings[key])]
    if settings["deterministic"]:
        flags.append("--deterministic")
    metrics_file = os.path.join(model_dir, "metrics.json")
    seconds = None
    if not os.path.exists(metrics_file):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "gmsop_keras.fit", *flags],
                              env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode == DIVERGED:
            return dict(diverged=True, seconds=seconds)
        if done.returncode != 0:
            sys.exit(f"error: python -m gmsop_keras.fit {' '.join(flags)} failed (exit status {done.returncode}); "
                     "see its message above")
    with open(metrics_file) as f:
        metrics = json.load(f)
    return dict(top1=metrics["top1_error"], top5=metrics["top5_error"], seconds=seconds)


def check_workdir(model_dir, settings):
    """Refuses a model dir trained with another schedule (fit would resume it with the new one)."""
    path = os.path.join(model_dir, "config.yaml")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = yaml.safe_load(f) or {}
    different = [k for k in COMPARED if _normal(saved.get(k)) != _normal(settings.get(k))]
    if different:
        sys.exit(f"error: {model_dir} was trained with other settings ({', '.join(different)}); "
                 "give another --workdir")


def _normal(value):
    return None if value in (None, False, "auto") else value


def summary(values):
    """(mean, std with n - 1 or None for one value, min, max) of `values`."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std, min(values), max(values)


def format_table(rows):
    """One markdown row per run, then one per (head, preset): mean ± std [min, max] over its seeds."""
    lines = ["| head | preset | seed | top-1 error | top-5 error | train time |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        if row.get("diverged"):
            lines.append(f"| `{row['head']}` | {row['preset']} | {row['seed']} | diverged | | |")
            continue
        time_ = f"{row['seconds'] / 60:.1f} min" if row.get("seconds") else "(earlier run)"
        lines.append(f"| `{row['head']}` | {row['preset']} | {row['seed']} | {100 * row['top1']:.2f}% | "
                     f"{100 * row['top5']:.2f}% | {time_} |")
    lines += ["", "| head | preset | runs | top-1 error: mean ± std | min - max | top-5 error: mean ± std |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    configs = list(dict.fromkeys((row["head"], row["preset"]) for row in rows))
    for head, preset in configs:
        runs = [row for row in rows if (row["head"], row["preset"]) == (head, preset)]
        done = [row for row in runs if not row.get("diverged")]
        count = f"{len(done)}" + (f" (+{len(runs) - len(done)} diverged)" if len(done) < len(runs) else "")
        if not done:
            lines.append(f"| `{head}` | {preset} | {count} | | | |")
            continue
        mean1, std1, low1, high1 = summary([100 * row["top1"] for row in done])
        mean5, std5, _, _ = summary([100 * row["top5"] for row in done])
        lines.append(f"| `{head}` | {preset} | {count} | {_pm(mean1, std1)} | {low1:.2f}% - {high1:.2f}% | "
                     f"{_pm(mean5, std5)} |")
    return "\n".join(lines)


def _pm(mean, std):
    return f"{mean:.2f}%" if std is None else f"{mean:.2f}% ± {std:.2f}"


if __name__ == "__main__":
    main()
