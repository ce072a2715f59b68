"""Regenerate the pictures of docs/hyperspy.md: python docs/make_hyperspy_figures.py

Runs the document's workflow on the built-in phantom (in a temporary folder) and saves
the HyperSpy plots, and a screenshot of the run's report.html where Chromium is installed.
"""

import subprocess
import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import hyperspy.api as hs  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import multimodal_seg.hyperspy as mh  # noqa: E402
from multimodal_seg.metrics import adjusted_rand  # noqa: E402
from multimodal_seg.synthetic.multimodal import multimodal_phantom  # noqa: E402

here = Path(__file__).parent / "images"
work = Path(tempfile.mkdtemp())
warnings.simplefilter("ignore")

phantom = multimodal_phantom((32, 32), seed=0)
modalities = phantom.modalities()
for name in ("haadf", "eels", "diffraction"):
    mh.to_signal(modalities[name]).save(work / f"{name}.hspy", overwrite=True)
haadf = hs.load(work / "haadf.hspy")
eels = hs.load(work / "eels.hspy", lazy=True)
diffraction = hs.load(work / "diffraction.hspy", lazy=True)
cmap = mh.segment({"haadf": haadf, "eels": eels, "diffraction": diffraction}, out=work / "run", progress=False)
print(cmap, "ARI with the truth at the scan positions:",
      round(adjusted_rand(cmap.labels_on(eels), phantom.truth), 3))

cmap.plot(haadf, alpha=0.45)
plt.gcf().set_size_inches(6.5, 4.6)
plt.savefig(here / "hyperspy_overlay.png", dpi=70, bbox_inches="tight")
plt.close("all")
cmap.plot_community_signals(eels)
plt.gcf().set_size_inches(6.5, 4.2)
plt.savefig(here / "hyperspy_spectra.png", dpi=70, bbox_inches="tight")
plt.close("all")
cmap.plot_community_signals(diffraction)
plt.gcf().set_size_inches(8, 2.4)
plt.savefig(here / "hyperspy_patterns.png", dpi=70, bbox_inches="tight")
plt.close("all")

# cluster_analysis with LeidenClustering on normalised spectra.
spectra = hs.load(work / "eels.hspy")
normalised = spectra / spectra.sum(-1).data[..., None]
normalised.decomposition(normalize_poissonian_noise=True, output_dimension=16, print_info=False)
normalised.cluster_analysis("decomposition", number_of_components=16, algorithm=mh.LeidenClustering())
labels = normalised.learning_results.cluster_labels.argmax(axis=0).reshape(phantom.truth.shape)
chemistry = np.where(phantom.truth == 1, 0, phantom.truth)
print("cluster_analysis: ARI with the chemistry", round(adjusted_rand(labels, chemistry), 3))
normalised.plot_cluster_labels()
plt.gcf().set_size_inches(8, 2.6)
plt.savefig(here / "hyperspy_clusters.png", dpi=70, bbox_inches="tight")
plt.close("all")

try:  # the report as a colleague opens it
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={work / 'profile'}", f"--screenshot={here / 'report.png'}",
                    "--window-size=1100,1400", (work / "run" / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    Image.open(here / "report.png").convert("RGB").resize((550, 700)).save(here / "report.png", optimize=True)
except (OSError, subprocess.SubprocessError) as exc:
    print("no report screenshot (Chromium not available):", exc)

# The table of docs/hyperspy.md: which features LeidenClustering needs (3 phantom seeds).
print("features | communities | ARI with the chemistry, per seed 0, 1, 2")
rows: dict = {}
for seed in (0, 1, 2):
    specimen = multimodal_phantom((32, 32), seed=seed)
    chemistry = np.where(specimen.truth == 1, 0, specimen.truth)
    spectra = mh.to_signal(specimen.modalities()["eels"])
    spectra.compute()
    normalised = spectra / spectra.sum(-1).data[..., None]
    for label, signal, components, algorithm in (
            ("raw counts, 4 components", spectra, 4, mh.LeidenClustering()),
            ("normalised, 4 components", normalised, 4, mh.LeidenClustering()),
            ("normalised, 16 components", normalised, 16, mh.LeidenClustering()),
            ("k-means told k=3, normalised, 4 components", normalised, 4, "kmeans")):
        if signal.learning_results.factors is None:
            signal.decomposition(normalize_poissonian_noise=True, output_dimension=16, print_info=False)
        extra = {"n_clusters": 3} if algorithm == "kmeans" else {}
        signal.cluster_analysis("decomposition", number_of_components=components, algorithm=algorithm, **extra)
        found = signal.learning_results.cluster_labels.argmax(axis=0).reshape(chemistry.shape)
        rows.setdefault(label, []).append((int(found.max()) + 1, adjusted_rand(found, chemistry)))
    own = mh.segment(spectra, progress=False)
    rows.setdefault("mh.segment(eels)", []).append((own.n_communities, adjusted_rand(own.labels_on(spectra),
                                                                                      chemistry)))
for label, found in rows.items():
    scores = [s for _, s in found]
    print(f"{label} | {sorted({n for n, _ in found})} | {[round(s, 3) for s in scores]} "
          f"worst {min(scores):.3f} mean {np.mean(scores):.3f}")
