"""Reading a MatConvNet DagNN `.mat` (the official GM-SOP models) and checking its architecture.

The official trainer (`examples/cnn_train_GM_dag.m`) saves `net = net_.saveobj(); save(f, 'net',
'state')` in MATLAB's default v7 format: `net` is the plain structure of
`dagnn.DagNN.saveobj` (`layers`: name, type, inputs, outputs, params, block; `params`: name,
value, learningRate, weightDecay; `vars`; `meta`). Values keep MatConvNet's layouts:
convolution filters `H x W x Cin x Cout` (the rows first, as Keras' kernels), biases and
BatchNorm multipliers / offsets `C x 1`, BatchNorm moments `C x 2` `[mean, sigma]` with
`sigma = sqrt(variance + epsilon)` already. `official_layers` lists the layers that
`examples/GM/cnn_init_resnet_GM.m` builds, and `check_architecture` refuses a file whose
layers differ, naming the first. SciPy and NumPy only: no Keras or TensorFlow.
"""

import dataclasses
import zlib

import numpy as np
import scipy.io

from gmsop_keras.training.errors import UsageError
from pipelines import storage

# Layers that carry no computation at test time: neither required nor refused.
LAYER_FIELDS = ("name", "type", "inputs", "outputs", "params", "block")  # dagnn.DagNN.saveobj's
TRAINING_ONLY_TYPES = ("dagnn.Loss", "dagnn.Balance_loss", "dagnn.DropOut")
GAP_COMPONENT_WIDTH = 512  # cnn_init_resnet_GM.m: CM_dim = 512 for 'ResNet18-GM-GAP'
GATE_WIDTHS = (256, 128)  # gating_dim1, gating_dim2
SECTION_LENGTHS = {"resnet18": 2}  # cnn_imagenet64.m: opts.sectionLen for 'ResNet18-GM-GAP'


@dataclasses.dataclass
class DagLayer:
    name: str
    type: str
    inputs: list
    outputs: list
    params: list
    block: dict


@dataclasses.dataclass
class DagNN:
    layers: list  # DagLayer, in the file's order
    params: dict  # name -> float32 array, MatConvNet's layout
    meta: dict  # the file's `meta` as nested dicts

    def layer(self, name):
        return next((layer for layer in self.layers if layer.name == name), None)


@dataclasses.dataclass
class Expected:
    """A layer as the official script builds it: type, params (name -> shape) and block fields."""

    name: str
    type: str
    params: dict
    block: dict


def read_dagnn(path):
    """The DagNN saved as `net` in a `.mat` file; raises `UsageError` (one line) for anything else."""
    if not storage.isfile(path):
        raise UsageError(f"model file not found: {path}")
    try:
        with storage.local_path(path) as local:
            contents = scipy.io.loadmat(local, squeeze_me=False, struct_as_record=True)
    except NotImplementedError:  # scipy: "Please use HDF reader for matlab v7.3 files"
        raise UsageError(f"{path} is a MATLAB v7.3 (HDF5) file: load it in MATLAB and save it again with "
                         "save(f, 'net', '-v7')") from None
    except (ValueError, TypeError, OSError, zlib.error, scipy.io.matlab.MatReadError) as error:
        cause = (str(error).splitlines() or [type(error).__name__])[0]
        raise UsageError(f"cannot read {path} as a MATLAB .mat file ({cause}): give the .mat file of a "
                         "MatConvNet DagNN model") from None
    if "net" not in contents:
        names = ", ".join(k for k in contents if not k.startswith("__")) or "none"
        raise UsageError(f"{path} holds no variable `net` (it holds: {names}): give the model file the official "
                         "trainer saved (save(f, 'net', 'state'))")
    net = _unwrap(contents["net"])
    not_dagnn = (f"{path}: `net` is not a MatConvNet DagNN saved by saveobj (it needs structure arrays layers "
                 "(name, type, inputs, outputs, params, block) and params (name, value); a SimpleNN model is "
                 "not supported)")
    if not _has_fields(net, ("layers", "params")):
        raise UsageError(not_dagnn)
    if not (_has_fields(net["layers"], LAYER_FIELDS) and _has_fields(net["params"], ("name", "value"))):
        raise UsageError(not_dagnn)
    layers = [
        DagLayer(_string(layer["name"]), _string(layer["type"]), _strings(layer["inputs"]),
                 _strings(layer["outputs"]), _strings(layer["params"]), _record(layer["block"]))
        for layer in np.ravel(net["layers"])
    ]
    params = {}
    for entry in np.ravel(net["params"]):
        name = _string(entry["name"])
        try:
            params[name] = np.asarray(_unwrap(entry["value"]), dtype=np.float32)
        except (ValueError, TypeError):
            raise UsageError(f"{path}: the value of param {name!r} is not a numeric array") from None
    meta = _record(net["meta"]) if "meta" in net.dtype.names else {}
    return DagNN(layers, params, meta)


