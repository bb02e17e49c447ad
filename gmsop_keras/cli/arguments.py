"""The commands' training flags, made from the options' declaration (`gmsop_keras.training.options`).

`python -m gmsop_keras.fit` takes every option as a flag (`build_parser`); `tuning.search`
adds those a study passes on (`add_option_arguments`). An option `name` is the flag
`--name` (dashes for underscores); a boolean has a `--no-name` form; an unset flag is None,
so that the YAML file, the preset and the recipe fill it (`gmsop_keras.training.config`).
"""

import argparse

from gmsop_keras.cli.errors import add_debug_flag
from gmsop_keras.training.config import resolve
from gmsop_keras.training.options import BY_NAME, OPTIONS

_TYPES = {"str": str, "int": int, "float": float, "ints": int}


def build_parser():
    """`python -m gmsop_keras.fit`'s parser: `-c/--config`, every option, `--debug`."""
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
        default = option.config_default
        shown = f" (default: {default})" if default not in (None, False) else ""
        kwargs = dict(help=option.help + shown, default=None)
        if option.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _TYPES[option.kind]
            if option.kind == "ints":
                kwargs["nargs"] = "+"
            if option.choices:
                kwargs["choices"] = option.choices
        parser.add_argument(flag, **kwargs)


def resolve_config(argv=None):
    """Parses `fit`'s flags (`argv`, default `sys.argv[1:]`) and resolves the run's configuration.

    Raises:
        UsageError: see `gmsop_keras.training.config.resolve`.
    """
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if v is not None and k not in ("config", "debug")}
    return resolve(flags, config_file=args.config)
