"""KerasTuner ablations of GM-SOP (paper Sec. 3.2): `python -m tuning.search alpha|nk|free`.

- `tuning.hypermodel.GMSOPHyperModel`: alpha, N, K, lr and head family over
  `gmsop_keras.build_model`, compiled as `python -m gmsop_keras.fit` does;
- `tuning.studies`: the studies' grids and `search_space`;
- `tuning.tuners.make_tuner`: grid, Bayesian or Hyperband, recording component usage per trial;
- `tuning.results`, `tuning.plots`: the per-trial table and the Figs. 2-3 style plots.

See docs/tuning.md.
"""


def __getattr__(name):
    # Lazy, so that `python -m tuning.search --help` and bad flags answer before TensorFlow loads.
    if name == "GMSOPHyperModel":
        from tuning.hypermodel import GMSOPHyperModel

        return GMSOPHyperModel
    if name == "make_tuner":
        from tuning.tuners import make_tuner

        return make_tuner
    raise AttributeError(f"module 'tuning' has no attribute {name!r}")


__all__ = ["GMSOPHyperModel", "make_tuner"]
