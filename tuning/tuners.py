"""KerasTuner's grid, Bayesian and Hyperband tuners, each trial also keeping its own records.

The only addition to KerasTuner's tuners: every trial writes into its own
folder (`<directory>/keras_tuner/trial_<id>/`)

- `log.csv`: one row per epoch with every metric in the logs, `images_per_second`
  included (Keras' `CSVLogger` with epochs from 1, as `fit` writes; KerasTuner itself keeps only
  the best epoch's metrics);
- `component_usage.csv`: samples routed to each component per epoch
  (`gmsop_keras.training.callbacks.ComponentUsage`), the data of the paper's Fig. 2 (left).

The grid search also resumes in a new process, which KerasTuner 1.4.8's own does
not (`ResumableGridSearchOracle`).
"""

import functools

import keras_tuner

from gmsop_keras.training.callbacks import ComponentUsage, EpochCSVLogger
from pipelines import storage

OBJECTIVE = "val_top1"
PROJECT_NAME = "keras_tuner"
TRIAL_LOG = "log.csv"


class _TrialRecords:
    """Adds the per-trial `log.csv` and `component_usage.csv` writers to every trial's callbacks."""

    def run_trial(self, trial, *args, **kwargs):
        trial_dir = self.get_trial_dir(trial.trial_id)
        records = [EpochCSVLogger(storage.join(trial_dir, TRIAL_LOG)), ComponentUsage(trial_dir)]
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + records
        return super().run_trial(trial, *args, **kwargs)


class ResumableGridSearchOracle(keras_tuner.oracles.GridSearchOracle):
    """KerasTuner's grid oracle, with its bookkeeping rebuilt when a search is reloaded.

    KerasTuner 1.4.8's grid oracle keeps the grid order of its trials
    (`_ordered_ids`) and the trials whose successor is still to be proposed
    (`_populate_next`) only in memory. Reloaded in a new process, a grid search
    therefore stops at once, or, after re-running an interrupted trial, fails
    with `KeyError` (keras-team/keras-tuner#1055). Both are rebuilt here from
    the trials, which are saved: all trials in grid order, and every finished
    one queued (a successor already tried is skipped, as in the original).
    """

    def set_state(self, state):
        super().set_state(state)
        values = {trial_id: trial.hyperparameters.values for trial_id, trial in self.trials.items()}
        in_grid_order = sorted(values, key=functools.cmp_to_key(lambda a, b: self._compare(values[a], values[b])))
        self._ordered_ids = type(self._ordered_ids)()
        for trial_id in in_grid_order:
            self._ordered_ids.insert(trial_id)  # appends
        self._populate_next = [trial_id for trial_id in in_grid_order if trial_id in self.end_order]


class GridSearch(_TrialRecords, keras_tuner.Tuner):
    """`keras_tuner.GridSearch` that keeps per-trial records and resumes (`ResumableGridSearchOracle`)."""

    def __init__(self, hypermodel=None, *, objective=None, max_trials=None, seed=None, hyperparameters=None,
                 tune_new_entries=True, allow_new_entries=True, max_retries_per_trial=0,
                 max_consecutive_failed_trials=3, **kwargs):
        oracle = ResumableGridSearchOracle(
            objective=objective, max_trials=max_trials, seed=seed, hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries, allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial, max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle, hypermodel, **kwargs)


class BayesianOptimization(_TrialRecords, keras_tuner.BayesianOptimization):
    """`keras_tuner.BayesianOptimization` that keeps per-trial records."""


class Hyperband(_TrialRecords, keras_tuner.Hyperband):
    """`keras_tuner.Hyperband` that keeps per-trial records."""


TUNERS = {"grid": GridSearch, "bayesian": BayesianOptimization, "hyperband": Hyperband}


def make_tuner(kind, hypermodel, hyperparameters, directory, *, max_trials=None, max_epochs=None,
               strategy=None, seed=0, overwrite=False):
    """A tuner maximising `val_top1` over `hyperparameters`, its state in `directory/keras_tuner`.

    Hyperparameters that `hypermodel.build` declares but `hyperparameters` lacks
    keep their defaults (`tune_new_entries=False`). An existing state in the
    directory is resumed: finished trials are not run again.

    Args:
        kind: `"grid"`, `"bayesian"` or `"hyperband"`.
        hypermodel: a `keras_tuner.HyperModel`, e.g. `GMSOPHyperModel`.
        hyperparameters: the search space, a `keras_tuner.HyperParameters`.
        directory: the study folder.
        max_trials: grid and Bayesian: the most trials (grid: default all).
        max_epochs: Hyperband: the most epochs of one model.
        strategy: a `tf.distribute.Strategy` to build and train every trial in.
        seed: the tuner's random seed.
        overwrite: start afresh instead of resuming.
    """
    if kind not in TUNERS:
        raise ValueError(f"`kind` must be one of {', '.join(TUNERS)}. Received: kind={kind!r}")
    common = dict(
        hypermodel=hypermodel,
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        hyperparameters=hyperparameters,
        tune_new_entries=False,
        seed=seed,
        directory=directory,
        project_name=PROJECT_NAME,
        distribution_strategy=strategy,
        overwrite=overwrite,
    )
    if kind == "hyperband":
        if not max_epochs:
            raise ValueError(f"Hyperband needs `max_epochs`. Received: max_epochs={max_epochs}")
        return Hyperband(max_epochs=max_epochs, factor=3, **common)
    if kind == "bayesian":
        return BayesianOptimization(max_trials=max_trials or 10, **common)
    return GridSearch(max_trials=max_trials, **common)
