"""`bench_gpu.py --profile`: the share of each part of a training step, timed in isolation.

Each part's forward + backward (gradients with respect to its inputs and weights) runs alone, compiled
with XLA under JAX (`jax.jit`) or TensorFlow (`tf.function(jit_compile=True)`), at the shapes of the
real step: batch B, the map the head pools, the mixture's N, K and widths. The shares are of the sum
of the parts, not of a real step, in which XLA fuses and overlaps them; the real step's time is
printed beside the sum. Parts, written with `keras.ops` and weights of the real shapes:

- backbone: the model up to the head's pooling layer (ResNet-18 and, for second-order heads, the
  512 -> 128 reduction), BatchNorm in training mode, under the model's dtype policy;
- gate: its 1x1 convolutions (BatchNorm left out), SR-SOP or mean, and its dense kernel;
- dispatch: each image's K kernels gathered (all N for an average or the dense dispatch) and the
  components' 1x1 convolutions with ReLU (the `gather` dispatch's work);
- covariance, square root (Newton-Schulz, the head's `sqrt_dtype`), vectorise (upper triangle and
  the gate-weighted sum) of the B x K component maps;
- classifier: the dense layer and the cross-entropy; optimizer: the optimizer's update of every weight.

Elementwise layers between the parts (BatchNorm, ReLU) are left out. The profiled shapes and parts
follow the head: `gap` has only backbone, classifier and optimizer.
"""

import statistics
import time

import numpy as np

LABEL = "timed in isolation (forward + backward of each part alone at the step's shapes); shares of their sum, not of a real step"


