"""Training configuration: command-line flags, an optional YAML file, presets and recipes.

Every option is declared once, in `OPTIONS`: `fit`'s command-line parser, the YAML keys and
their type checks, `tuning.search`'s training flags (`add_option_arguments`) and the
`build_model` keywords (`MODEL_OPTION_KEYS`, `model_options`) all come from that table.
To add an option, add one `Option(...)` line to `OPTIONS` (with `model_option=True` and
`model_default=` build_model's default if build_model takes it, `resumable=True` if a run
may be resumed with another value); a preset may then set it (`gmsop_keras.models.presets`).

Precedence: explicit flags > the `-c/--config` YAML file > the preset (`--preset`) > the
recipe row the preset (or `--recipe`) names (`gmsop_keras.training.recipes`) > built-in defaults.
`--epochs N` without `--stages` scales the recipe's stages to N (`recipes.scale_stages`);
a run continued with a larger `--epochs` keeps the stages recorded in its config.yaml, the
extra epochs running at the last stage's rate. The resolved configuration is written to the
model directory once the inputs check out; re-running in the same directory with a
different configuration (a different preset included) is refused, since it would resume a
model that is not the one asked for. Nothing here imports Keras or TensorFlow.
"""

import argparse
import dataclasses
import json
import math
import os
import re

import yaml

from gmsop_keras.training.errors import UsageError

from gmsop_keras.cli.errors import add_debug_flag
from gmsop_keras.models.names import DISPATCHES, own_head
from gmsop_keras.models.presets import NAMES as PRESET_NAMES
from gmsop_keras.models.presets import preset_values
from gmsop_keras.training.recipes import SYNTHETIC_SIZE, find_recipe, scale_stages
from pipelines import storage
from pipelines.augmentations import AUGMENTATIONS


