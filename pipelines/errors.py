"""The one exception the data pipeline raises for problems with the user's data or output folder."""


class DataError(Exception):
    """A problem with input data or an output folder, explained in one line.

    The message names the file (or folder) and what is wrong with it, and where there is one, the fix:
    `python -m pipelines.convert` prints it as `error: <message>` and exits with status 2, without a
    traceback. Programming errors are not `DataError`s and keep their tracebacks.
    """
