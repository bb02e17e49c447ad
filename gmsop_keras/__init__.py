"""gmsop_keras: Global Gated Mixture of Second-order Pooling (GM-SOP, NeurIPS 2018) for Keras 3."""

from gmsop_keras.models import build_model, list_backbones, list_heads

__all__ = ["build_model", "list_backbones", "list_heads"]
