"""GPU training throughput of ResNet-18 by head, mixed precision and XLA on and off.

Trains ResNet-18 at 64x64, batch 256, 1000 classes on random data that stays
on the device, for a fixed number of steps, with the heads `gap`, `gap-512`,
`sr-sop`, `gm-gap-16-8`, `ave-sop-16` and `gm-sop-16-8`, in float32 and
`mixed_float16`, with XLA on (`jit_compile=True`) and off. Prints a table of
images per second, peak device memory, the throughput ratios to `gap` and
to `sr-sop`, and the achieved TFLOPS: the model's training FLOPs per image,
counted analytically by `benchmarks/flops.py` (its docstring states what is
counted; training = forward + backward), times images per second, and their
fraction of the device's dense peak for the precision in use (H100/H200 SXM;
"peak unknown" elsewhere, a CPU included). It writes the table (and the raw
numbers as JSON) where asked.

TF32 is set explicitly (`--tf32`, default on: float32 matrix products on
tensor cores): JAX's `jax_default_matmul_precision` is set to
`tensorfloat32` (off: `float32`), TensorFlow's
`tf.config.experimental.enable_tensor_float_32_execution`; the table says
which. `--sqrt-dtype` sets the square roots' product dtype of the
second-order heads (`build_model(sqrt_dtype=...)`, default float32).

`--profile` prints, per head, the share of step time of each part (backbone,
gate, dispatch, covariance, square root, vectorise, classifier, optimizer),
each part's forward + backward timed in isolation at the step's shapes
(`benchmarks/gpu_profile.py`): shares of the parts' sum, not of a real step,
whose measured time is printed beside it.

Needs only Keras, NumPy and one backend: JAX alone is enough. Every
configuration runs in a fresh process, so that its peak memory is its own.
XLA off under JAX means op-by-op execution (Keras compiles every step with
XLA when `jit_compile` is true, and runs it op by op when false), which is
slow: those configurations time fewer steps (`--eager-steps`).

    KERAS_BACKEND=jax python benchmarks/bench_gpu.py           # the full table (< 5 min on an H100)
    KERAS_BACKEND=jax python benchmarks/bench_gpu.py --smoke   # tiny shapes, a minute on a CPU
    python benchmarks/bench_gpu.py --heads gap gm-sop-16-8 --xla on --precisions float32
    KERAS_BACKEND=jax python benchmarks/bench_gpu.py --profile --heads gm-sop-16-8 --precisions mixed_float16

Paper (GTX 1080, batch 256, Caffe-style MatConvNet): 1470 / 800 / 670 / about
335 images/s for ResNet-18-512d / GM-GAP-16-8 / SR-SOP / GM-SOP-16-8.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flops import PEAK_SOURCE, count_flops, peak_tflops, total  # noqa: E402

HEADS = ("gap", "gap-512", "sr-sop", "gm-gap-16-8", "ave-sop-16", "gm-sop-16-8")
PRECISIONS = ("float32", "mixed_float16")
# Training speed on a GTX 1080 (paper Sec. 3.2), images per second at batch 256.
PAPER_GTX1080 = {"gap-512": "1470", "gm-gap-16-8": "800", "sr-sop": "670", "gm-sop-16-8": "~335"}
SMOKE = dict(batch=4, size=32, num_classes=10, steps=1, eager_steps=1, warmup=1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=list(HEADS),
                        help="head names, or head:dispatch for a gated mixture (gm-sop-16-8:grouped)")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=("float32", "mixed_float16", "mixed_bfloat16"))
    parser.add_argument("--xla", nargs="+", default=["on", "off"], choices=("on", "off"))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20, help="timed steps with XLA on")
    parser.add_argument("--eager-steps", type=int, default=3, help="timed steps with XLA off")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    parser.add_argument("--budget", type=float, default=280.0,
                        help="seconds; configurations not started by then are listed as skipped")
    parser.add_argument("--tf32", choices=("on", "off"), default="on",
                        help="float32 matrix products on TF32 tensor cores (set explicitly; default on)")
    parser.add_argument("--sqrt-dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="dtype of the square roots' matrix products of second-order heads")
    parser.add_argument("--profile", action="store_true",
                        help="per head (first precision, XLA on): each part's time, timed in isolation")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny shapes, one step, every head once, all in this process: {SMOKE}")
    parser.add_argument("--output", help="markdown file for the table")
    parser.add_argument("--json", help="JSON file for the raw results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.budget = float("inf")  # a check that every path runs: none is skipped, however busy the machine
    for name in ("batch", "size", "num_classes", "steps", "eager_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {getattr(args, name)}")
    return args


def configurations(args):
    """(head, precision, xla) in run order: XLA on first, the most asked-for numbers first.

    `--smoke` runs every head once (float32, XLA on) and GM-SOP also in mixed
    precision and with XLA off: every code path, in a minute on a CPU.
    """
    if args.smoke:
        return [(head, "float32", "on") for head in HEADS] + [
            ("gm-sop-16-8", "mixed_float16", "on"), ("gm-sop-16-8", "float32", "off")
        ]
    return [(head, precision, xla) for xla in args.xla for precision in args.precisions for head in args.heads]


def set_tf32(on):
    """Sets TF32 for float32 matrix products on the backend; returns how, in words."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value = "tensorfloat32" if on else "float32"
        jax.config.update("jax_default_matmul_precision", value)
        return f"TF32 {'on' if on else 'off'} (jax_default_matmul_precision={value})"
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(on)
        return f"TF32 {'on' if on else 'off'} (enable_tensor_float_32_execution({on}))"
    if backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
        return f"TF32 {'on' if on else 'off'} (torch allow_tf32={on})"
    return "TF32 not set"