@dataclasses.dataclass(frozen=True)
class Option:
    """One training option: its flag, YAML key, type, default and allowed values.

    `kind` is `str`, `int`, `float`, `bool` or `ints` (a list of integers); `low`/`high`
    bound numbers (`low_open`: the bound itself is excluded); `choices` lists allowed values.
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
    model_option: bool = False  # passed to build_model
    model_default: object = None  # build_model's default: not passed when the value equals it
    resumable: bool = False  # may differ between a run and its resumption


OPTIONS = (
    Option("dataset", "str", "synthetic", "imagenet64 | places365 | synthetic | a folder of TFRecords"),
    Option("data_dir", "str", None, "converted TFRecords (python -m pipelines.convert); synthetic: cache folder",
           resumable=True),
    Option("backbone", "str", "resnet18", "resnet18 | resnet50 | wrn-36-2 | an ImageNet ResNet-50 of the seed family"),
    Option("head", "str", None, "gap, gap-512, sr-sop, psr-sop, ave-sop-16, gm-sop-16-8, gm-gap-N-K, netvlad-64, "
           "sg-moe-16-8, ... (default: gm-sop-16-8; a seed-family ImageNet backbone's own head)"),
    Option("preset", "str", "default", "a consistent set of switches: default (this library's measured "
           "choices), paper (the paper's text), official (the authors' code, with its schedules)",
           choices=PRESET_NAMES),
    Option("recipe", "str", None, "whose schedule for this model and dataset (default: the preset's), or none",
           choices=("paper", "official", "none")),
    Option("epochs", "int", None, "total epochs (default: the recipe's); a finished run re-run with more continues",
           low=1, resumable=True),
    Option("stages", "ints", None, "step schedule: epochs at lr, lr*decay, ... (e.g. 40 10 5 5)", low=1,
           resumable=True),
    Option("batch_size", "int", None, "global batch size, split across replicas", low=1),
    Option("lr", "float", None, "initial learning rate", low=0, low_open=True),
    Option("lr_decay", "float", None, "factor at every stage boundary (0.1)", low=0, high=1, low_open=True),
    Option("momentum", "float", None, "SGD momentum (0.9)", low=0, high=1, high_open=True),
    Option("weight_decay", "float", None, "weight decay (paper 5e-4, official code 1e-4)", low=0),
    Option("weight_decay_mode", "str", None, "coupled: L2 term wd * w added to the gradient before the momentum "
           "(paper, official code); decoupled: Keras' decay of wd / (1 - momentum) per step outside it",
           choices=("decoupled", "coupled")),
    Option("decay_norms_and_biases", "bool", None, "decay BatchNorm scales/offsets and biases too (official code)"),
    Option("steps_per_epoch", "int", None, "train this many steps per epoch (short runs)", low=1),
    Option("validation_steps", "int", None, "evaluate on this many batches only", low=1, resumable=True),
    Option("model_dir", "str", None, "checkpoints, logs, plots and the resolved config "
           "(default: runs/<dataset>-<backbone>-<head>)"),
    Option("seed", "int", 0, "seed of the weights, the gate noise and the data order", low=0),
    Option("mixed_precision", "bool", False, "mixed_float16 (second-order parts, gate and classifier stay float32)"),
    Option("jit_compile", "str", "auto", "XLA: auto = on for one GPU, off on a CPU and under a distribution "
           "strategy (where Keras 3.15 cannot compile)", choices=("auto", "on", "off"), resumable=True),
    Option("strategy", "str", "auto", "auto = every visible GPU; none; mirrored; multi-worker (TF_CONFIG or SLURM)",
           choices=("auto", "none", "mirrored", "multi-worker"), resumable=True),
    Option("slurm_port_base", "int", 8888, "multi-worker under SLURM: task k of a node listens on this port + k",
           low=1024, high=65535, resumable=True),
    Option("slurm_gpus_per_task", "int", None, "multi-worker under SLURM: give each task this many of its node's "
           "GPUs (default: as srun binds them)", low=0, resumable=True),
    Option("balance_loss_weight", "float", None, "alpha of the balance loss (Eq. 4; 100)", low=0,
           model_option=True, model_default=100.0),
    Option("num_iterations", "int", None, "Newton-Schulz iterations (5; the official code used 3)", low=1,
           model_option=True, model_default=5),
    Option("noise", "str", None, "gate noise", choices=("per_sample", "per_component", "none"), model_option=True,
           model_default="per_sample"),
    Option("dropout", "float", None, "dropout before the classifier (0.2; 0.4 for WRN GM-SOP)", low=0, high=1,
           high_open=True, model_option=True),
    Option("dispatch", "str", None, "top-K dispatch of the mixture", choices=DISPATCHES,
           model_option=True, model_default="auto"),
    Option("last_stride", "int", None, "stride of the last stage", choices=(1, 2), model_option=True),
    Option("gsop_stages", "ints", None, "GSoP blocks in the last block of these stages (1-4)", low=1, high=4,
           model_option=True),
    Option("gaussian_pooling", "bool", None, "Gaussian pooling in place of strided blocks", model_option=True,
           model_default=False),
    Option("gate_input_norm", "bool", None, "standardise the gate's input (BatchNorm without scale/offset, "
           "/ sqrt(D))", model_option=True, model_default=True),
    Option("gate_init", "str", None, "gate kernels: random (centred) or constant 1/d with random tie-break "
           "(official code)", choices=("random", "constant"), model_option=True, model_default="random"),
    Option("representation_gamma", "float", None, "initial scale of the BatchNorm before the classifier "
           "(default sqrt(128 / D); paper, official code 1)", low=0, low_open=True, model_option=True),
    Option("sop_baseline_bn", "bool", None, "the plain SR-SOP baseline has BatchNorm and dropout before its "
           "classifier (the official code has neither)", model_option=True, model_default=True),
    Option("bn_momentum", "float", None, "BatchNorm moving-average momentum (0.9; official code 0.7)", low=0,
           high=1, high_open=True, model_option=True, model_default=0.9),
    Option("export", "str", None, "export a SavedModel to saved_models/NAME at the end", resumable=True),
    Option("augment", "str", None, "training augmentation (default: auto = flip; Places365 random 96 crop + "
           "flip); chrabaszcz = the starred rows of Table 3: each image and its mirror once per epoch "
           "(an epoch of 2N images), pad 4 + random crop", choices=("auto",) + AUGMENTATIONS),
    Option("cache", "bool", False, "keep the training records in memory", resumable=True),
    Option("verbose", "str", "auto", "progress: auto = Keras' bar on a terminal, else a line every --log-every steps",
           choices=("auto", "0", "1", "2"), resumable=True),
    Option("log_every", "int", 100, "when not on a terminal, print a progress line every N steps", low=1,
           resumable=True),
)
BY_NAME = {option.name: option for option in OPTIONS}
DEFAULTS = {option.name: option.default for option in OPTIONS}
RESUMABLE_KEYS = tuple(option.name for option in OPTIONS if option.resumable)
MODEL_OPTION_KEYS = tuple(option.name for option in OPTIONS if option.model_option)
CONFIG_FILE = "config.yaml"
# Keys that recipes add beside the options (the synthetic set's size).
RECIPE_KEYS = ("synthetic",)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m gmsop_keras.fit",
        description="Train a CNN with GM-SOP (or any head of the paper's Tables 2-4) on ImageNet-64, "
        "Places365, the built-in synthetic set, or a folder of converted TFRecords.",
    )
    parser.add_argument("-c", "--config", help="YAML file whose keys are flag names (dashes or underscores)")
    add_option_arguments(parser, [option.name for option in OPTIONS])
    add_debug_flag(parser)
    return parser


def add_option_arguments(parser, names):
    """Adds the flags of the options `names` to an argparse parser (or group); unset flags are None."""
    for name in names:
        option = BY_NAME[name]
        flag = "--" + option.name.replace("_", "-")
        default = f" (default: {option.default})" if option.default not in (None, False) else ""
        kwargs = dict(help=option.help + default, default=None)
        if option.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"str": str, "int": int, "float": float, "ints": int}[option.kind]
            if option.kind == "ints":
                kwargs["nargs"] = "+"
            if option.choices:
                kwargs["choices"] = option.choices
        parser.add_argument(flag, **kwargs)


def resolve_config(argv=None):
    """Parses flags and merges them with the YAML file, the preset and the recipe; returns a plain dict.

    Raises:
        UsageError: an unknown YAML key, a value of the wrong type or out of range, an unknown
            backbone or head. All checked before TensorFlow loads.
    """
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if v is not None and k not in ("config", "debug")}
    from_file = read_yaml_config(args.config) if args.config else {}
    explicit = {k: v for k, v in {**from_file, **flags}.items() if v is not None}
    config = {**DEFAULTS, **explicit}
    check_values(config, source=args.config)
    if config["head"] is None:
        config["head"] = own_head(config["backbone"])
    _check_names(config)
    preset = preset_values(config["preset"], config["backbone"], config["head"], MODEL_OPTION_KEYS, explicit)
    for key, value in preset.items():
        if config.get(key) is None:
            config[key] = value
    stages_from_recipe = None
    if config["recipe"] != "none":
        dataset = _dataset_kind(config["dataset"])
        recipe = find_recipe(dataset, config["backbone"], config["head"], config["recipe"])
        for key, value in recipe.settings().items():
            if config[key] is None and value is not None:
                config[key] = value
                stages_from_recipe = recipe.source if key == "stages" else stages_from_recipe
        if dataset == "synthetic":
            config.setdefault("synthetic", dict(SYNTHETIC_SIZE))
    fallback = dict(stages=[config["epochs"] or 10], lr=0.1, batch_size=256, momentum=0.9,
                    weight_decay=5e-4, lr_decay=0.1)
    for key, value in fallback.items():
        if config[key] is None:
            config[key] = value
    if config["model_dir"] is None:
        name = storage.basename(config["dataset"])
        config["model_dir"] = os.path.join("runs", f"{name}-{config['backbone']}-{config['head']}")
    if stages_from_recipe:
        config["stages"] = _recipe_stages(config, stages_from_recipe)
    if config["epochs"] is None:
        config["epochs"] = int(sum(config["stages"]))
    _check_model_options(config)
    return config


def _check_model_options(config):
    """`build_model`'s refusal of an option the model does not use, as a one-line answer
    before TensorFlow loads (the same table: gmsop_keras.models.options)."""
    from gmsop_keras.models.options import check_model_options

    try:
        check_model_options(config["backbone"], config["head"], model_options(config))
    except ValueError as error:
        message = re.sub(r"`(\w+)`", lambda m: "--" + m.group(1).replace("_", "-") if m.group(1) in BY_NAME
                         else m.group(0), str(error))
        raise UsageError(message.replace("Leave it unset (None) for this model.", "Leave it out for this model."))


def _recipe_stages(config, source):
    """The recipe's stages for this run: as recorded when continuing a run, else scaled to --epochs."""
    stages, epochs = config["stages"], config["epochs"]
    saved = read_saved_config(config["model_dir"])
    if saved and saved.get("stages"):
        if epochs is not None and epochs > sum(saved["stages"]):
            print(f"note: continuing {config['model_dir']} with its recorded stages {_ints(saved['stages'])}; "
                  f"epochs {sum(saved['stages']) + 1}-{epochs} run at the last stage's rate", flush=True)
        return list(saved["stages"])
    if epochs is None or epochs == sum(stages):
        return stages
    scaled = scale_stages(stages, epochs)
    print(f"note: the {source} recipe's stages {_ints(stages)} scaled to --epochs {epochs}: "
          f"{_ints(scaled)} (give --stages to set them yourself)", flush=True)
    return scaled


