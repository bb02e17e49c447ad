"""FLOPs of a built model's training step, counted analytically per layer, and the devices' dense peaks.

Convention: a multiply-add is 2 FLOPs; only the products are counted (convolutions, dense layers,
the heads' 1x1 convolutions, covariances, the square roots' matrix products, the gate), not the
elementwise work (BatchNorm, ReLU, additions, the square root's trace and `T_k` updates,
vectorisation, softmax, the optimizer), which is a few percent of these for ResNet-18.

Per image, forward, as the code computes it:

- `Conv2D`: `2 H_out W_out k_h k_w C_in C_out`; `Dense`: `2 D_in D_out` (times the positions of a
  higher-rank input). The model's `head_reduce_conv` (512 -> 128) is a `Conv2D` of the backbone part.
- covariance of `L` positions of `d` channels: `2 L d^2` (the full `d x d` product: the code does
  not exploit the symmetry).
- Newton-Schulz square root of a `d x d` matrix, `N` iterations: `3N - 2` products of `2 d^3`.
- `SquareRootSOP`, `ParametricGAP`: their 1x1 convolutions (`2 L C_in C_out` each), then the above.
- `GatedMixture`: the gate (its 1x1 convolutions, SR-SOP or mean, and the gate's dense kernels: the
  noise kernel too, which runs while training), and the components computed per image: `K` for the
  `gather`/`grouped` dispatch (`grouped` also computes at most (B K) / 16 padding rows, not
  counted), all `N` for `dense` and the ungated average.

Training = forward + backward. The backward of every product but the square root is twice its
forward (the input's and the weight's gradient; the covariance's einsum gets one gradient per
operand), so those count 3x forward (the first convolution's unneeded input gradient included).
The square root's analytic backward (`gmsop_keras.ops.matrix_sqrt`) does `7N - 7` products
(`N >= 2`; 2 for `N = 1`): training counts `3N - 2 + 7N - 7` of them.
"""

# Dense (no sparsity) peak TFLOPS of the SXM parts, from NVIDIA's H100 datasheet and H200 product
# page (their tensor-core figures are quoted "with sparsity"; dense is half of those): FP32 (no
# tensor cores) 67, TF32 tensor core 494.7 (989 with sparsity), BF16/FP16 tensor core 989.4 (1979).
DENSE_PEAK_TFLOPS = {
    "H100": {"fp32": 67.0, "tf32": 494.7, "half": 989.4},  # H100 SXM5 80GB (device kind "NVIDIA H100 80GB HBM3")
    "H200": {"fp32": 67.0, "tf32": 494.7, "half": 989.4},  # H200 SXM 141GB
}
PEAK_SOURCE = "NVIDIA H100/H200 SXM datasheets, dense (sparsity figures halved)"


def peak_tflops(device, precision, tf32):
    """(peak TFLOPS, which peak) for a device name, a Keras policy name and TF32 on/off; (None, why) if unknown.

    A mixed policy's peak is the half-precision tensor-core one (an upper bound: parts of the
    model run in float32); float32 with TF32 on is the TF32 one, with TF32 off the FP32 one.
    """
    if "PCIe" in device or "NVL" in device:
        return None, "peak unknown (not an SXM part)"
    part = next((name for name in DENSE_PEAK_TFLOPS if name in device), None)
    if part is None:
        return None, "peak unknown"
    kind = "half" if precision.startswith("mixed") else ("tf32" if tf32 else "fp32")
    label = {"half": "bf16/fp16 dense", "tf32": "tf32 dense", "fp32": "fp32"}[kind]
    return DENSE_PEAK_TFLOPS[part][kind], f"{part} {label}"


def sqrt_products(num_iterations):
    """(forward, backward) count of `d x d` matrix products of one Newton-Schulz square root."""
    backward = 2 if num_iterations == 1 else 7 * num_iterations - 7
    return 3 * num_iterations - 2, backward


