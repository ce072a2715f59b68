"""Time series: one segmentation of many frames with community ids that last, live or at once.

- :func:`segment_series` (``mmseg series``): every frame at once, one graph over the
  chips of all frames and one partition, so an id means the same material in every
  frame (:mod:`multimodal_seg.series.batch`);
- :class:`LiveSeries` and :func:`watch` (``mmseg watch``): frames as they arrive, each
  joining the partition with the memberships of earlier chips fixed, re-optimised
  every so often; resumable (:mod:`multimodal_seg.series.live`);
- per frame: area fraction, crystallinity and intensity of every community
  (``fractions.csv``) and ranked points of interest (:mod:`multimodal_seg.series.poi`).

See ``docs/series.md``.
"""

from .batch import SeriesResult, segment_series
from .frames import Frame, SeriesAxis, read_frames
from .live import LiveSeries, watch
from .model import FrameReport, SeriesConfig
from .poi import PointOfInterest

__all__ = ["segment_series", "SeriesResult", "LiveSeries", "watch", "Frame", "SeriesAxis", "read_frames", "FrameReport",
           "SeriesConfig", "PointOfInterest"]
