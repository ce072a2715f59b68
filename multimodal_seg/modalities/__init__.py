"""Modality adapters: readers that turn a file or array into :class:`ModalityData`."""

from .base import Axis, ModalityData
from .diffraction import (
    SUPPORTED_DIFFRACTION_EXTENSIONS,
    centre_of_mass,
    centre_patterns,
    read_diffraction,
    scale_patterns,
)
from .image import SUPPORTED_IMAGE_EXTENSIONS, read_image
from .registry import (
    ENTRY_POINT_GROUP,
    available_modalities,
    discover_plugins,
    get_reader,
    register_modality,
    unregister_modality,
)
from .spectrum import SUPPORTED_SPECTRUM_EXTENSIONS, read_spectrum_image

__all__ = [
    "ENTRY_POINT_GROUP",
    "SUPPORTED_DIFFRACTION_EXTENSIONS",
    "SUPPORTED_IMAGE_EXTENSIONS",
    "SUPPORTED_SPECTRUM_EXTENSIONS",
    "Axis",
    "ModalityData",
    "available_modalities",
    "centre_of_mass",
    "centre_patterns",
    "discover_plugins",
    "get_reader",
    "read_diffraction",
    "read_image",
    "read_spectrum_image",
    "register_modality",
    "scale_patterns",
    "unregister_modality",
]
