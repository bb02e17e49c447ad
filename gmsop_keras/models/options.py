"""The `build_model` options, each declared once (`MODEL_OPTIONS`); parsed without Keras.

An `Option` carries an option's name, type, allowed values, default, help and, for a model
option, the trait a model needs to take it. Everything else reads the declaration:
`build_model`'s checks (`check_model_options`), the presets (`applicable_options`), the
commands' flags, YAML keys and config.yaml (`gmsop_keras.training.options`, which adds the
training options), the compatibility of runs saved before an option existed
(`gmsop_keras.training.saved_config`) and the tuner (`tuning.hypermodel`).

A model is described by its traits (`model_traits`): `small_backbone` (one of the paper's
small-image networks; the seed family's ImageNet ResNet-50s follow the authors' PyTorch
networks and take no option), `classifier_bn` (a BatchNorm and Dropout before the
classifier: every head but `gap`, the seed-family heads and, with `sop_baseline_bn=False`,
`sr-sop` / `psr-sop`), `sop_baseline` (`sr-sop`, `psr-sop`), `second_order` (an SR-SOP in
the head), `gated` (a noisy top-K gate: `gm-*-N-K`, `sg-moe-N-K`) and `dispatched` (a gated
mixture of poolings, `gm-*-N-K`, whose top-K dispatch is a choice). `build_model` refuses an
option given to a model without its trait.
"""

import dataclasses
import math

from gmsop_keras.models.names import (DISPATCHES, SEED_FAMILY_HEADS, SMALL_IMAGE_BACKBONES, SMALL_IMAGE_DEFAULT_HEAD,
                                      parse_head)

