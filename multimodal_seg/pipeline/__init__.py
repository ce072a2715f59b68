"""The pipeline: the Study store, the stage functions, and ``segment()``."""

from .segment import segment

__all__ = ["segment"]
