"""Many specimens in one run: ``run_batch`` (and ``mmseg batch``), resumable, on any Dask scheduler."""

from .inputs import Specimen, expand_inputs
from .run import BatchResult, run_batch

__all__ = ["BatchResult", "Specimen", "expand_inputs", "run_batch"]
