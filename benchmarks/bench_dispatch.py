"""Mixture dispatch: step time and peak memory of GM-SOP-16-8 per dispatch, beside Ave-SOP-16.

Trains ResNet-18 (64x64, 1000 classes) with the heads `ave-sop-16` and
`gm-sop-16-8` under each dispatch of the gated mixture (`dense`, `gather`,
`grouped`), at each batch size. Per batch size, one process builds every
variant, then times `train_on_batch` in interleaved rounds (order rotated each
round, so a load that comes and goes hits all alike) and measures each
variant's peak memory during one step: the allocator's peak above what was
live before the step (`tf.config.experimental.get_memory_info`, which works on
the CPU device), after `reset_memory_stats`. Ratios are medians over rounds of
the within-round ratio.

    python benchmarks/bench_dispatch.py                      # batch 32 and 64, 5 rounds
    python benchmarks/bench_dispatch.py --batches 8 --rounds 2 --xla
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_models import build  # noqa: E402  (benchmarks/bench_models.py)
from machine import environment, interleaved_step_times  # noqa: E402

VARIANTS = ("ave-sop-16", "gm-sop-16-8:dense", "gm-sop-16-8:gather", "gm-sop-16-8:grouped")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--xla", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "dispatch_results.md"))
    return parser.parse_args(argv)


def measure(args, batch):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (batch, 64, 64, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, 1000, batch))
    models, peaks = {}, {}
    for variant in args.variants:
        model = build("resnet18", variant, 64, 1000)
        if args.xla:
            model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=True)
        for _ in range(2):  # trace, warm up
            model.train_on_batch(images, labels)
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        model.train_on_batch(images, labels)
        peaks[variant] = (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 2**20
        models[variant] = model
        print(f"batch {batch}: {variant} ready, peak {peaks[variant]:.0f} MiB", flush=True)
    load = [os.getloadavg()[0]]
    times = interleaved_step_times(models, args.variants, args.rounds, images, labels)
    load.append(os.getloadavg()[0])
    return times, peaks, load


def report(args, results, info):
    lines = [
        "# Mixture dispatch benchmark",
        "",
        "`" + " ".join(["python benchmarks/bench_dispatch.py", *sys.argv[1:]]) + "`",
        "",
        f"- ResNet-18, 64x64, 1000 classes, SGD momentum, `train_on_batch`, "
        f"{'XLA' if args.xla else 'graph mode, no XLA'}; {args.rounds} interleaved rounds after 2 warm-up steps",
        f"- machine: {info['cpu']}, {info['cores']} cores; TensorFlow {info['tf']}, Keras {info['keras']}",
        "- peak: allocator peak during one training step above the memory live before it",
        "",
        "| batch | variant | median step (s) | img/s | Ave-SOP-16 step / this | peak MiB | peak / `gather` |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for batch, (times, peaks, load) in results.items():
        for variant in args.variants:
            median = statistics.median(times[variant])
            speedup = statistics.median(a / b for a, b in zip(times[VARIANTS[0]], times[variant])) \
                if VARIANTS[0] in times else float("nan")
            gather = peaks.get("gm-sop-16-8:gather")
            lines.append(
                f"| {batch} | `{variant}` | {median:.3f} | {batch / median:.1f} | {speedup:.2f} | "
                f"{peaks[variant]:.0f} | {peaks[variant] / gather:.2f} |" if gather else
                f"| {batch} | `{variant}` | {median:.3f} | {batch / median:.1f} | {speedup:.2f} | {peaks[variant]:.0f} | - |"
            )
        lines.append(f"| {batch} | load average start / end | {load[0]:.2f} / {load[1]:.2f} | | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    info = environment()
    results = {batch: measure(args, batch) for batch in args.batches}
    text = report(args, results, info)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
