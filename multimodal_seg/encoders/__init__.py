"""Chip encoders: the interface, the registry, and pretrained-weights handling.

``get_encoder("resnet50", weights="micronet")`` builds an encoder by name;
``resolve_auto()`` picks one for ``encoder="auto"``.  Encoder modules (and torch)
are imported only when an encoder is built.
"""

from .base import Encoder
from .checkpoint import load_encoder
from .registry import available_encoders, get_encoder, register_encoder, resolve_auto
from .weights import resolve_weights, weights_dir

__all__ = [
    "Encoder",
    "available_encoders",
    "get_encoder",
    "load_encoder",
    "register_encoder",
    "resolve_auto",
    "resolve_weights",
    "weights_dir",
]