def _ints(values):
    return " ".join(str(v) for v in values)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` as a string; this loader reads it as the number people mean."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml_config(path):
    """The options of a YAML file, keys normalised to underscores; unknown keys are refused."""
    if not storage.isfile(path):
        raise UsageError(f"config file {path} not found")
    try:
        loaded = yaml.load(storage.read_text(path), Loader=_Loader)
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{path} must hold a mapping of option names to values, found a {type(loaded).__name__}")
    values = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    unknown = sorted(set(values) - set(DEFAULTS) - set(RECIPE_KEYS))
    if unknown:
        raise UsageError(f"unknown keys in {path}: {unknown}; valid keys are {sorted(DEFAULTS)}")
    return values


def check_values(config, source=None):
    """Checks the type and range of every option set in `config`; raises UsageError naming the first bad one."""
    where = f"{source}: " if source else ""
    for name, value in config.items():
        option = BY_NAME.get(name)
        if option is None or value is None:
            continue
        problem = _problem(option, value)
        if problem:
            raise UsageError(f"{where}{name} {problem}, got {value!r}")


def _problem(option, value):
    if option.kind == "ints":
        if not isinstance(value, (list, tuple)) or not value:
            return "must be a list of integers, e.g. [40, 10, 5, 5]"
        item = dataclasses.replace(option, kind="int")
        return next((f"must be a list of integers; {v!r} {p}" for v in value if (p := _problem(item, v))), None)
    if option.kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if option.kind == "str":
        if not isinstance(value, str):
            return "must be a string"
    elif option.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
    elif option.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "must be a finite number"
    if option.choices and value not in option.choices:
        return f"must be one of {', '.join(map(str, option.choices))}"
    if option.low is not None and (value <= option.low if option.low_open else value < option.low):
        return f"must be {'>' if option.low_open else '>='} {option.low:g}"
    if option.high is not None and (value >= option.high if option.high_open else value > option.high):
        return f"must be {'<' if option.high_open else '<='} {option.high:g}"
    return None


def model_options(config):
    """The `build_model` keywords of the configuration: the model options it sets to something
    other than build_model's own default (so a default never reaches a model it does not apply to)."""
    return {
        k: config[k] for k in MODEL_OPTION_KEYS
        if config.get(k) is not None and _normal(config[k]) != _normal(BY_NAME[k].model_default)
    }


def read_saved_config(model_dir):
    """The configuration a model directory was trained with, or None."""
    path = storage.join(model_dir, CONFIG_FILE)
    if not storage.isfile(path):
        return None
    return yaml.safe_load(storage.read_text(path)) or {}


def check_model_dir(config):
    """Refuses to resume a model directory that was made for a different configuration."""
    saved = read_saved_config(config["model_dir"])
    if saved is None:
        return
    differences = sorted(
        (k for k in set(saved) | set(config)
         if k not in RESUMABLE_KEYS and _normal(saved.get(k)) != _normal(config.get(k))
         and not (k not in saved and _as_before_option_existed(k, config.get(k)))),
        key=lambda k: (k != "preset", k),  # a different preset explains the rest
    )
    if differences:
        shown = ", ".join(f"{k}: {saved.get(k)!r} there, {config.get(k)!r} now" for k in differences[:4])
        raise UsageError(
            f"model dir {config['model_dir']} holds a run with a different configuration ({shown}); "
            "use another --model-dir, or repeat the original settings to resume it"
        )


def _as_before_option_existed(key, value):
    """Whether `value` of an option that a saved config.yaml lacks (written before the option
    existed) means what that run did: the option's default, or the default preset's value."""
    from gmsop_keras.models.presets import PRESETS

    option = BY_NAME.get(key)
    before = {None, "auto"} if key == "augment" else {None}
    if option is not None:
        before |= {json.dumps(_normal(option.default)), json.dumps(_normal(option.model_default))}
    if key in PRESETS["default"]:
        before.add(json.dumps(_normal(PRESETS["default"][key])))
    return value in before or json.dumps(_normal(value)) in before


def write_config(config):
    storage.makedirs(config["model_dir"])
    storage.write_text(storage.join(config["model_dir"], CONFIG_FILE), yaml.safe_dump(_normal(config), sort_keys=True))


def _normal(value):
    return json.loads(json.dumps(value))


def _dataset_kind(dataset):
    """imagenet64, places365 or synthetic; for a folder, the kind its manifest records."""
    if dataset in ("imagenet64", "places365", "synthetic"):
        return dataset
    from pipelines import read_manifest

    if storage.isfile(storage.join(dataset, "manifest.json")):
        return read_manifest(dataset).get("dataset", "folder")
    return "folder"


def _check_names(config):
    from gmsop_keras.models.names import check_backbone, parse_head

    try:
        check_backbone(config["backbone"])
        parse_head(config["head"])
    except ValueError as error:
        raise UsageError(str(error)) from None