def run_one(args, head, precision, xla):
    """Builds, compiles and trains one configuration in this process; returns its numbers."""
    return build_and_train(args, head, precision, xla)[0]


def build_and_train(args, head, precision, xla):
    """(numbers, model) of one configuration built, compiled and trained in this process."""
    import keras
    import numpy as np

    from gmsop_keras.models import build_model
    from gmsop_keras.models.options import model_traits

    set_tf32(args.tf32 == "on")
    name, _, dispatch = head.partition(":")
    options = {"dispatch": dispatch} if dispatch else {}
    if "second_order" in model_traits("resnet18", name):
        options["sqrt_dtype"] = args.sqrt_dtype
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_model(
            "resnet18", name, num_classes=args.num_classes, input_shape=(args.size, args.size, 3), seed=0, **options
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=xla == "on",
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    images = keras.ops.convert_to_tensor(
        rng.integers(0, 256, (args.batch, args.size, args.size, 3)).astype("float32")
    )
    labels = keras.ops.convert_to_tensor(rng.integers(0, args.num_classes, args.batch).astype("int32"))
    start = time.perf_counter()
    for _ in range(args.warmup):
        model.train_on_batch(images, labels)
    warmup_s = time.perf_counter() - start
    steps = args.steps if xla == "on" else args.eager_steps
    times, loss = [], None
    for _ in range(steps):
        start = time.perf_counter()
        loss = model.train_on_batch(images, labels)  # returns a float: waits for the step
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    parts, _ = count_flops(model)
    train_flops = total(parts)
    tflops = train_flops * args.batch / step_s / 1e12
    peak, peak_of = peak_tflops(environment()["device"], precision, args.tf32 == "on")
    return {
        "head": head,
        "precision": precision,
        "xla": xla,
        "params": model.count_params(),
        "steps": steps,
        "warmup_s": warmup_s,
        "step_s": step_s,
        "images_per_s": args.batch / step_s,
        "train_gflop_per_image": train_flops / 1e9,
        "flops_by_part": {part: value[1] for part, value in parts.items()},
        "tflops": tflops,
        "peak_tflops": peak,
        "peak_of": peak_of,
        "fraction_of_peak": None if peak is None else tflops / peak,
        "tf32": args.tf32,
        "sqrt_dtype": options.get("sqrt_dtype"),
        "peak_mib": peak_memory_mib(),
        "loss": float(np.asarray(loss).reshape(-1)[0]),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }, model


def peak_memory_mib():
    """Peak device memory of this process so far (MiB), or None where the backend does not say."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else peak / 2**20
    if backend == "tensorflow":
        import tensorflow as tf

        device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
        return tf.config.experimental.get_memory_info(device)["peak"] / 2**20
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return None


def environment():
    import platform

    import keras
    import numpy as np

    backend = keras.backend.backend()
    info = {"backend": backend, "keras": keras.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "device": "CPU"}
    if backend == "jax":
        import jax

        device = jax.local_devices()[0]
        info.update(jax=jax.__version__, device=device.device_kind if device.platform == "gpu" else "CPU")
    elif backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            info["device"] = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return info


def run_child(args, config):
    """Runs one configuration in a fresh interpreter; returns its result or an error."""
    head, precision, xla = config
    command = [sys.executable, os.path.abspath(__file__), "--child", f"{head},{precision},{xla}",
               "--batch", str(args.batch), "--size", str(args.size), "--num-classes", str(args.num_classes),
               "--steps", str(args.steps), "--eager-steps", str(args.eager_steps), "--warmup", str(args.warmup),
               "--tf32", args.tf32, "--sqrt-dtype", args.sqrt_dtype]
    completed = subprocess.run(command, capture_output=True, text=True)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
    return {"head": head, "precision": precision, "xla": xla, "error": " | ".join(tail)}


def table(args, results, info, skipped):
    lines = [
        f"- device: {info['device']}; backend {info['backend']}"
        + (f" {info['jax']}" if "jax" in info else "") + (f" {info['tensorflow']}" if "tensorflow" in info else "")
        + f", Keras {info['keras']}, NumPy {info['numpy']}, Python {info['python']}",
        f"- ResNet-18, {args.size}x{args.size}, batch {args.batch}, {args.num_classes} classes, SGD momentum, "
        f"random data resident on the device; median of {args.steps} steps with XLA on, {args.eager_steps} "
        f"with XLA off, after {args.warmup} warm-up steps (the first compiles)",
        "- peak: the process's peak device memory (weights, optimizer state, data and the step)",
        f"- {set_tf32(args.tf32 == 'on')}; square roots' products in {args.sqrt_dtype} (second-order heads)",
        "- GFLOP/img: training (forward + backward) FLOPs per image counted by benchmarks/flops.py; TFLOPS = "
        f"GFLOP/img x img/s; of peak: the device's dense peak for the precision ({PEAK_SOURCE})",
        "",
        "| head | precision | XLA | params | img/s | / `gap` | / `sr-sop` | peak MiB | compile + warm-up (s) "
        "| paper img/s (GTX 1080) | GFLOP/img | TFLOPS | of peak |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_key = {(r["head"], r["precision"], r["xla"]): r for r in results}
    for result in results:
        key = (result["precision"], result["xla"])
        if "error" in result:
            lines.append(f"| `{result['head']}` | {key[0]} | {key[1]} | failed: {result['error']} | | | | | | |")
            continue
        ratios = []
        for reference in ("gap", "sr-sop"):
            ref = by_key.get((reference, *key))
            ratios.append(f"{result['images_per_s'] / ref['images_per_s']:.2f}" if ref and "error" not in ref else "-")
        peak = "-" if result["peak_mib"] is None else f"{result['peak_mib']:.0f}"
        lines.append(
            f"| `{result['head']}` | {key[0]} | {key[1]} | {result['params'] / 1e6:.2f}M | "
            f"{result['images_per_s']:.0f} | {ratios[0]} | {ratios[1]} | {peak} | {result['warmup_s']:.1f} | "
            f"{PAPER_GTX1080.get(result['head'].partition(':')[0], '-')} | {result['train_gflop_per_image']:.3f} | "
            f"{result['tflops']:.3g} | {_of_peak(result)} |"
        )
    for head, precision, xla in skipped:
        lines.append(f"| `{head}` | {precision} | {xla} | skipped: over the {args.budget:.0f} s budget | | | | | | |")
    return "\n".join(lines) + "\n"


def _of_peak(result):
    if result["fraction_of_peak"] is None:
        return result["peak_of"]
    return f"{100 * result['fraction_of_peak']:.1f}% of {result['peak_tflops']:g} ({result['peak_of']})"


def profile(args):
    """--profile: per head, the parts' times (in isolation) beside a measured training step."""
    from gpu_profile import profile_parts, table as parts_table

    precision = args.precisions[0]
    for head in args.heads:
        result, model = build_and_train(args, head, precision, "on")
        parts = profile_parts(model, args.batch, args.num_classes, args.steps)
        print(f"\n{head}, {precision}, XLA on, batch {args.batch}, {args.size}x{args.size}: "
              f"{result['images_per_s']:.0f} img/s, {result['tflops']:.3g} TFLOPS ({_of_peak(result)})")
        print(parts_table(parts, result["step_s"]), flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        head, precision, xla = args.child.split(",")
        print("RESULT " + json.dumps(run_one(args, head, precision, xla)), flush=True)
        return
    if args.profile:
        profile(args)
        return
    start = time.perf_counter()
    results, skipped = [], []
    for config in configurations(args):
        if time.perf_counter() - start > args.budget:
            skipped.append(config)
            continue
        # --smoke runs in this process: its peak memory is the running peak, not per configuration.
        result = run_one(args, *config) if args.smoke else run_child(args, config)
        results.append(result)
        shown = "error: " + result["error"] if "error" in result else (
            f"{result['images_per_s']:.0f} img/s, {result['tflops']:.3g} TFLOPS achieved ({_of_peak(result)})")
        print(f"{' '.join(config)}: {shown} ({time.perf_counter() - start:.0f} s)", flush=True)
    info = environment()
    text = table(args, results, info, skipped)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": info, "results": results, "skipped": skipped,
                       "total_s": time.perf_counter() - start}, f, indent=1)


if __name__ == "__main__":
    main()
