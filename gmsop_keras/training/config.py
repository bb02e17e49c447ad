"""A run's configuration, resolved from explicit values, a YAML file, the preset and the recipe.

    from gmsop_keras.training.config import resolve

    config = resolve({"head": "gm-sop-16-8", "epochs": 6}, config_file="run.yaml")

Callable from Python without argparse; the commands parse their flags into the explicit
values (`gmsop_keras.cli.arguments.resolve_config`). The options and their checks are
declared once, in `gmsop_keras.training.options.OPTIONS`.

Precedence: explicit values (flags) > the YAML file > the preset (`preset`) > the recipe row
the preset (or `recipe`) names (`gmsop_keras.training.recipes`) > built-in defaults.
`epochs` without `stages` scales the recipe's stages to it (`recipes.scale_stages`); a run
continued with a larger `epochs` keeps the stages recorded in its config.yaml
(`gmsop_keras.training.saved_config`), the extra epochs running at the last stage's rate.
Nothing here imports Keras or TensorFlow.
"""

import os
import re

import yaml

from gmsop_keras.models.names import check_backbone, own_head, parse_head
from gmsop_keras.models.options import check_model_options
from gmsop_keras.models.presets import preset_values
from gmsop_keras.training.errors import UsageError
from gmsop_keras.training.options import BY_NAME, DEFAULTS, MODEL_OPTION_KEYS, RECIPE_KEYS
from gmsop_keras.training.recipes import SYNTHETIC_SIZE, find_recipe, scale_stages
from gmsop_keras.training.saved_config import normal, read_saved_config
from pipelines import read_manifest, storage


def resolve(explicit=None, config_file=None):
    """Merges `explicit` values with the YAML file, the preset and the recipe; returns a plain dict.

    Args:
        explicit: `{option name: value}` (underscored names, as `OPTIONS`); None values are
            unset. The commands' flags.
        config_file: a YAML file whose keys are option names (dashes or underscores).

    Raises:
        UsageError: an unknown option or YAML key, a value of the wrong type or out of range, an
            unknown backbone or head, an option the model does not use. All checked before
            TensorFlow loads.
    """
    given = {k: v for k, v in (explicit or {}).items() if v is not None}
    unknown = sorted(set(given) - set(DEFAULTS) - set(RECIPE_KEYS))
    if unknown:
        raise UsageError(f"unknown options: {unknown}; valid options are {sorted(DEFAULTS)}")
    from_file = read_yaml_config(config_file) if config_file else {}
    explicit = {k: v for k, v in {**from_file, **given}.items() if v is not None}
    config = {**DEFAULTS, **explicit}
    check_values(config, source=config_file)
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
    before TensorFlow loads (the same declaration: gmsop_keras.models.options)."""
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
        problem = option.problem(value)
        if problem:
            raise UsageError(f"{where}{name} {problem}, got {value!r}")


def model_options(config):
    """The `build_model` keywords of the configuration: the model options it sets to something
    other than build_model's own default (so a default never reaches a model it does not apply to)."""
    return {
        k: config[k] for k in MODEL_OPTION_KEYS
        if config.get(k) is not None and normal(config[k]) != normal(BY_NAME[k].model_default)
    }


def _dataset_kind(dataset):
    """imagenet64, places365 or synthetic; for a folder, the kind its manifest records."""
    if dataset in ("imagenet64", "places365", "synthetic"):
        return dataset
    if storage.isfile(storage.join(dataset, "manifest.json")):
        return read_manifest(dataset).get("dataset", "folder")
    return "folder"


def _check_names(config):
    try:
        check_backbone(config["backbone"])
        parse_head(config["head"])
    except ValueError as error:
        raise UsageError(str(error)) from None