def sop_flops(positions, dim, num_iterations):
    """{part: (forward, training)} of one SR-SOP of `positions` x `dim`: covariance and square root."""
    covariance = 2 * positions * dim * dim
    forward, backward = sqrt_products(num_iterations)
    product = 2 * dim**3
    return {"covariance": (covariance, 3 * covariance),
            "square root": (forward * product, (forward + backward) * product)}


def count_flops(model):
    """{part: (forward, training)} FLOPs per image of a built Keras model, and the layers not counted.

    Parts: backbone, gate, dispatch (the components' 1x1 convolutions), covariance, square root,
    classifier.
    """
    parts, skipped = {}, []
    for layer in _leaf_layers(model):
        for part, (forward, training) in _layer_flops(layer, skipped).items():
            old = parts.get(part, (0, 0))
            parts[part] = (old[0] + forward, old[1] + training)
    return parts, skipped


def total(parts, index=1):
    """Sum over the parts: training FLOPs (index 1) or forward (index 0)."""
    return sum(value[index] for value in parts.values())


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and type(layer).__name__ in ("Functional", "Sequential", "Model"):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _positions(shape):
    size = 1
    for side in shape[1:-1]:
        size *= side
    return size


def _conv(layer):
    kernel = layer.kernel.shape  # (kh, kw, C_in / groups, C_out)
    forward = 2 * _positions(layer.output.shape) * kernel[0] * kernel[1] * kernel[2] * kernel[3]
    return forward


def _layer_flops(layer, skipped):
    from gmsop_keras.layers import GatedMixture, ParametricGAP, SquareRootSOP

    kind = type(layer).__name__
    if kind == "Conv2D":
        forward = _conv(layer)
        return {"backbone": (forward, 3 * forward)}
    if kind == "Dense":
        forward = 2 * _positions(layer.input.shape) * layer.kernel.shape[0] * layer.kernel.shape[1]
        return {"classifier": (forward, 3 * forward)}
    if isinstance(layer, SquareRootSOP):
        positions, channels = _positions(layer.input.shape), layer.input.shape[-1]
        convs, dims = 0, list(layer.hidden_dims)
        for width in dims:
            convs += 2 * positions * channels * width
            channels = width
        return {"dispatch": (convs, 3 * convs), **sop_flops(positions, channels, layer.num_iterations)}
    if isinstance(layer, ParametricGAP):
        forward = 2 * _positions(layer.input.shape) * layer.kernel.shape[0] * layer.kernel.shape[1]
        return {"dispatch": (forward, 3 * forward)}
    if isinstance(layer, GatedMixture):
        return _mixture_flops(layer)
    if kind not in ("InputLayer", "Normalization", "BatchNormalization", "ReLU", "Add", "Dropout",
                    "GlobalAveragePooling2D", "Activation", "MaxPooling2D", "ZeroPadding2D"):
        skipped.append(f"{layer.name} ({kind})")
    return {}


def _mixture_flops(layer):
    positions, channels = _positions(layer.input.shape), layer.input.shape[-1]
    parts = {}

    def add(part, forward, training):
        old = parts.get(part, (0, 0))
        parts[part] = (old[0] + forward, old[1] + training)

    def component(widths, count, part):
        c, convs = channels, 0
        for width in widths:
            convs += 2 * positions * c * width
            c = width
        add(part, count * convs, 3 * count * convs)
        if layer.component == "sop":
            for name, (forward, training) in sop_flops(positions, c, layer.num_iterations).items():
                add(name if part == "dispatch" else part, count * forward, count * training)

    if layer.gate is not None:
        component(layer.gate_dims, 1, "gate")
        features = layer.gate.gate_kernel.shape[0]
        kernels = 2 if layer.noise != "none" else 1
        add("gate", 2 * features * layer.num_components, 3 * 2 * features * layer.num_components * kernels)
    gathered = layer.top_k is not None and layer.top_k < layer.num_components and layer.dispatch != "dense"
    component(layer.component_dims, layer.top_k if gathered else layer.num_components, "dispatch")
    return parts
