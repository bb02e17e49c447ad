"""Which `build_model` option applies to which model, as data; parsed without Keras.

A model is described by its traits (`model_traits`): `small_backbone` (one of the paper's
small-image networks; the seed family's ImageNet ResNet-50s follow the authors' PyTorch
networks and take no option), `classifier_bn` (a BatchNorm and Dropout before the
classifier: every head but `gap`, the seed-family heads and, with `sop_baseline_bn=False`,
`sr-sop` / `psr-sop`), `sop_baseline` (`sr-sop`, `psr-sop`), `second_order` (an SR-SOP in
the head), `gated` (a noisy top-K gate: `gm-*-N-K`, `sg-moe-N-K`) and `dispatched` (a gated
mixture of poolings, `gm-*-N-K`, whose top-K dispatch is a choice). `OPTION_TRAITS` names the trait each
option needs; `build_model` refuses an option given to a model without it, and the
configuration and the documentation read the same table.
"""

import math

from gmsop_keras.models.names import SEED_FAMILY_HEADS, SMALL_IMAGE_BACKBONES, SMALL_IMAGE_DEFAULT_HEAD, parse_head

# The head a small-image backbone gets with `head=None` (the paper's GM-SOP); the seed family's
# ImageNet models get their own (`gmsop_keras.models.imagenet_resnets.IMAGENET_MODELS`).
DEFAULT_HEAD = SMALL_IMAGE_DEFAULT_HEAD

OPTION_TRAITS = {
    "last_stride": "small_backbone",
    "gsop_stages": "small_backbone",
    "gaussian_pooling": "small_backbone",
    "bn_momentum": "small_backbone",
    "dropout": "classifier_bn",
    "representation_gamma": "classifier_bn",
    "sop_baseline_bn": "sop_baseline",
    "num_iterations": "second_order",
    "sop_channels": "second_order",
    "balance_loss_weight": "gated",
    "noise": "gated",
    "dispatch": "dispatched",
    "gate_input_norm": "gated",
    "gate_init": "gated",
}

TRAIT_MEANINGS = {
    "small_backbone": "the small-image backbones (resnet18, resnet50, wrn-36-2); the seed family's ImageNet "
    "models are the authors' networks",
    "classifier_bn": "heads with a BatchNorm and Dropout before the classifier (not gap, isqrt-256, 3g-256, "
    "nor sr-sop / psr-sop with sop_baseline_bn=False)",
    "sop_baseline": "the plain second-order baselines sr-sop and psr-sop",
    "second_order": "heads with an SR-SOP (sr-sop, psr-sop, ave-sop-N, gm-sop-N-K)",
    "gated": "gated mixtures (gm-sop-N-K, gm-gap-N-K, sg-moe-N-K)",
    "dispatched": "gated mixtures of poolings (gm-sop-N-K, gm-gap-N-K); sg-moe-N-K computes every expert",
}


def _number(low, high=None, low_open=False, high_open=False):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if value < low or (low_open and value == low):
            return False
        return high is None or value < high or (not high_open and value == high)

    return check


def _integer(low):
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


def _boolean(value):
    return isinstance(value, bool)


# Allowed values of each option: (check, what the message asks for).
OPTION_VALUES = {
    "last_stride": (lambda v: v in (1, 2) and not isinstance(v, bool), "1 or 2"),
    "gsop_stages": (lambda v: isinstance(v, (list, tuple)) and all(s in (1, 2, 3, 4) for s in v),
                    "a list of stages 1-4"),
    "gaussian_pooling": (_boolean, "True or False"),
    "bn_momentum": (_number(0, 1, high_open=True), "a number in [0, 1) (Keras' convention; official code: 0.7)"),
    "dropout": (_number(0, 1, high_open=True), "a rate in [0, 1)"),
    "representation_gamma": (_number(0, low_open=True), "a positive number (paper: 1.0), or None"),
    "sop_baseline_bn": (_boolean, "True or False"),
    "num_iterations": (_integer(1), "an integer >= 1 (paper: 5, official code: 3)"),
    "sop_channels": (_integer(1), "a positive integer"),
    "balance_loss_weight": (_number(0), "a number >= 0 (paper: 100)"),
    "noise": (lambda v: v in ("per_sample", "per_component", "none"), "per_sample, per_component or none"),
    "dispatch": (lambda v: v in ("auto", "dense", "gather", "grouped"), "auto, dense, gather or grouped"),
    "gate_input_norm": (_boolean, "True or False"),
    "gate_init": (lambda v: v in ("random", "constant"), "random or constant"),
}


def model_traits(backbone, head, sop_baseline_bn=True):
    """The traits (see the module docstring) of the model `backbone` + `head` (a name)."""
    if backbone not in SMALL_IMAGE_BACKBONES:
        return frozenset()
    traits = {"small_backbone"}
    if head in SEED_FAMILY_HEADS:
        return frozenset(traits)
    spec = parse_head(head)
    baseline = spec.second_order and not spec.is_mixture
    if spec.second_order:
        traits.add("second_order")
    if baseline:
        traits.add("sop_baseline")
    if spec.top_k is not None:
        traits.add("gated")
        if spec.pooling in ("sop", "gap"):
            traits.add("dispatched")
    pooled = spec.parametric or spec.second_order or spec.pooling in ("netvlad", "moe")
    if pooled and not (baseline and sop_baseline_bn is False):
        traits.add("classifier_bn")
    return frozenset(traits)


def check_model_options(backbone, head, options):
    """Raises ValueError for an option (not None) that `backbone` + `head` do not use, or a bad value."""
    given = {name: value for name, value in options.items() if value is not None}
    for name, value in given.items():
        check, wanted = OPTION_VALUES[name]
        if not check(value):
            raise ValueError(f"`{name}` must be {wanted}. Received: {name}={value!r}")
    traits = model_traits(backbone, head, given.get("sop_baseline_bn", True))
    for name in given:
        trait = OPTION_TRAITS[name]
        if trait not in traits:
            raise ValueError(
                f"`{name}` does not apply to backbone={backbone!r}, head={head!r}: it applies only to "
                f"{TRAIT_MEANINGS[trait]}. Leave it unset (None) for this model."
            )


def applicable_options(backbone, head, sop_baseline_bn=True):
    """The option names that apply to `backbone` + `head`, in `OPTION_TRAITS` order."""
    traits = model_traits(backbone, head, sop_baseline_bn)
    return [name for name, trait in OPTION_TRAITS.items() if trait in traits]
