"""Training-step time of ResNet-18 with each pooling head, side by side.

Builds every variant once, compiles it (graph mode, Keras' default `jit_compile`),
warms it up, then times `train_on_batch` in interleaved rounds: each round runs
every variant once, in a rotated order, so that a load that comes and goes on
the machine hits all variants alike. Reports the median step time per variant
and images per second, and every ratio as the median over rounds of the ratio
within a round (steps timed seconds apart, under the same load), and writes
them to a markdown file.

    python benchmarks/bench_models.py                        # 64x64, batch 32, 9 rounds
    python benchmarks/bench_models.py --rounds 3 --batch 8   # quick look
    python benchmarks/bench_models.py --variants gap gm-sop-16-8:gather gm-sop-16-8:dense

A variant is `head` or `head:dispatch` (dispatch of the gated mixture:
`gather` runs only the B*K selected (sample, component) pairs, `dense` runs
all N components and masks).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machine import environment, interleaved_step_times  # noqa: E402  (benchmarks/machine.py)

DEFAULT_VARIANTS = (
    "gap",
    "gap-512",
    "gm-gap-16-8:gather",
    "gm-gap-16-8:dense",
    "sr-sop",
    "psr-sop",
    "ave-sop-16",
    "gm-sop-16-8:gather",
    "gm-sop-16-8:dense",
)
NOTES_MARKER = "<!-- notes: kept when the script rewrites this file -->"
# Training speed on a GTX 1080 (paper Sec. 3.2; Hz = images per second, batch 256).
PAPER_SPEED = {
    "gap-512": "1470",
    "gm-gap-16-8": "800",
    "sr-sop": "670",
    "psr-sop": "680",
    "gm-sop-16-8": "~335 (about half of SR-SOP)",
    "ave-sop-16": "<168 (GM-SOP is 'more than 2 times faster')",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant after tracing")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds; each times one step per variant")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "models_results.md"))
    return parser.parse_args(argv)


def build(backbone, variant, size, num_classes):
    import keras

    from gmsop_keras import build_model

    head, _, dispatch = variant.partition(":")
    options = {"dispatch": dispatch} if dispatch else {}
    model = build_model(backbone, head, num_classes=num_classes, input_shape=(size, size, 3), seed=0, **options)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def run(args):
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (args.batch, args.size, args.size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, args.num_classes, args.batch))

    models, build_seconds = {}, {}
    for variant in args.variants:
        start = time.perf_counter()
        models[variant] = build(args.backbone, variant, args.size, args.num_classes)
        for _ in range(1 + args.warmup):  # the first call traces the train step
            models[variant].train_on_batch(images, labels)
        build_seconds[variant] = time.perf_counter() - start
        print(f"ready {variant:22s} {models[variant].count_params() / 1e6:6.2f}M params, "
              f"build + trace + warm-up {build_seconds[variant]:.1f}s", flush=True)

    load_start = os.getloadavg()
    times = interleaved_step_times(
        models, args.variants, args.rounds, images, labels,
        on_round=lambda index, times: print(f"round {index + 1}/{args.rounds}: " + ", ".join(
            f"{v} {times[v][-1]:.3f}s" for v in args.variants), flush=True))
    load_end = os.getloadavg()

    medians = {variant: statistics.median(values) for variant, values in times.items()}
    params = {variant: models[variant].count_params() for variant in args.variants}
    info = {**environment(), "load": (load_start, load_end)}
    return medians, times, params, info


def report(args, medians, times, params, info):
    def ratio(slow, fast):
        """Median over rounds of the within-round ratio of step times."""
        return statistics.median(a / b for a, b in zip(times[slow], times[fast]))

    lines = [
        "# Model training-step benchmark",
        "",
        "`" + " ".join(["python benchmarks/bench_models.py", *sys.argv[1:]]) + "`",
        "",
        f"- backbone `{args.backbone}`, input {args.size}x{args.size}x3, batch {args.batch}, "
        f"{args.num_classes} classes, SGD momentum, `train_on_batch` (compiled graph, no XLA on CPU)",
        f"- {args.warmup} warm-up steps after tracing, then {args.rounds} interleaved rounds "
        "(each round times one step of every variant, order rotated); median per variant",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['gpus']} GPUs; "
        f"TensorFlow {info['tf']}, Keras {info['keras']}, Python {info['python']}",
        f"- load average at start / end of the timed rounds: "
        f"{info['load'][0][0]:.2f} / {info['load'][1][0]:.2f} (other jobs may share the CPU; "
        "interleaving protects the ratios, not the absolute times)",
        "",
        "| variant | params | median step (s) | min-max (s) | img/s | step time / `gap` | paper img/s (GTX 1080) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for variant in args.variants:
        head = variant.partition(":")[0]
        to_gap = f"{ratio(variant, 'gap'):.2f}" if "gap" in times else "-"
        lines.append(
            f"| `{variant}` | {params[variant] / 1e6:.2f}M | {medians[variant]:.3f} | "
            f"{min(times[variant]):.3f}-{max(times[variant]):.3f} | {args.batch / medians[variant]:.1f} | "
            f"{to_gap} | {PAPER_SPEED.get(head, '-')} |"
        )
    lines += ["", "Ratios of step times (median over rounds of the within-round ratio):", ""]
    pairs = [
        ("ave-sop-16", "gm-sop-16-8:gather", "top-K routing: Ave-SOP-16 / GM-SOP-16-8 (gather); FLOP ideal ~1.5"),
        ("ave-sop-16", "gm-sop-16-8:dense", "Ave-SOP-16 / GM-SOP-16-8 (dense)"),
        ("gm-sop-16-8:dense", "gm-sop-16-8:gather", "GM-SOP-16-8 dense / gather"),
        ("gm-gap-16-8:dense", "gm-gap-16-8:gather", "GM-GAP-16-8 dense / gather"),
        ("gm-sop-16-8:gather", "sr-sop", "GM-SOP-16-8 (gather) / SR-SOP; paper ~2"),
        ("gm-gap-16-8:gather", "gap-512", "GM-GAP-16-8 (gather) / ResNet-18-512d; paper 1470/800 = 1.84"),
        ("sr-sop", "gap-512", "SR-SOP / ResNet-18-512d; paper 1470/670 = 2.19"),
        ("psr-sop", "sr-sop", "parametric SR-SOP / SR-SOP; paper 670/680 = 0.99"),
    ]
    for slow, fast, label in pairs:
        if slow in times and fast in times:
            per_round = sorted(a / b for a, b in zip(times[slow], times[fast]))
            lines.append(
                f"- {label}: **{ratio(slow, fast):.2f}x** (rounds: {per_round[0]:.2f}-{per_round[-1]:.2f})"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    medians, times, params, info = run(args)
    text = report(args, medians, times, params, info)
    print(text)
    if args.output:
        # Hand-written notes below the marker survive a re-run.
        notes = ""
        if os.path.exists(args.output):
            with open(args.output) as f:
                previous = f.read()
            if NOTES_MARKER in previous:
                notes = "\n" + previous[previous.index(NOTES_MARKER):]
        with open(args.output, "w") as f:
            f.write(text + notes)
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
