"""Benchmarks behind ``mmseg bench``: the project against its peers on the same data.

:mod:`~multimodal_seg.bench.runner` (the command), :mod:`~multimodal_seg.bench.datasets`
(phantoms and labelled sets), :mod:`~multimodal_seg.bench.methods` (what is compared),
:mod:`~multimodal_seg.bench.peers` (other tools' baselines), :mod:`~multimodal_seg.bench.quality`,
:mod:`~multimodal_seg.bench.stability`, :mod:`~multimodal_seg.bench.speed` and
:mod:`~multimodal_seg.bench.report`.
"""

#: The parts ``mmseg bench`` can run, in the order it runs them.  Here, not in the runner, so
#: that the command line lists them without importing every benchmark.
PARTS = ("quality", "stability", "consistency", "speed", "families", "chip_scale", "separability")
