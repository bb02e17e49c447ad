"""A run's config.yaml: writing it, reading it back, and whether a new configuration may resume it.

The resolved configuration is written to the model directory once the inputs check out;
re-running in the same directory with a different configuration (a different preset
included) is refused, since it would resume a model that is not the one asked for. A
config.yaml written before an option existed lacks its key; the run did what the option's
default (or the default preset's value) does, so that value resumes it; likewise an option a
config.yaml left unset means build_model's default for its model. Paths (the model
directory, a dataset folder, the data dir) are recorded and compared in one spelling
(`run_directory.canonical_path`): `runs/x`, `./runs/x/` and its absolute path are the same run,
from any working directory; a relative path that an older config.yaml recorded is read against
the working directory. config.yaml is written once the run's first epoch has finished
(`callbacks.SaveConfig`), so a run that failed before it pins nothing. Nothing here imports Keras
or TensorFlow.
"""

import json

import yaml

from gmsop_keras.models.options import effective_value
from gmsop_keras.models.presets import PRESETS
from gmsop_keras.training.errors import UsageError
from gmsop_keras.training.options import BY_NAME, RESUMABLE_KEYS
from gmsop_keras.training.run_directory import canonical_path
from pipelines import storage

CONFIG_FILE = "config.yaml"
PATH_KEYS = ("model_dir", "data_dir", "dataset")
DATASET_NAMES = ("imagenet64", "places365", "synthetic")  # `dataset` values that are not folders


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
         if k not in RESUMABLE_KEYS and _meaning(k, saved) != _meaning(k, config)
         and not (k not in saved and _as_before_option_existed(k, config.get(k)))),
        key=lambda k: (k != "preset", k),  # a different preset explains the rest
    )
    if differences:
        shown = ", ".join(f"{k}: {saved.get(k)!r} there, {config.get(k)!r} now" for k in differences[:4])
        raise UsageError(
            f"model dir {config['model_dir']} holds a run with a different configuration ({shown}); "
            "use another --model-dir, or repeat the original settings to resume it"
        )


def _meaning(key, config):
    """A configuration's value of `key` as compared with another's: an unset model option as
    build_model's default for the model (a run saved with `noise` unset and one with
    `noise: per_sample` trained the same), paths in their canonical spelling."""
    value = config.get(key)
    if value is None and config.get("backbone") and config.get("head"):
        try:
            value = effective_value(key, value, config["backbone"], config["head"])
        except ValueError:  # a head name this version does not parse: compared as written
            pass
    return _comparable(key, value)


def _as_before_option_existed(key, value):
    """Whether `value` of an option that a saved config.yaml lacks (written before the option
    existed) means what that run did: the option's default (a model option's: build_model's),
    or the default preset's value."""
    option = BY_NAME.get(key)
    before = {None, "auto"} if key == "augment" else {None}
    if option is not None:
        before |= {json.dumps(normal(option.config_default)), json.dumps(normal(option.model_default))}
    if key in PRESETS["default"]:
        before.add(json.dumps(normal(PRESETS["default"][key])))
    return value in before or json.dumps(normal(value)) in before


def write_config(config):
    """Writes config.yaml, its paths in their canonical spelling (absolute, for local ones)."""
    recorded = {k: _comparable(k, v) if k in PATH_KEYS else v for k, v in config.items()}
    storage.makedirs(config["model_dir"])
    storage.write_text(storage.join(config["model_dir"], CONFIG_FILE), yaml.safe_dump(normal(recorded), sort_keys=True))


def _comparable(key, value):
    """`value` of option `key` as compared with a saved run's: paths in their canonical spelling."""
    if key in PATH_KEYS and isinstance(value, str) and value and not (key == "dataset" and value in DATASET_NAMES):
        return canonical_path(value)
    return normal(value)


def normal(value):
    """`value` as JSON reads it back (tuples as lists), to compare a configuration with a saved one."""
    return json.loads(json.dumps(value))
