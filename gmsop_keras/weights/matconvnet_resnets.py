"""The official GM-SOP MatConvNet models (DagNN) -> this library's models, layer by layer.

`convert_dagnn` builds the model by name (`build_model`) with the official preset's switches
(`gmsop_keras.models.presets`: BatchNorm momentum 0.7, the gate's raw input and constant
start, the representation BatchNorm's gamma 1) and the two switches that reproduce
MatConvNet's computation, `conv1_bias=True` and `symmetric_padding=True` (MatConvNet pads a 3x3
stride-2 convolution by 1 on every side; Keras' `"same"` pads 0 before, 1 after). Then it copies
every param of the file (`gmsop_keras.weights.matconvnet_dagnn`) into the layer that computes
the same thing:

| DagNN (cnn_init_resnet_GM.m)                  | Keras                                              |
| --------------------------------------------- | -------------------------------------------------- |
| `conv1_conv` `conv1_f`, `conv1_b`; `conv1_bn` | backbone `conv1_conv` (kernel, bias), `conv1_bn`    |
| `conv{s}_{l}a_conv` / `_bn`                   | `conv{s}_block{l}_1_conv` / `_1_bn`                 |
| `conv{s}_{l}b_conv` / `_bn`                   | `conv{s}_block{l}_2_conv` / `_2_bn`                 |
| `conv{s}_1_adapt_conv_conv` / `_bn`           | `conv{s}_block1_0_conv` / `_0_bn` (the shortcut)    |
| `gating{i}_conv` / `_bn`                      | `mixture` `gate_conv_{i-1}` / `gate_bn_{i-1}`       |
| `H_x` `gating_w`, `gating_noise_w`            | `mixture` gate `gate_kernel`, `noise_kernel`        |
| `CM_{b}_a_conv` `CM_{b}_a_f`                  | `mixture` `component_kernel_0[b-1]`                 |
| `fusion_bn`                                   | `representation_bn`                                 |
| `prediction` `prediction_f`, `prediction_b`   | `logits`                                            |

Filters are `H x W x Cin x Cout` in both. A BatchNorm's moments `[mean, sigma]` hold
`sigma = sqrt(variance + 1e-5)` from training, and MatConvNet applies them at test as
`g (x - mean) / sigma + b` without adding epsilon again (`vl_nnbnorm` with `'moments'`); Keras
computes `(x - mean) / sqrt(moving_variance + epsilon)`, so `moving_variance = sigma^2 - epsilon`
(the model keeps Keras' epsilon 1e-5; clipped at 0, which no trained sigma reaches). The model's
input is the raw image; its normalisation subtracts the file's `meta.normalization.averageImage`
(the training set's RGB mean) and divides by 1, as the official `getDagNNBatch`.
"""

import numpy as np

from gmsop_keras.models.build import build_model
from gmsop_keras.models.names import parse_head
from gmsop_keras.models.options import MODEL_OPTIONS_BY_NAME
from gmsop_keras.models.presets import preset_values
from gmsop_keras.weights.matconvnet_dagnn import param


def official_build_options(backbone, head):
    """`build_model`'s switches for an official model: the official preset's, and MatConvNet's padding and bias."""
    options = preset_values("official", backbone, head)
    options = {key: value for key, value in options.items() if key in MODEL_OPTIONS_BY_NAME}
    return dict(options, conv1_bias=True, symmetric_padding=True)


def convert_dagnn(dag, backbone, head, num_classes, image_size, mean):
    """A `keras.Model` with the weights of `dag` (checked with `check_architecture` first).

    Returns:
        `(model, count)`: the model (raw RGB images in, logits out) and how many params of the
        file were loaded.
    """
    spec = parse_head(head)
    model = build_model(backbone, head, num_classes=num_classes, input_shape=(image_size, image_size, 3),
                        mean=tuple(mean), std=(1.0, 1.0, 1.0), **official_build_options(backbone, head))
    trunk = model.get_layer(backbone)
    loaded = set()

    def take(name, shape):
        loaded.add(name)
        return param(dag, name, shape)

    def conv(layer, name, bias=False):
        kernel = layer.kernel
        values = [take(f"{name}_f", tuple(kernel.shape))]
        if bias:
            values.append(take(f"{name}_b", (kernel.shape[-1],)))
        layer.set_weights(values)

    def batch_norm(layer, name):
        width = layer.gamma.shape[0]
        moments = take(f"{name}_m", (width, 2))
        variance = np.maximum(np.square(moments[:, 1].astype(np.float64)) - layer.epsilon, 0.0)
        layer.set_weights([take(f"{name}_w", (width,)), take(f"{name}_b", (width,)), moments[:, 0],
                           variance.astype(np.float32)])

    conv(trunk.get_layer("conv1_conv"), "conv1", bias=True)
    batch_norm(trunk.get_layer("conv1_bn"), "conv1_bn")
    stage = 2
    while _has(trunk, f"conv{stage}_block1_1_conv"):
        block = 1
        while _has(trunk, f"conv{stage}_block{block}_1_conv"):
            keras_name, name = f"conv{stage}_block{block}", f"conv{stage}_{block}"
            if _has(trunk, f"{keras_name}_0_conv"):
                conv(trunk.get_layer(f"{keras_name}_0_conv"), f"{name}_adapt_conv")
                batch_norm(trunk.get_layer(f"{keras_name}_0_bn"), f"{name}_adapt_conv_bn")
            for part, letter in ((1, "a"), (2, "b")):
                conv(trunk.get_layer(f"{keras_name}_{part}_conv"), f"{name}{letter}")
                batch_norm(trunk.get_layer(f"{keras_name}_{part}_bn"), f"{name}{letter}_bn")
            block += 1
        stage += 1

    mixture = model.get_layer("mixture")
    for index, (gate_conv, gate_norm) in enumerate(zip(mixture.gate_convs, mixture.gate_norms), start=1):
        conv(gate_conv, f"gating{index}")
        batch_norm(gate_norm, f"gating{index}_bn")
    gate_shape = tuple(mixture.gate.gate_kernel.shape)
    mixture.gate.gate_kernel.assign(take("gating_w", gate_shape))
    mixture.gate.noise_kernel.assign(take("gating_noise_w", gate_shape))
    (kernel,) = mixture.component_kernels
    _, channels, width = kernel.shape
    kernel.assign(np.stack([take(f"CM_{b}_a_f", (1, 1, channels, width))[0, 0]
                            for b in range(1, spec.num_components + 1)]))
    batch_norm(model.get_layer("representation_bn"), "fusion_bn_bn")
    logits = model.get_layer("logits")
    logits.set_weights([take("prediction_f", (1, 1) + tuple(logits.kernel.shape))[0, 0],
                        take("prediction_b", (num_classes,))])
    unread = sorted(set(dag.params) - loaded)
    if unread:  # check_architecture allows no param-carrying layer beyond the official ones
        raise ValueError(f"params of the file left unread: {', '.join(unread[:5])}")
    return model, len(loaded)


def _has(model, name):
    return any(layer.name == name for layer in model.layers)