def compiled_gradient(fn, args, differentiable):
    """A callable running `fn`'s gradient with respect to `args[i]` for i in `differentiable`, to completion."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        gradient = jax.jit(jax.grad(fn, argnums=tuple(differentiable)))
        return lambda: jax.block_until_ready(gradient(*args))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def gradient(*values):
            with tf.GradientTape() as tape:
                watched = [values[i] for i in differentiable]
                tape.watch(watched)
                loss = fn(*values)
            return tape.gradient(loss, watched)

        return lambda: [tf.convert_to_tensor(g).numpy() for g in tf.nest.flatten(gradient(*args))]
    raise SystemExit(f"error: --profile supports the jax and tensorflow backends, not {backend}; "
                     "set KERAS_BACKEND=jax or tensorflow")


def time_call(run, steps):
    run()  # compiles
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _random(rng, shape, scale=0.1, dtype="float32"):
    import keras

    return keras.ops.convert_to_tensor((rng.standard_normal(shape) * scale).astype(dtype))


def profile_parts(model, batch, num_classes, steps, seed=0):
    """[(part, seconds)] for `model` (built by `build_model`) at batch `batch`."""
    import keras
    from keras import ops

    from gmsop_keras.layers import GatedMixture, SquareRootSOP
    from gmsop_keras.ops import covariance, newton_schulz_sqrt, square_root_sop, triu_vectorize

    rng = np.random.default_rng(seed)
    pooling = next(layer for layer in model.layers
                   if isinstance(layer, (GatedMixture, SquareRootSOP)) or layer.name in ("gap", "avg_pool"))
    results = []

    # Backbone: the model up to the pooling layer's input, gradients for its weights and input.
    trunk = keras.Model(model.inputs, pooling.input)
    images = _random(rng, (batch, *model.input_shape[1:]), scale=50.0)
    trainable = [v.value for v in trunk.trainable_variables]
    non_trainable = [v.value for v in trunk.non_trainable_variables]

    def backbone(x, weights, frozen):
        out = trunk.stateless_call(weights, frozen, x, training=True)[0]
        return ops.sum(ops.square(ops.cast(out, "float32")))

    results.append(("backbone", time_call(compiled_gradient(backbone, (images, trainable, non_trainable), (0, 1)), steps)))

    _, height, width, channels = pooling.input.shape
    positions = height * width
    maps = ops.relu(_random(rng, (batch, positions, channels), 1.0))
    features_dim = channels
    if isinstance(pooling, (GatedMixture, SquareRootSOP)):
        if isinstance(pooling, GatedMixture):
            dims, sop = pooling.component_dims, pooling.component == "sop"
            gated = pooling.gate is not None
            count = pooling.top_k if gated and pooling.top_k < pooling.num_components and pooling.dispatch != "dense" \
                else pooling.num_components
            num = pooling.num_components
        else:
            dims, sop, gated, count, num = pooling.hidden_dims, True, False, 1, 1
        iterations, sqrt_dtype = pooling.num_iterations, pooling.sqrt_dtype
        if gated:
            gate_weights = [_random(rng, (c, w), (2.0 / c) ** 0.5) for c, w in
                            zip((channels,) + pooling.gate_dims[:-1], pooling.gate_dims)]
            gate_features = pooling.gate.gate_kernel.shape[0]
            gate_weights.append(_random(rng, (gate_features, num)))

            def gate(x, weights):
                for kernel in weights[:-1]:
                    x = ops.relu(ops.matmul(x, kernel))
                pooled = square_root_sop(x, iterations, sqrt_dtype) if sop else ops.mean(x, axis=1)
                return ops.sum(ops.square(ops.matmul(pooled, weights[-1])))

            results.append(("gate", time_call(compiled_gradient(gate, (maps, gate_weights), (0, 1)), steps)))
        kernels = [_random(rng, (num, c, w), (2.0 / c) ** 0.5) for c, w in zip((channels,) + tuple(dims[:-1]), dims)]
        indices = ops.convert_to_tensor(np.stack([rng.permutation(num)[:count] for _ in range(batch)]).astype("int32"))

        def dispatch(x, weights, chosen):
            x = x[:, None]
            for kernel in weights:
                x = ops.relu(ops.matmul(x, ops.take(kernel, chosen, axis=0)))  # (B, M, L, h)
            return ops.sum(ops.square(x))

        results.append(("dispatch", time_call(compiled_gradient(dispatch, (maps, kernels, indices), (0, 1)), steps)))
        width_out = dims[-1] if dims else channels
        if sop:
            component_maps = ops.relu(_random(rng, (batch * count, positions, width_out), 1.0))
            results.append(("covariance", time_call(compiled_gradient(
                lambda x: ops.sum(ops.square(covariance(x))), (component_maps,), (0,)), steps)))
            matrices = covariance(component_maps) + 1e-3 * ops.eye(width_out)
            results.append(("square root", time_call(compiled_gradient(
                lambda a: ops.sum(ops.square(newton_schulz_sqrt(a, iterations, compute_dtype=sqrt_dtype))),
                (matrices,), (0,)), steps)))
            mixing = _random(rng, (batch, count), 1.0)

            def vectorise(a, w):
                vectors = ops.reshape(triu_vectorize(a), (batch, count, -1))
                return ops.sum(ops.square(ops.einsum("bk,bkd->bd", w, vectors)))

            results.append(("vectorise", time_call(compiled_gradient(vectorise, (matrices, mixing), (0, 1)), steps)))
        features_dim = pooling.output_dim
    classifier_kernel = _random(rng, (features_dim, num_classes), features_dim ** -0.5)
    features = _random(rng, (batch, features_dim), 1.0)
    labels = ops.convert_to_tensor(rng.integers(0, num_classes, batch).astype("int32"))

    def classifier(f, kernel, y):
        logits = ops.matmul(f, kernel)
        return ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    results.append(("classifier", time_call(compiled_gradient(classifier, (features, classifier_kernel, labels), (0, 1)),
                                            steps)))
    results.append(("optimizer", _optimizer_time(model, steps)))
    return results


def _optimizer_time(model, steps):
    """Seconds of one SGD-with-momentum update of every trainable weight, compiled (JAX: stateless)."""
    import keras

    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    weights = [v.value for v in model.trainable_variables]
    grads = [keras.ops.ones_like(w) * 1e-3 for w in weights]
    state = [v.value for v in optimizer.variables]
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        update = jax.jit(optimizer.stateless_apply)
        return time_call(lambda: jax.block_until_ready(update(state, grads, weights)), steps)
    import tensorflow as tf

    variables = model.trainable_variables  # a throwaway model: updated in place

    @tf.function(jit_compile=True)
    def update():
        optimizer.apply(grads, variables)
        return tf.reduce_sum(variables[-1])  # read after the update: waiting for it waits for the update

    return time_call(lambda: update().numpy(), steps)


def table(results, step_s=None):
    """The breakdown as markdown lines."""
    whole = sum(seconds for _, seconds in results)
    lines = [f"- {LABEL}", "", "| part | ms | share of the parts' sum |", "| --- | ---: | ---: |"]
    lines += [f"| {part} | {1e3 * seconds:.2f} | {100 * seconds / whole:.1f}% |" for part, seconds in results]
    lines.append(f"| sum of the parts | {1e3 * whole:.2f} | 100.0% |")
    if step_s is not None:
        lines.append(f"| a real training step (measured) | {1e3 * step_s:.2f} | - |")
    return "\n".join(lines) + "\n"
