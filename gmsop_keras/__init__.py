"""gmsop_keras: Global Gated Mixture of Second-order Pooling (GM-SOP, NeurIPS 2018) for Keras 3.

    import gmsop_keras
    model = gmsop_keras.build_model("resnet18", "gm-sop-16-8", num_classes=1000)
    model = keras.saving.load_model("runs/.../best.keras")   # the import registered the layers

The layers are in `gmsop_keras.layers`, the functions under them in `gmsop_keras.ops`.

Importing the package registers every serializable class with Keras (as `import keras_hub`
does), so `keras.saving.load_model` reads this package's models in any script. The one
exception is the package's own commands (`python -m gmsop_keras.fit`, `gmsop-fit`, ...):
there the layers load after the command has checked its arguments, so that a typo answers
before TensorFlow loads (`gmsop_keras.cli.startup`; docs/ARCHITECTURE.md, "Start-up").
"""

import importlib

from gmsop_keras.cli.startup import started_as_command

__all__ = ["build_model", "layers", "list_backbones", "list_heads", "ops"]

if not started_as_command():
    from gmsop_keras import layers, ops  # noqa: F401  (registers the layers with Keras)
    from gmsop_keras.models import build_model, list_backbones, list_heads  # noqa: F401
    from gmsop_keras.training import optimizers  # noqa: F401  (registers the coupled-decay optimizer)


def __getattr__(name):
    # Reached only inside a command, before it imported the layers (see the docstring).
    if name in ("layers", "ops"):
        return importlib.import_module(f"gmsop_keras.{name}")
    if name in ("build_model", "list_backbones", "list_heads"):
        return getattr(importlib.import_module("gmsop_keras.models"), name)
    raise AttributeError(f"module 'gmsop_keras' has no attribute {name!r}")
