"""multimodal_seg: unsupervised segmentation of electron-microscopy data.

>>> import multimodal_seg as mms
>>> seg = mms.segment("haadf.dm4", out="results/")      # doctest: +SKIP
>>> seg.chip_labels, seg.pixel_labels, seg.communities  # doctest: +SKIP

The same run step by step (:mod:`multimodal_seg.pipeline.stages`)::

    study = mms.Study.open("results/study.zarr")
    mms.stages.add_modalities(study, {"image": "haadf.dm4"})
    mms.stages.lay_chips(study)
    mms.stages.embed(study)
    mms.stages.build_graphs(study)
    mms.stages.find_communities(study)
    mms.stages.fuse(study)
    seg = mms.stages.collect(study, out="results/")
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import InputError, MMSegError, OutputError, ParameterError, WeightsError

try:
    __version__ = version("multimodal-seg")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

#: Public names imported on first use (PEP 562), so that importing one module of the package
#: (the command line's ``mmseg --help``, HyperSpy's signal classes) does
#: not import the whole pipeline with scikit-learn, Dask arrays and numba: 5.4 s on 2 cores.
_LAZY = {
    "segment": ".pipeline", "stages": ".pipeline", "Study": ".pipeline",
    "Segmentation": ".result", "SegmentConfig": ".config", "load_config": ".config",
}

if TYPE_CHECKING:
    from .config import SegmentConfig, load_config
    from .pipeline import Study, segment, stages
    from .result import Segmentation


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

__all__ = [
    "segment", "stages", "Segmentation", "Study", "SegmentConfig", "load_config",
    "MMSegError", "InputError", "ParameterError", "WeightsError", "OutputError", "__version__",
]
