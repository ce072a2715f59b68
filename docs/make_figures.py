"""Regenerate the pictures in docs/images from the built-in phantom: python docs/make_figures.py"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from multimodal_seg.demo import run_demo  # noqa: E402
from multimodal_seg.plot import community_graph, summary  # noqa: E402
from multimodal_seg.phantoms import haadf_phantom  # noqa: E402

here = Path(__file__).parent / "images"
here.mkdir(exist_ok=True)
seg, scores = run_demo(None, size=512, seed=0, progress=False)
phantom = haadf_phantom((512, 512), seed=0)
summary(phantom.image, seg.pixel_labels, seg.chip_labels, truth=phantom.truth,
        pixel_size=phantom.pixel_size, units="nm").savefig(here / "demo_summary.png", dpi=70)
community_graph(seg.graph, seg.chip_labels.ravel()).savefig(here / "demo_graph.png", dpi=60)
print({k: round(v, 3) for k, v in scores.items()})
print(seg.communities)
