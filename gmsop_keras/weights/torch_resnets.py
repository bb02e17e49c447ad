"""The authors' PyTorch checkpoints -> the weights of this project's ImageNet models.

Every weight of a model built by `build_imagenet_model` (or by `build_model`
with one of its names: the trunk nested, the head beside it) is read from one
tensor of a PyTorch `state_dict` with the authors' names:

- torchvision's ResNet-50 and the backbone of every model: `conv1`, `bn1`,
  `layer{1-4}.{block}.conv{1-3}` / `bn{1-3}` / `downsample.0` / `downsample.1`,
  `fc`;
- iSQRT-COV (fast-MPN-COV's `mpncovresnet50`) and GSoP-Net2: `layer_reduce`,
  `layer_reduce_bn`;
- GSoP-Net: `layer{s}.{last}.conv_for_DR`, `bn_for_DR`, `row_bn`,
  `row_conv_group`, `fc_adapt_channels`;
- 3G-Net: `AtMp{1-3}.map1` / `bn1`, `map2` / `bn2`, `map21` / `bn21`, `map3` /
  `bn3`, `map4` / `bn4`, `atmap1` / `bnat1`, `atmap2`, `atmap3`;
- Gaussian pooling: `pool1` (stem), `pool` (after the stem), and
  `layer{2-4}.0.pooling`, each with `ToHidden.1` / `ToHidden.2`, `ToMean.0` /
  `ToMean.1`, `ToSigma.0` / `ToSigma.1`.

Layouts: convolutions OIHW -> HWIO, linear layers and 1x1 convolutions of a
1x1 map transposed, BatchNorm `weight`, `bias`, `running_mean`,
`running_var` -> `gamma`, `beta`, `moving_mean`, `moving_variance`
(`num_batches_tracked` is read and dropped), GSoP's row-wise grouped
convolution `(d * m, 1, d, 1)` -> `(d, d, m)`, 3G's `atmap3` (a 1x1
convolution of one channel) -> the stage's scalar. GSoP-Net2 and 3G-Net
vectorise the upper triangle column by column, this project row by row
(as fast-MPN-COV): their classifier's columns are re-ordered.

A checkpoint that does not fit (a tensor missing, one left over, or one of
another shape) is refused with the list of each.

Reading a `.pth` file: `gmsop_keras.weights.torch_checkpoint`.
"""

import re

import keras
import numpy as np

from gmsop_keras.layers.gaussian_pooling_2d import GaussianPooling2D
from gmsop_keras.layers.generalized_gaussian_reweighting import GeneralizedGaussianReweighting
from gmsop_keras.layers.gsop_block import GSoPBlock
from gmsop_keras.models.build import build_model
from gmsop_keras.models.imagenet_resnets import IMAGENET_MODELS, build_imagenet_model
from gmsop_keras.weights.torch_checkpoint import CheckpointMismatchError, unwrap_state_dict

# Models whose authors vectorise the upper triangle column by column (GSoP's `Triuvec`, 3G's
# `triu_forward`); fast-MPN-COV (iSQRT-COV) uses the row-major order, as this project does.
COLUMN_MAJOR_TRIANGLE = ("gsop2-resnet50", "resnet50-3g")
BN_NAMES = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))
LISTED = 12  # names listed per kind of mismatch in an error


def triangle_permutation(dim):
    """`perm` with `row_major = column_major[perm]` for the upper triangle of a symmetric `dim x dim` matrix.

    The authors' column-major vector lists `x[r, c]` for `c <= r` row by row
    (the lower triangle), that is the upper triangle `(c, r)` column by column.
    """
    position = np.empty((dim, dim), dtype="int64")
    rows, cols = np.tril_indices(dim)
    position[cols, rows] = np.arange(rows.size)
    upper_rows, upper_cols = np.triu_indices(dim)
    return position[upper_rows, upper_cols]


def weight_plan(model, name, head=None):
    """`[(variable, torch_name, torch_shape, to_keras)]` for every weight of `model`, in the model's order.

    `model`: built by `build_imagenet_model` or `build_model` with `name` and
    `head` (the trunk's layers and the head's keep the authors' names by the
    same rule: `torch_prefix`).
    """
    head = IMAGENET_MODELS[name]["head"] if head is None else head
    plan = []
    for layer in _weighted_layers(model):
        prefix = torch_prefix(layer.name)
        if isinstance(layer, GSoPBlock):
            plan += _gsop_plan(layer, prefix)
        elif isinstance(layer, GaussianPooling2D):
            plan += _gaussian_plan(layer, prefix)
        elif isinstance(layer, GeneralizedGaussianReweighting):
            plan += _reweighting_plan(layer)
        elif layer.name == "predictions":
            permute = name in COLUMN_MAJOR_TRIANGLE and head != "gap"
            plan += _classifier_plan(layer, prefix, permute)
        elif hasattr(layer, "moving_mean"):
            plan += _bn_plan(layer, prefix)
        elif hasattr(layer, "kernel") and not layer.use_bias:
            plan.append(_conv_entry(layer.kernel, f"{prefix}.weight"))
        else:
            raise ValueError(f"No PyTorch name for the weights of layer {layer.name!r} of {name!r}.")
    return plan


