"""Does a half-precision square root change what GM-SOP-16-8 learns? Validation error over seeds.

Trains ResNet-18 + GM-SOP-16-8 on the built-in synthetic set (`pipelines.synthetic`: the label is
the co-occurrence of two pattern types, which second-order pooling exposes) with the square roots'
matrix products in float32 and in half precision (`sqrt_dtype`), the rest of the model in float32,
several seeds each, the same data, schedule and seeds for every variant. Prints each run's final
validation top-1 error and, per variant, the mean and the spread (min to max, and the standard
deviation) over the seeds: a variant is within the float32 runs' own spread when its mean lies
between their lowest and highest error. Also checks that the half-precision square root's
gradients stay finite for degenerate maps (constant, rank-1, all-zero).

    KERAS_BACKEND=jax python benchmarks/bench_sqrt_precision.py               # CPU, a few minutes
    KERAS_BACKEND=jax python benchmarks/bench_sqrt_precision.py --image-size 32 --epochs 6
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = ("float32", "bfloat16", "float16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["float32", "bfloat16"], choices=VARIANTS,
                        help="sqrt_dtype of each variant")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--train", type=int, default=768, help="training images")
    parser.add_argument("--val", type=int, default=256, help="validation images")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--gradients-only", action="store_true", help="only the degenerate-map gradient check")
    return parser.parse_args(argv)


def synthetic_data(args):
    """The synthetic set's images and labels (fixed: data seed 0 for every run)."""
    import numpy as np

    from pipelines.synthetic import generate, make_design

    design = make_design(args.num_classes, seed=0)
    rng = np.random.default_rng(0)
    splits = []
    for count in (args.train, args.val):
        labels = rng.integers(0, args.num_classes, count)
        splits.append((generate(design, labels, args.image_size, rng).astype("float32"), labels.astype("int32")))
    return splits


def train_once(args, data, sqrt_dtype, seed):
    """Final validation top-1 error of one run."""
    import keras
    import numpy as np

    from gmsop_keras.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model("resnet18", "gm-sop-16-8", num_classes=args.num_classes,
                        input_shape=(args.image_size, args.image_size, 3), seed=seed, sqrt_dtype=sqrt_dtype)
    model.compile(optimizer=keras.optimizers.SGD(args.lr, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    (x_train, y_train), (x_val, y_val) = data
    history = model.fit(x_train, y_train, batch_size=args.batch, epochs=args.epochs, verbose=0, shuffle=True)
    losses = history.history["loss"]
    logits = model.predict(x_val, batch_size=128, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) != y_val)), losses


def degenerate_gradients_finite(sqrt_dtype):
    """Whether GatedMixture's gradients are finite for constant, rank-1 and all-zero maps."""
    import keras
    import numpy as np

    from gmsop_keras.layers import GatedMixture

    layer = GatedMixture(4, 2, component_dims=(8, 8), gate_dims=(8, 8), sqrt_dtype=sqrt_dtype, seed=0)
    grid = np.linspace(-1, 1, 16, dtype="float32")
    maps = {
        "constant": np.full((2, 4, 4, 6), 3.0, "float32"),
        "rank-1": np.einsum("l,c->lc", grid, np.arange(1, 7, dtype="float32"))[None].repeat(2, 0).reshape(2, 4, 4, 6),
        "zeros": np.zeros((2, 4, 4, 6), "float32"),
    }
    finite = {}
    for name, x in maps.items():
        finite[name] = bool(np.all(np.isfinite(_input_gradient(layer, keras.ops.convert_to_tensor(x)))))
    return finite


def _input_gradient(layer, x):
    """d sum(layer(x, training=True)) / dx on JAX or TensorFlow (the moving statistics left as they are)."""
    import keras
    import numpy as np

    layer(x)  # builds
    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def total(t):
            return keras.ops.sum(layer.stateless_call(trainable, non_trainable, t, training=True)[0])

        return np.asarray(jax.grad(total)(x))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x, training=True))
    return tape.gradient(loss, x).numpy()


def main(argv=None):
    args = parse_args(argv)
    import keras

    for variant in args.variants:
        print(f"finite gradients on degenerate maps, sqrt_dtype={variant}: {degenerate_gradients_finite(variant)}")
    if args.gradients_only:
        return
    data = synthetic_data(args)
    rows, errors = [], {}
    for variant in args.variants:
        for seed in args.seeds:
            start = time.perf_counter()
            error, losses = train_once(args, data, variant, seed)
            errors.setdefault(variant, []).append(error)
            rows.append((variant, seed, error, losses[-1], time.perf_counter() - start))
            print(f"sqrt_dtype={variant} seed={seed}: val top-1 error {100 * error:.1f}%, "
                  f"final train loss {losses[-1]:.3f} ({rows[-1][-1]:.0f} s)", flush=True)
    print(f"\nResNet-18 + GM-SOP-16-8, synthetic {args.image_size}x{args.image_size}, {args.num_classes} classes, "
          f"{args.train} training / {args.val} validation images, {args.epochs} epochs, batch {args.batch}, "
          f"SGD lr {args.lr} momentum 0.9, model float32 but for the square roots' products; "
          f"backend {keras.backend.backend()}; seeds {args.seeds}\n")
    print("| sqrt_dtype | val top-1 error per seed | mean | min - max | std | within float32's spread |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    reference = errors.get("float32")
    for variant, values in errors.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        mean = statistics.mean(values)
        within = "-" if variant == "float32" or not reference else (
            "yes" if min(reference) <= mean <= max(reference) else "no")
        print(f"| {variant} | {', '.join(f'{100 * v:.1f}%' for v in values)} | {100 * mean:.1f}% | "
              f"{100 * min(values):.1f}% - {100 * max(values):.1f}% | {100 * spread:.1f} | {within} |")


if __name__ == "__main__":
    main()
