"""gmsop_keras: Global Gated Mixture of Second-order Pooling (GM-SOP, NeurIPS 2018) for Keras 3.

    import gmsop_keras
    model = gmsop_keras.build_model("resnet18", "gm-sop-16-8", num_classes=1000)
    model = keras.saving.load_model("runs/.../best.keras")   # the import registered the layers

The layers are in `gmsop_keras.layers`, the functions under them in `gmsop_keras.ops`.

Importing the package registers every serializable class with Keras (as `import keras_hub`
does), so `keras.saving.load_model` reads this package's models in any script. The one
exception is the package's own commands (`python -m gmsop_keras.fit`, `gmsop-fit`, ...):
there the layers load after the command has checked its arguments, so that a typo answers
before TensorFlow loads; each command imports what it loads explicitly.
"""

from gmsop_keras import _startup

__all__ = ["build_model", "layers", "list_backbones", "list_heads", "ops"]

if not _startup.started_as_command():
    from gmsop_keras import layers, ops, optimizers  # noqa: F401  (registers the layers and optimizer with Keras)
    from gmsop_keras.models import build_model, list_backbones, list_heads  # noqa: F401


def __getattr__(name):
    # Only reached in a command, before it imported the layers.
    if name in ("layers", "ops", "optimizers"):
        import importlib

        return importlib.import_module(f"gmsop_keras.{name}")
    if name in ("build_model", "list_backbones", "list_heads"):
        from gmsop_keras import models

        return getattr(models, name)
    raise AttributeError(f"module 'gmsop_keras' has no attribute {name!r}")