def torch_prefix(layer_name):
    """The authors' module name of a layer of `build_imagenet_model`'s models."""
    fixed = {
        "conv1_conv": "conv1",
        "conv1_bn": "bn1",
        "conv1_gauss": "pool1",
        "pool1_gauss": "pool",
        "reduce_conv": "layer_reduce",
        "reduce_bn": "layer_reduce_bn",
        "predictions": "fc",
    }
    if layer_name in fixed:
        return fixed[layer_name]
    match = re.fullmatch(r"conv(\d)_block(\d+)_(\w+)", layer_name)
    if match is None:
        return layer_name
    stage, block, part = int(match[1]) - 1, int(match[2]) - 1, match[3]
    base = f"layer{stage}.{block}"
    parts = {"0_conv": "downsample.0", "0_bn": "downsample.1", "gsop": None, "gauss": "pooling"}
    parts.update({f"{j}_conv": f"conv{j}" for j in (1, 2, 3)})
    parts.update({f"{j}_bn": f"bn{j}" for j in (1, 2, 3)})
    if part not in parts:
        return layer_name
    return base if parts[part] is None else f"{base}.{parts[part]}"


def load_state_dict(model, state_dict, name, head=None):
    """Assigns a PyTorch `state_dict` (numpy arrays, unwrapped) to `model`; refuses any mismatch.

    Raises:
        CheckpointMismatchError: listing the missing, unexpected and
            mis-shaped tensors, when the checkpoint is not one of `name`'s.
    """
    plan = weight_plan(model, name, head)
    check_state_dict(plan, state_dict, name)
    for variable, torch_name, _, to_keras in plan:
        variable.assign(to_keras(np.asarray(state_dict[torch_name], dtype="float32")))
    return model


def check_state_dict(plan, state_dict, name):
    """Raises `CheckpointMismatchError` unless every tensor is used exactly once, with its shape."""
    wanted = {torch_name: shape for _, torch_name, shape, _ in plan}
    optional = {n.rsplit(".", 1)[0] + ".num_batches_tracked" for n in wanted if n.endswith(".running_mean")}
    missing = [n for n in wanted if n not in state_dict]
    unexpected = [n for n in state_dict if n not in wanted and n not in optional]
    misshaped = [
        f"{n} {tuple(np.shape(state_dict[n]))} != {wanted[n]}"
        for n in wanted
        if n in state_dict and tuple(np.shape(state_dict[n])) != wanted[n]
    ]
    if missing or unexpected or misshaped:
        report = "; ".join(
            f"{len(names)} {kind}: {', '.join(names[:LISTED])}{', ...' if len(names) > LISTED else ''}"
            for kind, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if names
        )
        raise CheckpointMismatchError(
            f"The checkpoint is not a {name!r} state_dict ({report}). "
            "Pick the model (and head) the checkpoint was trained as."
        )


def convert_state_dict(state_dict, name, head=None, input_shape=(224, 224, 3), raw_images=False):
    """A new model of `name` (and `head`) holding a PyTorch `state_dict`'s weights.

    The number of classes is read from the classifier (`fc.weight`).

    Args:
        state_dict: name -> array (numpy, or anything `np.asarray` reads),
            plain or wrapped (see `unwrap_state_dict`).
        name: one of `list_imagenet_models()`.
        head: its head; default the model's own.
        input_shape: `(H, W, 3)`.
        raw_images: return `build_model(name, ...)`, which takes raw RGB
            images in [0, 255] and normalises them with torchvision's ImageNet
            statistics (the authors' preprocessing); else the bare
            `build_imagenet_model`, which takes normalised images.
    """
    state_dict = unwrap_state_dict(state_dict)
    if name not in IMAGENET_MODELS:
        raise ValueError(f"Unknown model: {name!r}. Valid models: {', '.join(IMAGENET_MODELS)}.")
    if "fc.weight" not in state_dict:
        raise CheckpointMismatchError("The checkpoint has no classifier `fc.weight`; it is not an ImageNet ResNet.")
    num_classes = int(np.shape(state_dict["fc.weight"])[0])
    if raw_images:
        model = build_model(name, head=head, num_classes=num_classes, input_shape=input_shape)
    else:
        model = build_imagenet_model(name, num_classes=num_classes, input_shape=input_shape, head=head)
    return load_state_dict(model, state_dict, name, head)


