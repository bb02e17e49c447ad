"""The error users see as one line, and the wrapper the command-line tools share."""

import sys


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


def run_cli(main, argv=None):
    """Runs `main(argv)`; expected errors print `error: ...` on stderr (no traceback), exit 2."""
    from pipelines.errors import DataError

    try:
        return main(argv)
    except (UsageError, DataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume from the last finished epoch", file=sys.stderr)
        return 130
