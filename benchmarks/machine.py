"""What the benchmark scripts record about the machine they ran on."""

import platform
import time


def cpu_name():
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment():
    """CPU, cores, GPUs and versions, as the result files record them."""
    import os

    import keras
    import numpy as np
    import tensorflow as tf

    return {
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "tf": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def interleaved_step_times(models, variants, rounds, images, labels, on_round=None):
    """{variant: [seconds of one training step per round]}, the variants rotated every round so
    that a shared machine's drifts hit all of them alike; `on_round(index, times)` after each."""
    times = {variant: [] for variant in variants}
    for index in range(rounds):
        shift = index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            start = time.perf_counter()
            models[variant].train_on_batch(images, labels)
            times[variant].append(time.perf_counter() - start)
        if on_round:
            on_round(index, times)
    return times
