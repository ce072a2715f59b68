"""Regenerate the pictures in docs/images from the built-in phantom: python docs/make_figures.py"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from multimodal_seg.demo import run_demo  # noqa: E402
from multimodal_seg.plot import community_graph, summary  # noqa: E402
from multimodal_seg.synthetic.phantoms import haadf_phantom  # noqa: E402

here = Path(__file__).parent / "images"
here.mkdir(exist_ok=True)
seg, scores = run_demo(None, size=512, seed=0, progress=False)
phantom = haadf_phantom((512, 512), seed=0)
summary(phantom.image, seg.pixel_labels, seg.chip_labels, truth=phantom.truth,
        pixel_size=phantom.pixel_size, units="nm").savefig(here / "demo_summary.png", dpi=70)
community_graph(seg.graph, seg.chip_labels.ravel()).savefig(here / "demo_graph.png", dpi=60)
print({k: round(v, 3) for k, v in scores.items()})
print(seg.communities)

# Boundary refinement: the same partition painted from the chip grid (refine=1) and from refined grids.
import multimodal_seg as mms  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from multimodal_seg.metrics import adjusted_rand, matched_labels  # noqa: E402
from multimodal_seg.plot import label_rgba  # noqa: E402

small = haadf_phantom((256, 256), seed=3)
panels = {"truth": small.truth}
for refine in (1, "auto", 4):
    result = mms.segment(small.image, refine=refine, progress=False)
    # each community in the colour of the true region it matches, the same in every panel
    panels[f"refine={refine}: ARI {adjusted_rand(result.pixel_labels, small.truth):.3f}"] = matched_labels(
        result.pixel_labels, small.truth)
fig = Figure(figsize=(14, 3.8), layout="constrained")
for ax, (title, labels) in zip(fig.subplots(1, len(panels)), panels.items()):
    ax.imshow(small.image, cmap="gray")
    ax.imshow(label_rgba(labels, 0.45), interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
fig.savefig(here / "refine.png", dpi=70)
