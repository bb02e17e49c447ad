"""The compiled model of a run configuration: `build_model`, SGD with the step schedule and weight
decay, top-1/top-5; and the evaluation of a saved model."""

import sys

import keras

import gmsop_keras.layers  # noqa: F401  (registers the layers: evaluate_saved loads a model)
from gmsop_keras.models import build_model
from gmsop_keras.training.config import model_options
from gmsop_keras.training.optimizers import CoupledWeightDecaySGD
from gmsop_keras.training.recipes import step_schedule


def build_and_compile(config, input_shape, num_classes, steps_per_epoch, jit_compile="auto", *, mean=None,
                      std=None):
    """`build_model` for the configuration, compiled with SGD, the step schedule and top-1/top-5.

    `mean` and `std` (None: ImageNet's) normalise the input; `input_statistics` reads them from a manifest.
    """
    model = build_model(
        config["backbone"], config["head"], num_classes=num_classes, input_shape=tuple(input_shape),
        mean=mean, std=std, **model_options(config),
    )
    schedule = step_schedule(config["lr"], config["stages"], steps_per_epoch, config["lr_decay"])
    optimizer = make_optimizer(config, schedule)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
        ],
        jit_compile=jit_compile,
    )
    return model


# BatchNorm scales and offsets, and every bias: exempt from weight decay unless
# `decay_norms_and_biases` (the official code decays every parameter).
NORMS_AND_BIASES = ("gamma", "beta", "bias")


def make_optimizer(config, learning_rate):
    """SGD with the configuration's momentum and weight decay (`weight_decay_mode`).

    coupled: the paper's L2 term wd * w in the gradient, which the momentum then
    accumulates (`CoupledWeightDecaySGD`). decoupled: Keras' decay applied outside the
    momentum; the L2 term's steady-state pull under momentum is lr * wd / (1 - momentum) per
    step, so Keras gets wd / (1 - momentum). Norms and biases are exempt unless
    `decay_norms_and_biases`.
    """
    momentum, decay = config["momentum"], config["weight_decay"]
    exempt = () if config.get("decay_norms_and_biases") else NORMS_AND_BIASES
    if config.get("weight_decay_mode", "decoupled") == "coupled":
        return CoupledWeightDecaySGD(learning_rate=learning_rate, momentum=momentum, l2=decay, l2_exempt=exempt)
    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=decay / (1.0 - momentum))
    if exempt:
        optimizer.exclude_from_weight_decay(var_names=list(exempt))
    return optimizer


def evaluate_saved(path, validation, steps):
    """Validation metrics of the saved model, on one device.

    Under MirroredStrategy each replica keeps its own BatchNorm moving statistics
    (Keras' per-replica BatchNorm); the saved and exported model carries the first
    replica's, while an evaluation under the strategy would mix them. Evaluating the
    saved file makes metrics.json describe exactly the model that was saved.
    """
    model = keras.saving.load_model(path)
    return model.evaluate(validation, steps=steps, verbose=0, return_dict=True)


def keras_verbosity(value):
    """Keras' `verbose` for a `--verbose` value: "auto" is a progress bar on a terminal,
    one line per epoch otherwise."""
    if value == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(value)
