"""Models: backbones (modified ResNet-18/50, WRN-36-2), pooling heads by name, `build_model`."""

from gmsop_keras.models.backbones import BACKBONES, build_backbone, list_backbones
from gmsop_keras.models.build import build_model
from gmsop_keras.models.heads import HeadSpec, list_heads, parse_head

__all__ = [
    "BACKBONES",
    "HeadSpec",
    "build_backbone",
    "build_model",
    "list_backbones",
    "list_heads",
    "parse_head",
]
