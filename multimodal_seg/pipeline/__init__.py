"""The pipeline: the Study store, the stage functions, and ``segment()`` over them."""

from . import stages
from .segment import segment
from .study import Study

__all__ = ["Study", "segment", "stages"]