def _has_fields(value, names):
    fields = getattr(getattr(value, "dtype", None), "names", None) or ()
    return all(name in fields for name in names)


def official_layers(backbone, head_spec, num_classes, image_size=64):
    """The layers `cnn_init_resnet_GM.m` builds for `'ResNet18-GM-GAP'` (order 1), in its order."""
    layers, depth = [], 3

    def conv(name, ksize, width, downsample=False, bias=False, relu=True, bn=True):
        nonlocal depth
        params = {f"{name}_f": (ksize, ksize, depth, width)}
        if bias:
            params[f"{name}_b"] = (width, 1)
        conv_name = f"{name}_conv"
        layers.append(Expected(conv_name, "dagnn.Conv", params,
                               dict(stride=2 if downsample else 1, pad=(ksize - 1) // 2)))
        if bn:
            layers.append(Expected(f"{name}_bn", "dagnn.BatchNorm",
                                   {f"{name}_bn_w": (width, 1), f"{name}_bn_b": (width, 1),
                                    f"{name}_bn_m": (width, 2)}, {}))
        if relu:
            layers.append(Expected(f"{name}_relu", "dagnn.ReLU", {}, {}))
        depth = width

    conv("conv1", 3, 16, bias=True)
    for s in range(2, 6):
        width = 2 ** (s + 2)
        for index in range(1, SECTION_LENGTHS[backbone] + 1):
            name, block_input = f"conv{s}_{index}", depth
            if index == 1 and s > 2:
                conv(f"{name}_adapt_conv", 1, width, downsample=True, relu=False)  # order 1: stage 5 too
            depth = block_input
            conv(f"{name}a", 3, width, downsample=index == 1 and s > 2)
            conv(f"{name}b", 3, width, relu=False)
            layers.append(Expected(f"{name}_sum", "dagnn.Sum", {}, {}))
            layers.append(Expected(f"{name}_relu", "dagnn.ReLU", {}, {}))
    trunk_width, pool = depth, image_size // 8
    gap = dict(poolSize=(pool, pool), method="avg")
    for index, width in enumerate(GATE_WIDTHS, start=1):
        conv(f"gating{index}", 1, width)
    num, top_k = head_spec.num_components, head_spec.top_k
    layers.append(Expected("gating_GAP", "dagnn.Pooling", {}, gap))
    gate_shape = (GATE_WIDTHS[-1], num)
    layers.append(Expected("H_x", "dagnn.H_x", {"gating_w": gate_shape, "gating_noise_w": gate_shape},
                           dict(CM_num=num, topk=top_k)))
    layers.append(Expected("gating", "dagnn.gating", {}, dict(CM_num=num, topk=top_k)))
    for b in range(1, num + 1):
        depth = trunk_width
        conv(f"CM_{b}_a", 1, GAP_COMPONENT_WIDTH, bn=False)
        layers.append(Expected(f"CM_{b}_GAP", "dagnn.Pooling", {}, gap))
    layers.append(Expected("Fusion_out", "dagnn.CM_out", {}, dict(CM_num=num, topk=top_k)))
    width = GAP_COMPONENT_WIDTH
    layers.append(Expected("fusion_bn", "dagnn.BatchNorm", {"fusion_bn_bn_w": (width, 1), "fusion_bn_bn_b": (width, 1),
                                                             "fusion_bn_bn_m": (width, 2)}, {}))
    layers.append(Expected("prediction", "dagnn.Conv",
                           {"prediction_f": (1, 1, width, num_classes), "prediction_b": (num_classes, 1)},
                           dict(stride=1, pad=0)))
    return layers


def check_architecture(dag, expected, path):
    """Raises `UsageError` naming the first layer of `dag` that differs from `expected` (official order)."""
    hint = "it is not the model named by --model and --head"
    for want in expected:
        layer = dag.layer(want.name)
        where = f"{path}: layer {want.name!r}"
        if layer is None:
            raise UsageError(f"{where} ({want.type}) is missing: {hint}")
        if layer.type != want.type:
            raise UsageError(f"{where} is a {layer.type}, expected a {want.type}: {hint}")
        if list(layer.params) != list(want.params):
            raise UsageError(f"{where} has params {layer.params}, expected {list(want.params)}: {hint}")
        for name, shape in want.params.items():
            value = dag.params.get(name)
            if value is None:
                raise UsageError(f"{where}: its param {name!r} has no value in the file: {hint}")
            if _squeezed(value.shape) != _squeezed(shape):
                raise UsageError(f"{where}: param {name!r} has shape {_matlab(value.shape)}, expected "
                                 f"{_matlab(shape)}: {hint}")
        for field, value in want.block.items():
            try:
                found = _block_value(layer.block.get(field), value)
            except (ValueError, TypeError):
                found = "unreadable"
            if found != value:
                raise UsageError(f"{where} has {field} {found}, expected {value}: {hint}")
    known = {want.name for want in expected}
    for layer in dag.layers:
        if layer.name not in known and layer.type not in TRAINING_ONLY_TYPES:
            raise UsageError(f"{path}: layer {layer.name!r} ({layer.type}) is not in the official model: {hint}")


def param(dag, name, shape):
    """A param's value in `shape` (MATLAB drops trailing singleton dimensions; the checks allow it)."""
    return np.reshape(dag.params[name], shape)


def _block_value(raw, like):
    """A block field as the type of the expected value: stride/pad/topk an int, poolSize a tuple, method a str."""
    if raw is None:
        return None
    if isinstance(like, str):
        return _string(raw)
    values = tuple(int(v) for v in np.ravel(_unwrap(raw)))
    if isinstance(like, tuple):
        return values
    return values[0] if values and len(set(values)) == 1 else values  # MatConvNet's pad [t b l r], stride [h w]


def _squeezed(shape):
    return tuple(d for d in shape if d != 1)


def _matlab(shape):
    return "x".join(str(d) for d in shape)


def _unwrap(value):
    """The element of MATLAB's 1x1 cells and structures (object arrays of one element)."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, np.ndarray) and value.dtype.names is not None and value.size == 1:
        return value.reshape(-1)[0]
    return value


def _string(value):
    value = _unwrap(value)
    if isinstance(value, np.ndarray):
        return "".join(np.ravel(value).astype(str)) if value.size else ""
    return str(value)


def _strings(value):
    """A cell array of strings (or one string) as a list."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_string(v) for v in np.ravel(value)]
    text = _string(value)
    return [text] if text else []


def _record(value):
    """A MATLAB structure as a dict of its fields (nested structures as dicts); anything else: {}."""
    value = _unwrap(value)
    if getattr(getattr(value, "dtype", None), "names", None) is None:
        return {}
    fields = {name: _unwrap(value[name]) for name in value.dtype.names}
    return {name: _record(v) if getattr(getattr(v, "dtype", None), "names", None) else v for name, v in fields.items()}
