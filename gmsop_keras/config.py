"""Training configuration: command-line flags, an optional YAML file, and the paper's recipes.

Precedence: explicit flags > the `-c/--config` YAML file > the recipe (`--recipe paper`) >
built-in defaults. The resolved configuration is written to the model directory; re-running
in the same directory with a different configuration is refused, since it would resume a
model that is not the one asked for.
"""

import argparse
import json
import os

import yaml

from gmsop_keras.errors import UsageError
from gmsop_keras.recipes import paper_recipe

DEFAULTS = dict(
    dataset="synthetic", data_dir=None, backbone="resnet18", head="gm-sop-16-8", recipe="paper",
    epochs=None, stages=None, batch_size=None, lr=None, lr_decay=None, momentum=None, weight_decay=None,
    steps_per_epoch=None, validation_steps=None, model_dir=None, seed=0, mixed_precision=False,
    strategy="auto", balance_loss_weight=None, num_iterations=None, noise=None, dropout=None,
    dispatch=None, last_stride=None, gsop_stages=None, gaussian_pooling=None, export=None, cache=False, verbose="auto",
)
# May differ between a run and its resumption without changing what is trained.
RESUMABLE_KEYS = ("epochs", "stages", "export", "strategy", "verbose", "data_dir", "validation_steps")
MODEL_OPTION_KEYS = (
    "balance_loss_weight", "num_iterations", "noise", "dropout", "dispatch", "last_stride",
    "gsop_stages", "gaussian_pooling",
)
CONFIG_FILE = "config.yaml"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m gmsop_keras.fit",
        description="Train a CNN with GM-SOP (or any head of the paper's Tables 2-4) on ImageNet-64, "
        "Places365, the built-in synthetic set, or a folder of converted TFRecords.",
    )
    add = parser.add_argument
    add("-c", "--config", help="YAML file whose keys are flag names (dashes or underscores)")
    add("--dataset", help="imagenet64 | places365 | synthetic | a folder of TFRecords (default: synthetic)")
    add("--data-dir", help="converted TFRecords (python -m pipelines.convert); synthetic: cache folder")
    add("--backbone", help="resnet18 | resnet50 | wrn-36-2 (default: resnet18)")
    add("--head", help="gap, gap-512, sr-sop, psr-sop, ave-sop-16, gm-sop-16-8, gm-gap-N-K, ... (default: gm-sop-16-8)")
    add("--recipe", choices=("paper", "none"), help="the paper's schedule for this model and dataset (default)")
    add("--epochs", type=int, help="total epochs (default: the recipe's)")
    add("--stages", type=int, nargs="+", help="step schedule: epochs at lr, lr*decay, ... (e.g. 40 10 5 5)")
    add("--batch-size", type=int, help="global batch size, split across replicas")
    add("--lr", type=float, help="initial learning rate")
    add("--lr-decay", type=float, help="factor at every stage boundary (0.1)")
    add("--momentum", type=float)
    add("--weight-decay", type=float, help="L2 weight decay as in the paper (5e-4)")
    add("--steps-per-epoch", type=int, help="train this many steps per epoch (short runs)")
    add("--validation-steps", type=int, help="evaluate on this many batches only")
    add("--model-dir", help="checkpoints, logs, plots and the resolved config (default: runs/<dataset>-<backbone>-<head>)")
    add("--seed", type=int)
    add("--mixed-precision", action="store_true", default=None, help="mixed_float16 (second-order parts stay float32)")
    add("--strategy", choices=("auto", "none", "mirrored", "multi-worker"))
    add("--balance-loss-weight", type=float, help="alpha of the balance loss (Eq. 4; 100)")
    add("--num-iterations", type=int, help="Newton-Schulz iterations (5; the official code used 3)")
    add("--noise", choices=("per_sample", "per_component", "none"), help="gate noise")
    add("--dropout", type=float, help="dropout before the classifier (0.2; 0.4 for WRN GM-SOP)")
    add("--dispatch", choices=("auto", "dense", "gather"), help="top-K dispatch of the mixture")
    add("--last-stride", type=int, choices=(1, 2), help="stride of the last stage")
    add("--gsop-stages", type=int, nargs="+", help="GSoP blocks in the last block of these stages (1-4)")
    add("--gaussian-pooling", action="store_true", default=None, help="Gaussian pooling in place of strided blocks")
    add("--export", help="export a SavedModel to saved_models/NAME at the end")
    add("--cache", action="store_true", default=None, help="keep the training records in memory")
    add("--verbose", choices=("auto", "0", "1", "2"), help="Keras' progress: auto = bar on a terminal")
    return parser


