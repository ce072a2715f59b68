"""How chemical are the communities of real spectrum images: scores against element-line maps.

The reference is independent of any partition: the net intensity maps of the X-ray lines
present in a spectrum image (:func:`multimodal_seg.analysis.spectral_lines.feature_intensities`
per scan position: line window minus side windows).  A partition's score on one map is its
correlation ratio eta^2 = between-community variance / total variance, the share of the map's
variance the communities explain (1: every community is one composition).
:func:`run_file` scores the project's default partition of a spectrum image alone and
HyperSpy's decomposition + k-means given the same number of clusters, :func:`across_seeds`
does so for several seeds and says how far the seeds' partitions agree
(``benchmarks/bench_chemistry.py`` runs them over the real EDS files).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..analysis.spectral_lines import (EDS_HALF_WIDTH_KEV, eds_half_window, eds_names, line_explains,
                                       feature_intensities, line_table, peak_names, strongest)
from ..modalities import Axis, read_spectrum_image
from ..pipeline.segment import segment
from .peers import hyperspy_kmeans_spectrum

#: (name, path in the data folder, reader options): the options a user would give
#: (sparse cubes binned, as docs/user-guide.md advises).
FILES = [
    ("chevkinite (Bruker SEM)", "multimodal/bruker_chevkinite_SEM_EDS/30x30_instructively_packed_16bit_compressed.bcf",
     {}),
    ("Nb interface (Velox STEM)", "multimodal/velox_Nb_interface_STEM_EDS/fei_SI_SuperX-HAADF_20frames_10x50.emd",
     {"bin_channels": 8}),
    ("Al/Cu map 3 (Phenom SEM)", "multimodal/phenom_AlCu_SEM_EDS/Elid2Version4.elid", {"signal": "Map 3"}),
    ("Al/Cu map 6 (Phenom SEM)", "multimodal/phenom_AlCu_SEM_EDS/Elid2Version4.elid", {"signal": "Map 6"}),
    ("FeS particle (JEOL TEM)", "multimodal/jeol_FeS_TEM_EDS/rawdata.ASW", {"bin_channels": 32, "bin_scan": 4}),
    ("P45 particles (Bruker SEM)", "multimodal/bruker_P45_SEM_BSE_EDS/P45_the_default_job.bcf", {"bin_channels": 8}),
]


#: Lines below this energy (keV) are left out: the detector's noise peak sits there.
MIN_KEV = 0.25


def correlation_ratio(values: np.ndarray, labels: np.ndarray) -> float:
    """eta^2: the share of the variance of ``values`` (per position) explained by ``labels``."""
    values, labels = np.asarray(values, dtype=np.float64).ravel(), np.asarray(labels).ravel()
    total = np.sum((values - values.mean()) ** 2)
    if total == 0:
        return float("nan")
    counts = np.bincount(labels)
    means = np.bincount(labels, weights=values) / np.maximum(counts, 1)
    return float(np.sum(counts * (means - values.mean()) ** 2) / total)


def line_maps(cube: np.ndarray, axis: Axis, *, top: int, beam_energy: float | None = None,
              elements: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The ``top`` strongest significant lines of the map sum and their net intensity maps
    ``(rows, cols, n_lines)``.

    Which peaks are kept depends on names only where a weaker line of a family named at a
    stronger peak, or a sum or escape peak of stronger ones, is left out (``line_explains``).
    Each is named as ``community_signals.png`` names a peak
    (:func:`~multimodal_seg.analysis.spectral_lines.peak_names` of the map sum's
    line table, at ``beam_energy`` keV or the axis' top, with the specimen's ``elements`` where
    known), or ``"? at E keV"`` where no line is borne out there."""
    rows, cols, channels = cube.shape
    spectra = cube.reshape(rows * cols, channels).astype(np.float64)
    features, net = feature_intensities(spectra, axis)
    factor = 1e3 if axis.units.strip().lower() == "ev" else 1.0
    table = line_table(spectra.sum(axis=0)[None], axis, beam_energy=beam_energy, elements=elements)  # the map sum's
    total_net, error = np.asarray(table["intensities"])[0], np.asarray(table["errors"])[0]
    # a line's window is whole channels: on binned axes it reaches past EDS_HALF_WIDTH_KEV
    half = max(EDS_HALF_WIDTH_KEV, eds_half_window(axis.scale / factor) * abs(axis.scale) / factor) * factor
    # Distinct peaks, strongest first: net sum above 3 standard errors (Poisson, background
    # included), above the noise peak (MIN_KEV), not where the window of a peak already kept
    # reaches (the element table names many lines at one energy, and windows that overlap read
    # the same counts), and not a weaker line of a family named at a stronger peak kept
    # (copper's K beta beside its K alpha, the flank of a strong line: the same element's map
    # again) nor a sum peak.
    energies = [f.energy for f in features]
    candidate = (total_net > 3 * error) & (np.asarray(energies) / factor >= MIN_KEV)
    keep = strongest(energies, np.where(candidate, total_net, np.nan)[None], top=top, floor=0.0, apart=2 * half,
                     explains=line_explains(table, eds_names(table)))
    keep = sorted(keep, key=lambda i: -total_net[i])
    names = peak_names(table, keep)
    labels = [name or f"? at {features[i].energy / factor:.2f} keV" for name, i in zip(names, keep)]
    return labels, net[:, keep].reshape(rows, cols, len(keep))


