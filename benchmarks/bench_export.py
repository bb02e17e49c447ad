"""Inference speed of exported SavedModels: the `serving_default` signature at batch 1 and batch 64.

Exports every head (untrained; speed does not depend on the weights) with `gmsop_keras.export`, loads
each SavedModel back with `tf.saved_model.load` as a server would, warms it up, then times the
signature on uint8 images in interleaved rounds: each round times every (head, batch) case once, in a
rotated order, so that a load that comes and goes on the machine hits all cases alike. A batch-1 case
is the mean of `--calls` consecutive calls; a batch-64 case is one call. Reports the median over
rounds (and the best round, the closest to an idle machine) as images per second and latency per
call, and writes them to a markdown file.

    python benchmarks/bench_export.py                          # gap and gm-sop-16-8, 64x64, 1000 classes
    python benchmarks/bench_export.py --rounds 3 --calls 5     # quick look
    python benchmarks/bench_export.py --heads gap gm-gap-16-8 gm-sop-16-8 --batches 1 8 64
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machine import environment  # noqa: E402  (benchmarks/machine.py)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--heads", nargs="+", default=["gap", "gm-sop-16-8"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--size", type=int, default=64, help="image side (default 64, ImageNet-64)")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per case after loading")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds; each times every case once")
    parser.add_argument("--calls", type=int, default=10, help="consecutive calls timed per batch-1 case")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "export_results.md"))
    return parser.parse_args(argv)


def export_and_load(backbone, head, size, num_classes, folder):
    import tensorflow as tf

    from gmsop_keras import build_model
    from gmsop_keras.serving.export import export_model

    model = build_model(backbone, head, num_classes=num_classes, input_shape=(size, size, 3), seed=0)
    start = time.perf_counter()
    path = export_model(model, os.path.join(folder, head))
    export_seconds = time.perf_counter() - start
    return tf.saved_model.load(path).signatures["serving_default"], model.count_params(), export_seconds


def run(args):
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = {b: tf.constant(rng.integers(0, 256, (b, args.size, args.size, 3), dtype=np.uint8)) for b in args.batches}
    signatures, params, export_seconds = {}, {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for head in args.heads:
            signatures[head], params[head], export_seconds[head] = export_and_load(
                args.backbone, head, args.size, args.num_classes, folder)
            for batch in args.batches:
                for _ in range(args.warmup):
                    signatures[head](image=images[batch])["classes"].numpy()
            print(f"ready {head:14s} {params[head] / 1e6:6.2f}M params, export {export_seconds[head]:.1f}s", flush=True)

        cases = [(head, batch) for head in args.heads for batch in args.batches]
        seconds = {case: [] for case in cases}  # per call
        load_start = os.getloadavg()
        for round_index in range(args.rounds):
            shift = round_index % len(cases)
            for head, batch in cases[shift:] + cases[:shift]:
                calls = args.calls if batch == 1 else 1
                start = time.perf_counter()
                for _ in range(calls):
                    signatures[head](image=images[batch])["classes"].numpy()
                seconds[head, batch].append((time.perf_counter() - start) / calls)
            print(f"round {round_index + 1}/{args.rounds}: "
                  + ", ".join(f"{h}@{b} {seconds[h, b][-1] * 1e3:.1f}ms" for h, b in cases), flush=True)
        load_end = os.getloadavg()

    info = {**environment(), "load": (load_start, load_end)}
    return seconds, params, export_seconds, info


def report(args, seconds, params, export_seconds, info):
    lines = [
        "# SavedModel inference benchmark",
        "",
        "`" + " ".join(["python benchmarks/bench_export.py", *sys.argv[1:]]) + "`",
        "",
        f"- backbone `{args.backbone}`, uint8 input {args.size}x{args.size}x3, {args.num_classes} classes; "
        "the `serving_default` signature of `python -m gmsop_keras.export` (logits, softmax, top-5), "
        "loaded with `tf.saved_model.load`, outputs fetched to numpy",
        f"- {args.warmup} warm-up calls per case, then {args.rounds} interleaved rounds (each times every "
        f"(head, batch) case once, order rotated); batch 1: mean of {args.calls} consecutive calls per round; "
        "median over rounds",
        f"- machine: {info['cpu']}, {info['cores']} CPU cores, {info['gpus']} GPUs; TensorFlow {info['tf']}, "
        f"Keras {info['keras']}, NumPy {info['numpy']}, Python {info['python']}",
        f"- load average at start / end of the timed rounds: {info['load'][0][0]:.2f} / {info['load'][1][0]:.2f} "
        "(other jobs may share the CPU; interleaving protects the comparisons, not the absolute numbers; "
        "the best round is the closest to an idle machine)",
        "",
        "| head | params | export (s) | batch | median latency (ms) | min-max (ms) | images/s (median) "
        "| images/s (best round) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for head in args.heads:
        for batch in args.batches:
            values = seconds[head, batch]
            median = statistics.median(values)
            lines.append(
                f"| `{head}` | {params[head] / 1e6:.2f}M | {export_seconds[head]:.1f} | {batch} | {median * 1e3:.1f} | "
                f"{min(values) * 1e3:.1f}-{max(values) * 1e3:.1f} | {batch / median:.1f} | {batch / min(values):.1f} |"
            )
    if len(args.heads) > 1:
        first = args.heads[0]
        lines += ["", f"Time per call relative to `{first}` (median over rounds of the within-round ratio):", ""]
        for head in args.heads[1:]:
            for batch in args.batches:
                ratios = sorted(a / b for a, b in zip(seconds[head, batch], seconds[first, batch]))
                lines.append(f"- `{head}` / `{first}` at batch {batch}: **{statistics.median(ratios):.2f}x** "
                             f"(rounds: {ratios[0]:.2f}-{ratios[-1]:.2f})")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    seconds, params, export_seconds, info = run(args)
    text = report(args, seconds, params, export_seconds, info)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
