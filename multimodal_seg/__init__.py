"""multimodal_seg: unsupervised segmentation of electron-microscopy data.

>>> import multimodal_seg as mms
>>> seg = mms.segment("haadf.dm4", out="results/")      # doctest: +SKIP
>>> seg.chip_labels, seg.pixel_labels, seg.communities  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from .config import SegmentConfig, load_config
from .errors import InputError, MMSegError, OutputError, ParameterError, WeightsError
from .pipeline import segment
from .result import Segmentation
from .pipeline.study import Study

try:
    __version__ = version("multimodal-seg")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "segment", "Segmentation", "Study", "SegmentConfig", "load_config",
    "MMSegError", "InputError", "ParameterError", "WeightsError", "OutputError", "__version__",
]
