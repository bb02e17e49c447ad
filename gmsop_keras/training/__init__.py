"""The training library: a run's configuration, recipes, optimizers, callbacks, run directory
(lock, backups, metrics), distribution (strategies, replicas, cluster launch) and the data hookup.

`python -m gmsop_keras.fit` is a thin command over `gmsop_keras.training.trainer.run`; the same
function trains from Python with a configuration dict (`gmsop_keras.training.config.resolve`;
the options are declared in `gmsop_keras.training.options`).
"""
