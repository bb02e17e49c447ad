"""What the commands share: knowing they are commands, quiet start-up, the one `error: ...` line,
exit codes, `--debug`, and the command-line flags derived from the options' declarations.

Nothing here imports TensorFlow at module level: a command checks its arguments first.
"""