def resolve_config(argv=None):
    """Parses flags and merges them with the YAML file and the recipe; returns a plain dict."""
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    from_file = {}
    if args.config:
        if not os.path.isfile(args.config):
            raise UsageError(f"config file {args.config} not found")
        with open(args.config) as f:
            from_file = {k.replace("-", "_"): v for k, v in (yaml.safe_load(f) or {}).items()}
        unknown = sorted(set(from_file) - set(DEFAULTS))
        if unknown:
            raise UsageError(f"unknown keys in {args.config}: {unknown}; valid keys are {sorted(DEFAULTS)}")
    config = {**DEFAULTS, **from_file, **flags}
    _check_names(config)
    if config["recipe"] == "paper":
        recipe = paper_recipe(_dataset_kind(config["dataset"]), config["backbone"], config["head"])
        for key, value in recipe.items():
            if key in config and config[key] is None:
                config[key] = list(value) if isinstance(value, tuple) else value
            elif key == "synthetic":
                config.setdefault("synthetic", value)
    fallback = dict(stages=[config["epochs"] or 10], lr=0.1, batch_size=256, momentum=0.9,
                    weight_decay=5e-4, lr_decay=0.1)
    for key, value in fallback.items():
        if config[key] is None:
            config[key] = value
    if config["epochs"] is None:
        config["epochs"] = int(sum(config["stages"]))
    if config["model_dir"] is None:
        name = os.path.basename(os.path.normpath(config["dataset"]))
        config["model_dir"] = os.path.join("runs", f"{name}-{config['backbone']}-{config['head']}")
    return config


def model_options(config):
    """The `build_model` options the configuration sets."""
    return {k: config[k] for k in MODEL_OPTION_KEYS if config.get(k) is not None}


def check_model_dir(config):
    """Refuses to resume a model directory that was made for a different configuration."""
    path = os.path.join(config["model_dir"], CONFIG_FILE)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        saved = yaml.safe_load(f) or {}
    differences = sorted(
        k for k in set(saved) | set(config)
        if k not in RESUMABLE_KEYS and _normal(saved.get(k)) != _normal(config.get(k))
    )
    if differences:
        shown = ", ".join(f"{k}: {saved.get(k)!r} there, {config.get(k)!r} now" for k in differences[:4])
        raise UsageError(
            f"model dir {config['model_dir']} holds a run with a different configuration ({shown}); "
            "use another --model-dir, or repeat the original settings to resume it"
        )


def write_config(config):
    os.makedirs(config["model_dir"], exist_ok=True)
    path = os.path.join(config["model_dir"], CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        yaml.safe_dump(json.loads(json.dumps(config)), f, sort_keys=True)
    os.replace(path + ".tmp", path)


def _normal(value):
    return json.loads(json.dumps(value))


def _dataset_kind(dataset):
    """imagenet64, places365 or synthetic; for a folder, the kind its manifest records."""
    if dataset in ("imagenet64", "places365", "synthetic"):
        return dataset
    from pipelines import read_manifest

    if os.path.isfile(os.path.join(dataset, "manifest.json")):
        return read_manifest(dataset).get("dataset", "folder")
    return "folder"


def _check_names(config):
    from gmsop_keras.models import list_backbones, list_imagenet_models, parse_head

    valid = list_backbones() + list_imagenet_models()
    if config["backbone"] not in valid:
        raise UsageError(f"unknown backbone {config['backbone']!r}; valid backbones: {', '.join(valid)}")
    try:
        parse_head(config["head"])
    except ValueError as error:
        raise UsageError(str(error)) from None
