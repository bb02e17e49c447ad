"""What a command does before TensorFlow loads: know it is a command, and quiet TensorFlow's start-up.

The package's commands (`python -m gmsop_keras.fit`, `gmsop-fit`, `python -m pipelines.convert`,
...) check their arguments before TensorFlow loads, so a typo answers in about a second, and they
keep TensorFlow's start-up lines (the absl preamble, the oneDNN and CPU-feature notices, the
`cuInit` failure of a machine without a GPU) off the terminal. Nothing here imports TensorFlow
at module level.
"""

import os
import sys

from pipelines.startup import load_tensorflow  # noqa: F401  (the commands' entry to TensorFlow)

_COMMAND_PACKAGES = ("gmsop_keras.", "pipelines.", "tuning.")
_SCRIPT_PREFIX = "gmsop-"


def started_as_command():
    """True when this process runs one of the package's commands.

    `python -m gmsop_keras.fit` (or any module of `gmsop_keras`, `pipelines`, `tuning`), or a
    console script `gmsop-*`. A user's own script or notebook is not a command.
    """
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    for i, arg in enumerate(argv[1:], start=1):
        if arg == "-m" and i + 1 < len(argv):
            return argv[i + 1].startswith(_COMMAND_PACKAGES)
        if arg.startswith("-m") and len(arg) > 2:
            return arg[2:].startswith(_COMMAND_PACKAGES)
    return os.path.basename(sys.argv[0] if sys.argv else "").startswith(_SCRIPT_PREFIX)