def run_file(name: str, path: Path, options: dict, *, top: int, seed: int) -> dict:
    """Both partitions of one file and their eta^2 on each line map (``labels``: the project's
    ``(rows, cols)`` partition of the scan)."""
    modality = read_spectrum_image(path, **options)
    cube = np.asarray(modality.data)
    lines, maps = line_maps(cube, modality.axes[2], top=top, beam_energy=modality.metadata.get("beam_energy_kev"),
                            elements=modality.metadata.get("elements"))
    start = time.perf_counter()
    seg = segment({"eds:spectrum": (path, options)}, progress=False, seed=seed)
    project_s = time.perf_counter() - start
    project = np.asarray(seg.scan_labels["eds"])
    k = int(project.max()) + 1
    start = time.perf_counter()
    hyperspy = hyperspy_kmeans_spectrum(cube, n_clusters=k, seed=seed) if k > 1 else np.zeros_like(project)
    hyperspy_s = time.perf_counter() - start
    scores = {"project": [correlation_ratio(maps[..., i], project) for i in range(len(lines))],
              "hyperspy": [correlation_ratio(maps[..., i], hyperspy) for i in range(len(lines))]}
    return {"name": name, "path": str(path), "options": options, "scan": list(cube.shape[:2]),
            "channels": int(cube.shape[2]), "counts_per_position": float(cube.sum() / np.prod(cube.shape[:2])),
            "k": k, "k_hyperspy": int(hyperspy.max()) + 1, "lines": lines, "eta2": scores,
            "mean": {m: float(np.nanmean(v)) if v else float("nan") for m, v in scores.items()},
            "seconds": {"project": project_s, "hyperspy": hyperspy_s},
            "decision": seg.provenance["partitions"]["eds"]["decision"], "labels": project}


def across_seeds(name: str, path: Path, options: dict, *, top: int, seeds: Sequence[int]) -> list[dict]:
    """:func:`run_file` for each of ``seeds``, without the labels; the first seed's result also
    holds ``seeds``: the seeds, the project's number of communities in each, the worst ARI
    between two seeds' partitions (1 for one seed), the mean eta^2 of the project and of
    HyperSpy over the seeds, and in how many seeds the project's is at least HyperSpy's."""
    from ..metrics import adjusted_rand

    runs = [run_file(name, path, options, top=top, seed=seed) for seed in seeds]
    labels = [run.pop("labels") for run in runs]
    runs[0]["seeds"] = {
        "seeds": list(seeds), "k": [run["k"] for run in runs],
        "worst_ari": min((adjusted_rand(a, b) for a, b in itertools.combinations(labels, 2)), default=1.0),
        "mean": {m: float(np.mean([run["mean"][m] for run in runs])) for m in ("project", "hyperspy")},
        "reached": sum(run["mean"]["project"] >= run["mean"]["hyperspy"] for run in runs)}
    return runs