def _weighted_layers(model):
    """The layers of `model` that hold weights, in order, a nested model's (`build_model`'s trunk) opened."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def _entry(variable, torch_name, torch_shape, to_keras):
    return (variable, torch_name, tuple(int(n) for n in torch_shape), to_keras)


def _conv_entry(kernel, torch_name):
    """HWIO kernel <- OIHW tensor."""
    h, w, i, o = kernel.shape
    return _entry(kernel, torch_name, (o, i, h, w), lambda t: np.transpose(t, (2, 3, 1, 0)))


def _same_entry(variable, torch_name):
    return _entry(variable, torch_name, variable.shape, lambda t: t)


def _dense_entries(dense, prefix, from_conv):
    """Dense `(in, out)` <- linear `(out, in)` or 1x1 convolution `(out, in, 1, 1)`."""
    fan_in, units = dense.kernel.shape
    shape = (units, fan_in, 1, 1) if from_conv else (units, fan_in)
    to_keras = (lambda t: t[:, :, 0, 0].T) if from_conv else (lambda t: t.T)
    entries = [_entry(dense.kernel, f"{prefix}.weight", shape, to_keras)]
    if dense.use_bias:
        entries.append(_same_entry(dense.bias, f"{prefix}.bias"))
    return entries


def _bn_plan(bn, prefix):
    return [_same_entry(getattr(bn, ours), f"{prefix}.{theirs}") for ours, theirs in BN_NAMES]


def _classifier_plan(dense, prefix, permute):
    if not permute:
        return _dense_entries(dense, prefix, from_conv=False)
    features, units = dense.kernel.shape
    dim = int(round((np.sqrt(8 * features + 1) - 1) / 2))
    perm = triangle_permutation(dim)
    return [
        _entry(dense.kernel, f"{prefix}.weight", (units, features), lambda t: t[:, perm].T),
        _same_entry(dense.bias, f"{prefix}.bias"),
    ]


def _gsop_plan(block, prefix):
    if block.mode != "channel":
        raise ValueError(f"Only channel GSoP blocks have the authors' names. Received: mode={block.mode!r}")
    branch = block.channel_branch
    rows, _, multiplier = branch.row_kernel.shape
    return [
        _conv_entry(branch.reduce.kernel, f"{prefix}.conv_for_DR.weight"),
        _same_entry(branch.reduce.bias, f"{prefix}.conv_for_DR.bias"),
        *_bn_plan(branch.reduce_norm, f"{prefix}.bn_for_DR"),
        *_bn_plan(branch.row_norm, f"{prefix}.row_bn"),
        # grouped convolution: output channel i * m + k of group (row) i, kernel over the row's d entries
        _entry(
            branch.row_kernel,
            f"{prefix}.row_conv_group.weight",
            (rows * multiplier, 1, rows, 1),
            lambda t: np.transpose(t[:, 0, :, 0].reshape(rows, multiplier, rows), (0, 2, 1)),
        ),
        _entry(
            branch.row_bias,
            f"{prefix}.row_conv_group.bias",
            (rows * multiplier,),
            lambda t: t.reshape(rows, multiplier),
        ),
        *_dense_entries(branch.expand, f"{prefix}.fc_adapt_channels", from_conv=True),
    ]


def _gaussian_plan(pool, prefix):
    return [
        *_dense_entries(pool.hidden_dense, f"{prefix}.ToHidden.1", from_conv=True),
        *_bn_plan(pool.hidden_norm, f"{prefix}.ToHidden.2"),
        *_dense_entries(pool.mean_dense, f"{prefix}.ToMean.0", from_conv=True),
        *_bn_plan(pool.mean_norm, f"{prefix}.ToMean.1"),
        *_dense_entries(pool.sigma_dense, f"{prefix}.ToSigma.0", from_conv=True),
        *_bn_plan(pool.sigma_norm, f"{prefix}.ToSigma.1"),
    ]


def _reweighting_plan(layer):
    plan = []
    pairs = (
        ("w1", "map1", "bn1"),
        ("w2", "map2", "bn2"),
        ("w21", "map21", "bn21"),
        ("w3", "map3", "bn3"),
        ("w4", "map4", "bn4"),
    )
    for index, stage in enumerate(layer.stages, start=1):
        prefix = f"AtMp{index}"
        for ours, conv, norm in pairs:
            plan.append(_conv_entry(stage.convs[ours].kernel, f"{prefix}.{conv}.weight"))
            plan += _bn_plan(stage.norms[ours], f"{prefix}.{norm}")
        plan.append(_conv_entry(stage.conv_a.kernel, f"{prefix}.atmap1.weight"))
        plan += _bn_plan(stage.norm_a, f"{prefix}.bnat1")
        plan.append(_conv_entry(stage.conv_b.kernel, f"{prefix}.atmap2.weight"))
        plan.append(_entry(stage.scale, f"{prefix}.atmap3.weight", (1, 1, 1, 1), lambda t: t.reshape(())))
    return plan
