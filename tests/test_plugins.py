"""The example plugin works through the real entry-point discovery path."""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

import numpy as np

import multimodal_seg as mms
from multimodal_seg.encoders import registry

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "mmseg-histogram-encoder"


def test_histogram_plugin_found_by_entry_point_and_used(monkeypatch, small_phantom):
    monkeypatch.syspath_prepend(str(PLUGIN))
    entry = md.EntryPoint(name="histogram", value="mmseg_histogram_encoder:HistogramEncoder",
                          group=registry.ENTRY_POINT_GROUP)
    real = md.entry_points

    def entry_points(**kw):
        if kw.get("group") == registry.ENTRY_POINT_GROUP:
            return md.EntryPoints([entry])
        return real(**kw)

    monkeypatch.setattr(registry.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    try:
        assert "histogram" in registry.available_encoders()
        seg = mms.segment(small_phantom.image, encoder="histogram", progress=False)
        assert seg.provenance["encoders"]["image"] == {"name": "histogram", "bins": 32, "version": 1}
        assert seg.embeddings.shape[1] == 32
        np.testing.assert_allclose(seg.embeddings.sum(axis=1), 1.0, rtol=1e-5)
        # Brightness alone still separates the dark amorphous front from the crystals.
        amorphous = small_phantom.truth == 3
        assert np.bincount(seg.pixel_labels[amorphous]).max() / amorphous.sum() > 0.8
    finally:
        sys.modules.pop("mmseg_histogram_encoder", None)
