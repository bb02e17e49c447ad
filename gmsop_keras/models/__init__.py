"""Models: backbones (modified ResNet-18/50, WRN-36-2), pooling heads by name, `build_model`."""

from gmsop_keras.models.backbones import BACKBONES, build_backbone, list_backbones
from gmsop_keras.models.build import build_model
from gmsop_keras.models.heads import HeadSpec, list_heads, parse_head
from gmsop_keras.models.imagenet_resnets import IMAGENET_MODELS, build_imagenet_model, list_imagenet_models

__all__ = [
    "BACKBONES",
    "HeadSpec",
    "IMAGENET_MODELS",
    "build_backbone",
    "build_imagenet_model",
    "build_model",
    "list_backbones",
    "list_heads",
    "list_imagenet_models",
    "parse_head",
]
