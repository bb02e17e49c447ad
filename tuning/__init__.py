"""KerasTuner ablations of GM-SOP (paper Sec. 3.2): `python -m tuning.search alpha|nk|free`.

- `tuning.hypermodel.GMSOPHyperModel`: alpha, N, K, lr and head family over
  `gmsop_keras.build_model`, compiled as `python -m gmsop_keras.fit` does;
- `tuning.studies`: the studies' grids and `search_space`;
- `tuning.tuners.make_tuner`: grid, Bayesian or Hyperband, recording component usage per trial;
- `tuning.results`, `tuning.plots`: the per-trial table and the Figs. 2-3 style plots.

See docs/tuning.md.
"""

import importlib

# Lazy, as `gmsop_keras.models`: both import TensorFlow, and `python -m tuning.search --help` and
# bad flags answer before TensorFlow loads.
_LAZY = {"GMSOPHyperModel": "tuning.hypermodel", "make_tuner": "tuning.tuners"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tuning' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
