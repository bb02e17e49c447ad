"""Input pipeline throughput: `pipelines.make_dataset(..., training=True)` against a naive pipeline.

    python benchmarks/bench_pipeline.py [--images 40000] [--runs 5] [--batch-size 256]

Converts the synthetic set at 64x64 and at 100x100 (cached under `--data-dir`), then measures
images/s of both pipelines side by side, alternating them within each run, and reports medians:

- `make_dataset`: the training input (per-epoch shard shuffle, parallel interleave, shuffle buffer,
  batch, batched parse, batched augmentation, prefetch); random flip at 64x64, random 96x96 crop +
  flip at 100x100 (the Places365 recipe);
- naive: one `TFRecordDataset` over all shards, shuffle buffer, per-record `parse_single_example`
  with per-image augmentation (sequential map), then batch; no interleave, no prefetch.

Writes the numbers, machine and versions to `benchmarks/pipeline_results.md` (`--output`).
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from machine import cpu_name  # noqa: E402  (benchmarks/machine.py)
from pipelines import ensure_synthetic, make_dataset, read_manifest  # noqa: E402
from pipelines.manifest import shard_paths  # noqa: E402
from pipelines.tfrecord import FEATURE_SPEC, IMAGE_KEY, LABEL_KEY  # noqa: E402

GOAL_64 = 15_000


def naive_dataset(data_dir, batch_size, crop, shuffle_buffer=10_000):
    """What a first attempt looks like: per-record parsing and augmentation, all sequential."""
    manifest = read_manifest(data_dir)
    shape = manifest["image_shape"]

    def parse(record):
        features = tf.io.parse_single_example(record, FEATURE_SPEC)
        image = tf.reshape(tf.io.decode_raw(features[IMAGE_KEY], tf.uint8), shape)
        if crop:
            image = tf.image.random_crop(image, [crop, crop, 3])
        image = tf.image.random_flip_left_right(image)
        return image, tf.cast(features[LABEL_KEY], tf.int32)

    ds = tf.data.TFRecordDataset(shard_paths(data_dir, manifest, "train"))
    return ds.shuffle(shuffle_buffer).repeat().map(parse).batch(batch_size, drop_remainder=True)


def fast_dataset(data_dir, batch_size, crop):
    augment = "crop_flip" if crop else "flip"
    return make_dataset(data_dir, "train", batch_size, training=True, augment=augment, crop_size=crop,
                        repeat=True)


def images_per_second(dataset, batch_size, num_images, warmup_batches=20):
    iterator = iter(dataset)
    for _ in range(warmup_batches):  # fills the shuffle buffer and starts the threads
        next(iterator)
    steps = max(1, num_images // batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        images, _ = next(iterator)
    _ = images.shape
    return steps * batch_size / (time.perf_counter() - start)


def run(args):
    """Returns [(size, crop, {pipeline: median images/s}, {pipeline: [images/s per run]})]."""
    results = []
    for size, crop in ((64, None), (100, 96)):
        data_dir = ensure_synthetic(os.path.join(args.data_dir, f"synthetic-{size}"), image_size=size,
                                    train_per_class=args.images // 10, val_per_class=10, progress=True)
        candidates = {"naive": naive_dataset(data_dir, args.batch_size, crop),
                      "make_dataset": fast_dataset(data_dir, args.batch_size, crop)}
        rates = {name: [] for name in candidates}
        for run_index in range(args.runs):
            for name, dataset in candidates.items():
                rate = images_per_second(dataset, args.batch_size, args.measure_images)
                rates[name].append(rate)
                print(f"{size}x{size} run {run_index + 1}/{args.runs} {name:>12}: {rate:9.0f} images/s",
                      flush=True)
        results.append((size, crop, {name: statistics.median(r) for name, r in rates.items()}, rates))
    return results


def machine():
    return (f"{os.cpu_count()} CPU cores ({cpu_name()}), no GPU; Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, NumPy {np.__version__}, {platform.system()} {platform.release()}")


def write_report(path, args, results, load):
    lines = ["# Input pipeline throughput", "",
             "`python benchmarks/bench_pipeline.py` "
             f"(`--images {args.images} --runs {args.runs} --batch-size {args.batch_size}`).", "",
             f"Machine: {machine()}. Load average (1 min) before / after the measurements: "
             f"{load[0]:.2f} / {load[1]:.2f} (the benchmark itself accounts for about 2; more is other work "
             "sharing the 2 cores).", "",
             "Synthetic set, `make_dataset(..., training=True)` against a naive pipeline (per-record "
             "`parse_single_example` and augmentation, no interleave, no prefetch), measured side by side "
             f"in the same process; images/s are medians of {args.runs} runs of "
             f"{args.measure_images} images after a warm-up.", "",
             "| images | augmentation | naive (images/s) | make_dataset (images/s) | speed-up |",
             "| --- | --- | ---: | ---: | ---: |"]
    for size, crop, medians, _ in results:
        augmentation = f"random {crop}x{crop} crop + flip" if crop else "random flip"
        lines.append(f"| {size}x{size} | {augmentation} | {medians['naive']:,.0f} | "
                     f"{medians['make_dataset']:,.0f} | {medians['make_dataset'] / medians['naive']:.1f}x |")
    fast_64 = results[0][2]["make_dataset"]
    verdict = "met" if fast_64 >= GOAL_64 else "NOT met"
    lines += ["", f"Goal: at least {GOAL_64:,} images/s at 64x64 on 2 cores: {verdict} "
              f"({fast_64:,.0f} images/s).", "", "All runs (images/s):", ""]
    for size, _, _, rates in results:
        for name, values in rates.items():
            lines.append(f"- {size}x{size} {name}: " + ", ".join(f"{v:,.0f}" for v in values))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40_000, help="training images in each synthetic set")
    parser.add_argument("--measure-images", type=int, default=51_200, help="images timed per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "gmsop_bench_pipeline"))
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "pipeline_results.md"))
    args = parser.parse_args()
    before = os.getloadavg()[0]
    results = run(args)
    write_report(args.output, args, results, (before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
