"""The one `error: ...` line of every command: the wrapper the commands share, and `--debug`."""

import os
import sys
import traceback

from gmsop_keras.training.errors import TrainingDiverged, UsageError
from pipelines.errors import DataError
from pipelines.write_aside import write_failure


def add_debug_flag(parser):
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the full traceback; show TensorFlow's start-up log")
    return parser


def debug_requested(argv=None):
    """Whether the command line (`argv`, default `sys.argv[1:]`) asks for `--debug`."""
    return "--debug" in (sys.argv[1:] if argv is None else argv)


def run_cli(main, argv=None, interrupted="interrupted", output_flag=None):
    """Runs `main(argv)` and turns the project's own expected errors into one line on stderr.

    `UsageError` and `pipelines.DataError` (a bad flag, a missing or corrupt file) exit 2,
    `TrainingDiverged` exits 3, each as `error: ...` without a traceback; `--debug` adds the
    traceback. An `OSError` saying a file cannot be written (a full disk, a read-only folder:
    `pipelines.write_aside.write_failure`) exits 2 as `error: cannot write PATH: CAUSE; HINT`,
    the hint naming `output_flag` (the command's output option). Any other exception is a bug
    and propagates with its traceback. A closed stdout (`| head`) ends quietly with
    status 141, as a shell's pipeline does. Ctrl-C prints `interrupted` and exits 130.
    """
    debug = debug_requested(argv)
    try:
        return main(argv)
    except (UsageError, DataError, TrainingDiverged) as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 3 if isinstance(error, TrainingDiverged) else 2
    except BrokenPipeError:
        # The reader of stdout went away (`... | head`): not an error of this command. Point
        # stdout at /dev/null so the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:
        message = write_failure(error, output_flag)
        if message is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130

