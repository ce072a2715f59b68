"""Benchmark helpers: the peer baselines :mod:`multimodal_seg.bench.peers` that ``mmseg bench``
compares the project's segmentations against."""
