"""An official GM-GAP DagNN as `cnn_init_resnet_GM.m` builds it, saved as `saveobj` does, and its NumPy forward.

Written from the official code (github.com/ZilinGao/GM-SOP 5922792: `examples/GM/cnn_init_resnet_GM.m`,
`matlab/+dagnn/{Conv,BatchNorm,Pooling,H_x,gating,CM_out}.m`) and MatConvNet's (vlfeat/matconvnet
1e5ae7b: `dagnn.DagNN.saveobj`, `vl_nnconv`, `vl_nnbnorm`, `vl_nnpool`), independently of
`gmsop_keras.weights`: `forward` interprets the file's layer list by type in float64, as MatConvNet
runs a DagNN in `'test'` mode.
"""

import numpy as np
import scipy.io

EPSILON = 1e-5  # dagnn.BatchNorm's epsilon, folded into the saved sigma


def official_layers(num_components=16, top_k=8, num_classes=10, image_size=64, stage5_stride=2):
    """`(layers, param shapes)`: dicts name/type/inputs/outputs/params/block, in the script's order."""
    layers, shapes = [], {}
    last = {"var": "input", "depth": 3}

    def add(name, type_, inputs, outputs, params=(), **block):
        layers.append(dict(name=name, type=f"dagnn.{type_}", inputs=list(np.atleast_1d(inputs)),
                           outputs=[outputs], params=list(params), block=block))

    def conv(name, ksize, depth, relu=True, downsample=False, bias=False, bn=True):
        stride = 2 if downsample is True else (downsample or 1)
        pars = [f"{name}_f", f"{name}_b"] if bias else [f"{name}_f"]
        shapes[f"{name}_f"] = (ksize, ksize, last["depth"], depth)
        if bias:
            shapes[f"{name}_b"] = (depth, 1)
        pad = (ksize - 1) // 2
        add(f"{name}_conv", "Conv", last["var"], f"{name}_conv", pars, size=[ksize, ksize, last["depth"], depth],
            hasBias=bias, stride=[stride, stride], pad=[pad] * 4, dilate=[1, 1], opts=[])
        last["var"] = f"{name}_conv"
        if bn:
            add(f"{name}_bn", "BatchNorm", last["var"], f"{name}_bn", [f"{name}_bn_{p}" for p in "wbm"],
                numChannels=depth, epsilon=EPSILON, opts=["NoCuDNN"])
            shapes.update({f"{name}_bn_w": (depth, 1), f"{name}_bn_b": (depth, 1), f"{name}_bn_m": (depth, 2)})
            last["var"] = f"{name}_bn"
        last["depth"] = depth
        if relu:
            add(f"{name}_relu", "ReLU", last["var"], f"{name}_relu", leak=0)
            last["var"] = f"{name}_relu"

    conv("conv1", 3, 16, bias=True)
    for s in range(2, 6):
        for index in (1, 2):
            name, section_input, depth = f"conv{s}_{index}", dict(last), 2 ** (s + 2)
            if index == 1 and s > 2:
                conv(f"{name}_adapt_conv", 1, depth, downsample=stage5_stride if s == 5 else True, relu=False)
            sum_input = last["var"]
            last.update(section_input)
            conv(f"{name}a", 3, depth, downsample=(stage5_stride if s == 5 else True) if index == 1 and s > 2 else False)
            conv(f"{name}b", 3, depth, relu=False)
            add(f"{name}_sum", "Sum", [sum_input, last["var"]], f"{name}_sum")
            add(f"{name}_relu", "ReLU", f"{name}_sum", name, leak=0)
            last["var"] = name
    trunk = dict(last)
    pool = [image_size // (8 if stage5_stride == 2 else 4)] * 2  # the last map: one window
    conv("gating1", 1, 256)
    conv("gating2", 1, 128)
    add("gating_GAP", "Pooling", last["var"], "gating_GAP", method="avg", poolSize=pool, pad=[0] * 4, stride=[1, 1])
    shapes.update({"gating_w": (128, num_components), "gating_noise_w": (128, num_components)})
    add("H_x", "H_x", "gating_GAP", "H_x", ["gating_w", "gating_noise_w"], size=[128, num_components],
        CM_num=num_components, topk=top_k, f_size=[1, 1], dim_in=128, hasBias=False)
    add("gating", "gating", "H_x", "gating", size=[128, num_components], CM_num=num_components, topk=top_k)
    add("Balance_loss", "Balance_loss", "gating", "Balance_loss", loss_weight=100, CM_num=num_components)
    for b in range(1, num_components + 1):
        last.update(trunk)
        conv(f"CM_{b}_a", 1, 512, bn=False)
        add(f"CM_{b}_GAP", "Pooling", last["var"], f"CM_{b}_GAP", method="avg", poolSize=pool, pad=[0] * 4,
            stride=[1, 1])
    add("Fusion_out", "CM_out", ["gating"] + [f"CM_{b}_GAP" for b in range(1, num_components + 1)], "Fusion_out",
        CM_num=num_components, hdim=512, topk=top_k)
    add("fusion_bn", "BatchNorm", "Fusion_out", "fusion_bn", ["fusion_bn_bn_w", "fusion_bn_bn_b", "fusion_bn_bn_m"],
        numChannels=512, epsilon=EPSILON, opts=["NoCuDNN"])
    shapes.update({"fusion_bn_bn_w": (512, 1), "fusion_bn_bn_b": (512, 1), "fusion_bn_bn_m": (512, 2)})
    add("dropout", "DropOut", "fusion_bn", "dropout", rate=0.2)
    add("prediction", "Conv", "dropout", "prediction", ["prediction_f", "prediction_b"],
        size=[1, 1, 512, num_classes], hasBias=True, stride=[1, 1], pad=[0] * 4, dilate=[1, 1], opts=[])
    shapes.update({"prediction_f": (1, 1, 512, num_classes), "prediction_b": (num_classes, 1)})
    add("loss", "Loss", ["prediction", "label"], "objective", loss="softmaxlog")
    return layers, shapes


def random_params(layers, shapes, calibration_images, mean, seed=0):
    """Params as the official init (He-normal, conv1 / 60), BatchNorm moments from a batch (as training leaves them)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in shapes.items():
        if name.endswith("_bn_m"):
            continue
        if name.endswith("_bn_w"):
            params[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("_bn_b", "_b")):
            params[name] = rng.normal(0.0, 0.1, shape)
        elif name in ("gating_w", "gating_noise_w"):
            params[name] = rng.normal(0.0, 1.0, shape)
        else:
            params[name] = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:3])), shape)
    params["conv1_f"] /= 60.0  # cnn_init_resnet_GM.m's trick: the input is not divided by a deviation
    forward(layers, params, calibration_images, mean, calibrate=True)  # fills the BatchNorm moments
    return {name: value.astype(np.float32) for name, value in params.items()}


def forward(layers, params, images, mean, calibrate=False, variable="prediction"):
    """Logits `(B, classes)` (or another `variable`) of raw images `(B, H, W, 3)`, float64.

    `calibrate`: set every BatchNorm's moments from the batch, `[mean, sqrt(variance + epsilon)]`.
    """
    values = {"input": np.asarray(images, np.float64) - np.asarray(mean, np.float64)}
    for layer in layers:
        kind, block = layer["type"].split(".")[1], layer["block"]
        inputs = [values.get(name) for name in layer["inputs"]]
        p = [np.asarray(params[name], np.float64) if name in params else None for name in layer["params"]]
        if kind == "Conv":
            out = _conv(inputs[0], p[0], block["stride"][0], block["pad"][0])
            out = out + p[1].reshape(-1) if block["hasBias"] else out
        elif kind == "BatchNorm":
            if calibrate:
                axes = tuple(range(inputs[0].ndim - 1))
                sigma = np.sqrt(inputs[0].var(axis=axes) + EPSILON)
                params[layer["params"][2]] = np.stack([inputs[0].mean(axis=axes), sigma], axis=1)
                p[2] = params[layer["params"][2]]
            out = p[0].reshape(-1) * (inputs[0] - p[2][:, 0]) / p[2][:, 1] + p[1].reshape(-1)  # no epsilon
        elif kind == "ReLU":
            out = np.maximum(inputs[0], 0.0)
        elif kind == "Sum":
            out = inputs[0] + inputs[1]
        elif kind == "Pooling":
            assert list(block["poolSize"]) == list(inputs[0].shape[1:3])  # one window: the mean
            out = inputs[0].mean(axis=(1, 2), keepdims=True)  # 1 x 1 x C x B in MatConvNet
        elif kind == "H_x":
            out = inputs[0].reshape(len(inputs[0]), -1) @ p[0]  # wg' x; no noise at test
        elif kind == "gating":
            out = _top_k_softmax(inputs[0], block["topk"])
        elif kind == "CM_out":
            weights, components = inputs[0], np.stack(inputs[1:], axis=1)  # (B, N), (B, N, 1, 1, D)
            out = np.einsum("bn,bnhwd->bhwd", weights, components)
        else:  # DropOut, Loss, Balance_loss: identity or nothing at test
            out = inputs[0]
        values[layer["outputs"][0]] = out
    return values[variable].reshape(len(images), -1)


def gate_margin(layers, params, images, mean):
    """The smallest gap between a sample's K-th and (K+1)-th gate logit (ties would make selection arbitrary)."""
    logits = forward(layers, params, images, mean, variable="H_x")
    top_k = [layer for layer in layers if layer["name"] == "gating"][0]["block"]["topk"]
    ordered = -np.sort(-logits, axis=1)
    return float(np.min(ordered[:, top_k - 1] - ordered[:, top_k]))


def _top_k_softmax(logits, top_k):
    """gating.m: keep H >= the K-th largest, softmax over those (the others get 0)."""
    threshold = -np.sort(-logits, axis=1)[:, top_k - 1 : top_k]
    masked = np.where(logits >= threshold, logits, -np.inf)
    e = np.exp(masked - masked.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _conv(x, f, stride, pad):
    """vl_nnconv: correlation with filters (H, W, Cin, Cout), zero padding `pad` on every side, then `stride`."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = f.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("bhwcij,ijck->bhwk", windows, f)


def save_dagnn(path, layers, params, mean, image_size=64):
    """`net = net_.saveobj(); save(f, 'net', 'state')`: the structure arrays of `saveobj`, MATLAB's v7 file."""
    def cell(strings):
        array = np.empty((1, len(strings)), dtype=object)
        array[0, :] = strings
        return array if strings else np.zeros((0, 0), dtype=object)

    layer_array = np.empty((1, len(layers)), dtype=[(f, object) for f in
                                                    ("name", "type", "inputs", "outputs", "params", "block")])
    for i, layer in enumerate(layers):
        block = {k: (np.asarray(v, dtype=np.float64).reshape(1, -1) if isinstance(v, list) and v
                     and not isinstance(v[0], str) else cell(v) if isinstance(v, list) else v)
                 for k, v in layer["block"].items()}
        layer_array[0, i] = (layer["name"], layer["type"], cell(layer["inputs"]), cell(layer["outputs"]),
                             cell(layer["params"]), block)
    param_array = np.empty((1, len(params)), dtype=[(f, object) for f in
                                                    ("name", "value", "learningRate", "weightDecay")])
    for i, (name, value) in enumerate(params.items()):
        param_array[0, i] = (name, np.asarray(value, np.float32), 1.0, 1.0)
    variables = sorted({name for layer in layers for name in layer["inputs"] + layer["outputs"]})
    var_array = np.empty((1, len(variables)), dtype=[("name", object), ("precious", object)])
    for i, name in enumerate(variables):
        var_array[0, i] = (name, False)
    meta = {"normalization": {"imageSize": np.array([[image_size, image_size, 3]], np.float64),
                              "averageImage": np.asarray(mean, np.float64).reshape(3, 1)},
            "inputSize": cell(["input", np.array([[image_size, image_size, 3, 32]], np.float64)]),
            "trainOpts": {"learningRate": np.full((1, 75), 0.075), "batchSize": 256.0}}
    net = {"vars": var_array, "params": param_array, "layers": layer_array, "meta": meta}
    state = {"solverState": cell([])}
    scipy.io.savemat(path, {"net": net, "state": state})
