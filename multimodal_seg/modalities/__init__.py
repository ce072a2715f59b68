"""Modality adapters: readers that turn a file or array into :class:`ModalityData`."""

from .base import Axis, ModalityData
from .image import SUPPORTED_IMAGE_EXTENSIONS, read_image
from .registry import (
    ENTRY_POINT_GROUP,
    available_modalities,
    discover_plugins,
    get_reader,
    register_modality,
    unregister_modality,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "SUPPORTED_IMAGE_EXTENSIONS",
    "Axis",
    "ModalityData",
    "available_modalities",
    "discover_plugins",
    "get_reader",
    "read_image",
    "register_modality",
    "unregister_modality",
]
