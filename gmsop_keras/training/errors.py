"""The training library's errors that a command prints as one line (`gmsop_keras.cli.errors.run_cli`)."""


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: printed as one line, exit status 3."""
