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

from importlib.metadata import PackageNotFoundError, version

from .config import SegmentConfig, load_config
from .errors import InputError, MMSegError, OutputError, ParameterError, WeightsError
from .pipeline import Study, segment, stages
from .result import Segmentation

try:
    __version__ = version("multimodal-seg")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "segment", "stages", "Segmentation", "Study", "SegmentConfig", "load_config",
    "MMSegError", "InputError", "ParameterError", "WeightsError", "OutputError", "__version__",
]
