"""gmsop_keras: Global Gated Mixture of Second-order Pooling (GM-SOP, NeurIPS 2018) for Keras 3.

    import gmsop_keras
    model = gmsop_keras.build_model("resnet18", "gm-sop-16-8", num_classes=1000)

The layers are in `gmsop_keras.layers`, the functions under them in `gmsop_keras.ops`. The
names below load Keras on first use, so that the command-line tools can quiet TensorFlow's
start-up logging before it loads.
"""

import importlib

_LAZY = {"build_model": "gmsop_keras.models", "list_backbones": "gmsop_keras.models",
         "list_heads": "gmsop_keras.models"}

__all__ = ["build_model", "list_backbones", "list_heads"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gmsop_keras' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