# The head a small-image backbone gets with `head=None` (the paper's GM-SOP); the seed family's
# ImageNet models get their own (`gmsop_keras.models.imagenet_resnets.IMAGENET_MODELS`).
DEFAULT_HEAD = SMALL_IMAGE_DEFAULT_HEAD

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


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its flag and YAML key (the name), type, allowed values, default and help.

    `kind` is `str`, `int`, `float`, `bool` or `ints` (a list of integers); `low`/`high`
    bound numbers (`low_open`: the bound itself is excluded); `choices` lists allowed values.
    A model option names the `trait` (see the module docstring) a model needs to take it;
    its `default` is `build_model`'s (None: chosen per model), while the commands leave it
    unset (None) unless a flag, the YAML file or the preset sets it. `flag=False`: for
    Python callers only (no flag, YAML key or config.yaml entry). `noun` and `note` word
    `build_model`'s refusal ("`dropout` must be a rate in [0, 1)").
    """

    name: str
    kind: str
    default: object = None
    help: str = ""
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    trait: str | None = None  # a model option: the trait a model needs to take it
    resumable: bool = False  # may differ between a run and its resumption
    flag: bool = True
    noun: str = ""
    note: str = ""

    @property
    def model_option(self):
        """Whether `build_model` takes it."""
        return self.trait is not None

    @property
    def model_default(self):
        """`build_model`'s default of a model option (None for a training option)."""
        return self.default if self.model_option else None

    @property
    def config_default(self):
        """The value of a configuration that does not set it (a model option: None, not given)."""
        return None if self.model_option else self.default

    def problem(self, value):
        """What is wrong with `value` ("must be >= 1"), or None."""
        if self.kind == "ints":
            if not isinstance(value, (list, tuple)) or not value:
                return "must be a list of integers, e.g. [40, 10, 5, 5]"
            item = dataclasses.replace(self, kind="int")
            return next((f"must be a list of integers; {v!r} {p}" for v in value if (p := item.problem(v))), None)
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "str":
            if not isinstance(value, str):
                return "must be a string"
        elif self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return "must be an integer"
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return "must be a finite number"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"must be {'<' if self.high_open else '<='} {self.high:g}"
        return None

    def wanted(self):
        """The allowed values in words, for `build_model`'s refusal ("an integer >= 1 (paper: 5)")."""
        if self.kind == "bool":
            text = "True or False"
        elif self.choices:
            words = [str(c) for c in self.choices]
            text = f"{', '.join(words[:-1])} or {words[-1]}"
        else:
            noun = self.noun or {"int": "an integer", "float": "a number", "ints": "a list of integers"}[self.kind]
            if self.low is not None and self.high is not None:
                text = (f"{noun} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                        f"{')' if self.high_open else ']'}")
            elif self.low == 0 and self.low_open:
                text = f"a positive {noun.split(' ', 1)[1]}"
            elif self.low is not None:
                text = f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
            else:
                text = noun
        return f"{text} ({self.note})" if self.note else text


# build_model's options, in the order of the commands' --help. `default` is build_model's.
MODEL_OPTIONS = (
    Option("balance_loss_weight", "float", 100.0, "alpha of the balance loss (Eq. 4; 100)", low=0, trait="gated",
           note="paper: 100"),
    Option("num_iterations", "int", 5, "Newton-Schulz iterations (5; the official code used 3)", low=1,
           trait="second_order", note="paper: 5, official code: 3"),
    Option("sop_channels", "int", 128, "second-order heads reduce wider maps to this many channels", low=1,
           trait="second_order", flag=False),
    Option("sqrt_dtype", "str", "float32", "operand dtype of the square roots' matrix products (trace "
           "normalisation and result stay float32)", choices=("float32", "bfloat16", "float16"),
           trait="second_order", flag=False),
    Option("noise", "str", "per_sample", "gate noise", choices=("per_sample", "per_component", "none"),
           trait="gated"),
    Option("dropout", "float", None, "dropout before the classifier (0.2; 0.4 for WRN GM-SOP)", low=0, high=1,
           high_open=True, trait="classifier_bn", noun="a rate"),
    Option("dispatch", "str", "auto", "top-K dispatch of the mixture", choices=DISPATCHES, trait="dispatched"),
    Option("last_stride", "int", None, "stride of the last stage", choices=(1, 2), trait="small_backbone"),
    Option("gsop_stages", "ints", None, "GSoP blocks in the last block of these stages (1-4)", low=1, high=4,
           trait="small_backbone"),
    Option("gaussian_pooling", "bool", False, "Gaussian pooling in place of strided blocks", trait="small_backbone"),
    Option("conv1_bias", "bool", False, "the stem convolution has a bias (the official MatConvNet models)",
           trait="small_backbone"),
    Option("symmetric_padding", "bool", False, "strided 3x3 convolutions pad 1 on every side, as MatConvNet "
           "(Keras' 'same' pads 0 before, 1 after)", trait="small_backbone"),
    Option("gate_input_norm", "bool", True, "standardise the gate's input (BatchNorm without scale/offset, "
           "/ sqrt(D))", trait="gated"),
    Option("gate_init", "str", "random", "gate kernels: random (centred) or constant 1/d with random tie-break "
           "(official code)", choices=("random", "constant"), trait="gated"),
    Option("representation_gamma", "float", None, "initial scale of the BatchNorm before the classifier "
           "(default sqrt(128 / D); paper, official code 1)", low=0, low_open=True, trait="classifier_bn",
           note="paper: 1.0"),
    Option("sop_baseline_bn", "bool", True, "the plain SR-SOP baseline has BatchNorm and dropout before its "
           "classifier (the official code has neither)", trait="sop_baseline"),
    Option("bn_momentum", "float", 0.9, "BatchNorm moving-average momentum (0.9; official code 0.7)", low=0,
           high=1, high_open=True, trait="small_backbone", note="Keras' convention; official code: 0.7"),
)
MODEL_OPTIONS_BY_NAME = {option.name: option for option in MODEL_OPTIONS}
# build_model's dropout where none is given: 0.2 (paper Sec. 2.3), 0.4 for second-order heads on
# WRN-36-2 (the official WRN GM-SOP's, examples/GM/cnn_init_WRN_GM.m:325).
DEFAULT_DROPOUT = 0.2
WIDE_SECOND_ORDER_DROPOUT = 0.4
WIDE_BACKBONES = ("wrn-36-2",)
# Derived view: the trait each option needs.
OPTION_TRAITS = {option.name: option.trait for option in MODEL_OPTIONS}


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


def default_dropout(backbone, head):
    """The dropout `build_model` gives `backbone` + `head` (a name) when `dropout` is None."""
    wide = backbone in WIDE_BACKBONES and parse_head(head).second_order
    return WIDE_SECOND_ORDER_DROPOUT if wide else DEFAULT_DROPOUT


def effective_value(name, value, backbone, head):
    """What an unset (None) model option means for this model (`build_model`'s default), so a
    config.yaml that left it unset compares equal with one that sets that value."""
    if value is not None or name not in MODEL_OPTIONS_BY_NAME:
        return value
    if name == "dropout" and backbone in SMALL_IMAGE_BACKBONES and "classifier_bn" in model_traits(backbone, head):
        return default_dropout(backbone, head)
    return MODEL_OPTIONS_BY_NAME[name].model_default


def check_model_options(backbone, head, options):
    """Raises ValueError for an option (not None) that `backbone` + `head` do not use, or a bad value."""
    given = {name: value for name, value in options.items() if value is not None}
    for name, value in given.items():
        option = MODEL_OPTIONS_BY_NAME[name]
        empty = option.kind == "ints" and isinstance(value, (list, tuple)) and not value  # none: allowed
        if not empty and option.problem(value):
            raise ValueError(f"`{name}` must be {option.wanted()}. Received: {name}={value!r}")
    traits = model_traits(backbone, head, given.get("sop_baseline_bn", True))
    for name in given:
        trait = OPTION_TRAITS[name]
        if trait not in traits:
            raise ValueError(
                f"`{name}` does not apply to backbone={backbone!r}, head={head!r}: it applies only to "
                f"{TRAIT_MEANINGS[trait]}. Leave it unset (None) for this model."
            )


def applicable_options(backbone, head, sop_baseline_bn=True):
    """The option names that apply to `backbone` + `head`, in `MODEL_OPTIONS` order."""
    traits = model_traits(backbone, head, sop_baseline_bn)
    return [option.name for option in MODEL_OPTIONS if option.trait in traits]
