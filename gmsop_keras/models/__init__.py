"""Models: the names (head grammar, backbones), the options, the presets, and `build_model`.

`names`, `options` and `presets` are plain Python: the commands read them to check a command line
before TensorFlow loads. Everything that builds Keras objects (backbones, heads, `build_model`) is
imported on first use of its name here, so that `import gmsop_keras.models.names` stays free of
Keras.
"""

import importlib

_LAZY = {
    "BACKBONES": "backbones",
    "build_backbone": "backbones",
    "list_backbones": "backbones",
    "build_model": "build",
    "HeadSpec": "names",
    "list_heads": "names",
    "parse_head": "names",
    "IMAGENET_MODELS": "imagenet_resnets",
    "build_imagenet_backbone": "imagenet_resnets",
    "build_imagenet_model": "imagenet_resnets",
    "list_imagenet_models": "imagenet_resnets",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'gmsop_keras.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gmsop_keras.models.{_LAZY[name]}"), name)
