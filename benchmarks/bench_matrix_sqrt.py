"""Matrix square root, forward + backward: custom gradient vs autodiff vs eigh.

Times `grad(sum(sqrt(A) * G))` for a batch of covariance matrices, compiled
with `tf.function` (graph) and, with `--xla`, with XLA too. Each variant's
peak memory (the allocator's peak during one step, above the live inputs) is
measured in a fresh subprocess, so variants cannot share allocator pools.

    python benchmarks/bench_matrix_sqrt.py                 # B=64 at d=128 and d=256
    python benchmarks/bench_matrix_sqrt.py --batch 2304    # the paper's 256 images x 9 roots
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = ("custom", "autodiff", "eigh")


def _eigh_sqrt(a):
    import tensorflow as tf

    values, vectors = tf.linalg.eigh(a)
    root = tf.sqrt(tf.maximum(values, 0.0))
    return tf.matmul(vectors * root[..., None, :], vectors, adjoint_b=True)


def run_variant(variant, batch, dim, iterations, repeats, xla):
    """Runs one variant in this process; returns a dict of timings and memory."""
    import numpy as np
    import tensorflow as tf

    from gmsop_keras.ops import newton_schulz_sqrt

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 256, dim), dtype=np.float32)
    x = np.maximum(x, 0.0)  # ReLU features, as in a network
    x -= x.mean(axis=1, keepdims=True)
    a = tf.constant(np.einsum("bli,blj->bij", x, x) / 256.0)
    g = tf.constant(rng.standard_normal((batch, dim, dim), dtype=np.float32))
    del x

    if variant == "eigh":
        root = _eigh_sqrt
    else:
        custom = variant == "custom"

        def root(m):
            return newton_schulz_sqrt(m, iterations, custom_gradient=custom)

    @tf.function(jit_compile=xla)
    def step(m):
        with tf.GradientTape() as tape:
            tape.watch(m)
            loss = tf.reduce_sum(root(m) * g)
        return tape.gradient(loss, m)

    step(a).numpy()  # trace and warm up
    # Peak bytes the allocator handed out during one step, above what was live before it
    # (the inputs): TensorFlow's allocator statistics work on the CPU device too.
    tf.config.experimental.reset_memory_stats("CPU:0")
    live_before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(a).numpy()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - live_before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(a).numpy()
        times.append(time.perf_counter() - start)
    return {
        "variant": variant,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_mib": peak / 2**20,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of all variants")
    parser.add_argument("--xla", action="store_true")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = run_variant(
            args.child, args.batch, args.dims[0], args.iterations, args.repeats, args.xla
        )
        print("RESULT " + json.dumps(result))
        return

    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, batch {args.batch}, "
          f"N={args.iterations}, xla={args.xla}")
    for dim in args.dims:
        results = {v: [] for v in args.variants}
        for _ in range(args.rounds):  # alternate variants so drifts hit all alike
            for variant in args.variants:
                cmd = [sys.executable, __file__, "--child", variant, "--batch", str(args.batch),
                       "--dims", str(dim), "--iterations", str(args.iterations),
                       "--repeats", str(args.repeats)] + (["--xla"] if args.xla else [])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
                results[variant].append(json.loads(line[len("RESULT "):]))
        print(f"\nd={dim}")
        print(f"{'variant':10s} {'median ms':>10s} {'vs autodiff':>12s} {'peak MiB':>10s} {'vs autodiff':>12s}")
        summary = {}
        for variant, runs in results.items():
            summary[variant] = (
                statistics.median(r["median_s"] for r in runs) * 1e3,
                statistics.median(r["peak_mib"] for r in runs),
            )
        ref_t, ref_m = summary.get("autodiff", (None, None))
        for variant, (t, m) in summary.items():
            rt = f"{t / ref_t:.3f}" if ref_t else "-"
            rm = f"{m / ref_m:.3f}" if ref_m else "-"
            print(f"{variant:10s} {t:10.1f} {rt:>12s} {m:10.1f} {rm:>12s}")


if __name__ == "__main__":
    main()
