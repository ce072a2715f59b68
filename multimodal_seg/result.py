"""The result of a segmentation run, with its pictures and files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr
from matplotlib.figure import Figure

from . import plot
from .chips.grid import ChipGrid
from .analysis.descriptors import CommunityRow, table_to_csv
from .errors import OutputError
from .graphs.labels import communities_phrase
from .metrics import agreement
from .modalities.base import Axis
from .provenance import atomic_path, to_json, write_text_atomic
from .report import report_html

#: Files written by :meth:`Segmentation.save`.
OUTPUT_FILES = ("overlay.png", "chip_map.png", "community_graph.png", "summary.png",
                "communities.csv", "labels.zarr", "provenance.json", "report.html")


class PartitionMaps(dict):
    """``{partition name: labels}``, whose missing key says which partitions the run has."""

    def __missing__(self, key: str) -> np.ndarray:
        joint = (" (a joint partition exists with several modalities; with one, the run's map is that "
                 "modality's own)" if key == "joint" else "")
        raise KeyError(f"no partition {key!r} in this run{joint}; it has: {', '.join(map(repr, self)) or 'none'}")


@dataclass
class Segmentation:
    """Communities found in one specimen.

    Attributes
    ----------
    chip_labels
        ``grid_shape`` int32: community of each chip, -1 where there is no chip.
    pixel_labels
        Image-shaped int32: community of each pixel by vote of the chips covering it.
    embeddings
        ``(n_chips, dim)`` float32 chip embeddings (row-major over the chip grid).
    graph
        ``(n_chips, n_chips)`` sparse similarity graph the communities were found on.
    communities
        One :class:`~multimodal_seg.analysis.descriptors.CommunityRow` per community (0 = largest).
    grid
        The chip grid.
    image
        The image (lazy; only decimated copies are loaded for figures).
    axes
        Calibrated image axes ``(y, x)``.
    modularity
        Modularity of the partition.
    provenance
        Config, versions, seed, encoder and weights used.
    """

    chip_labels: np.ndarray
    pixel_labels: np.ndarray
    embeddings: np.ndarray
    graph: sp.csr_matrix
    communities: list[CommunityRow]
    grid: ChipGrid
    image: da.Array
    axes: list[Axis]
    modularity: float
    provenance: dict[str, Any] = field(default_factory=dict)
    #: Several modalities only: agreement between partitions (see consistency.py).
    consistency: dict[str, Any] | None = None
    #: Several modalities only: community mean spectrum / pattern per non-image modality.
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    #: Several modalities only: each modality's own partition on the chip grid.
    modality_labels: dict[str, np.ndarray] = field(default_factory=dict)
    #: Calibrated signal axes of each entry of ``signals`` (energy, or qy and qx).
    signal_axes: dict[str, list[Axis]] = field(default_factory=dict)
    #: Spectrum modalities: net intensity of known lines/edges per community
    #: (``{"features": [...], "energies": [...], "units": str, "intensities": [[...]]}``), their
    #: standard errors (``"errors"``, the same shape), ``"significant"`` (per feature, whether
    #: some community's intensity stands above its noise) and ``"scale"`` (the channel width);
    #: EELS also ``"onsets"``, the energies where a community's spectrum rises; EDS also
    #: ``"beam_energy"`` (keV) and ``"beam_energy_from"`` (``"file"``, ``"option"``, ``"signal"``, or
    #: ``"axis"``: its top, assumed), ``"offset"`` and ``"channels"`` (the energy axis), ``"centroids"`` (where each
    #: line window's net counts are centred, per community) and ``"spectra"`` (the communities'
    #: mean spectra), and where the specimen's elements
    #: were known ``"elements"`` and ``"elements_from"`` (``"file"``, ``"option"``, ``"signal"``),
    #: from which :func:`multimodal_seg.analysis.spectral_lines.marked` names lines.
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each modality's own partition and, with several modalities, the joint one (``"joint"``),
    #: painted on the reference scan grid (boundaries refined with ``refine > 1``); a missing
    #: name's ``KeyError`` lists the names there are.
    scan_labels: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scan_labels = PartitionMaps(self.scan_labels)
        self.modality_labels = PartitionMaps(self.modality_labels)

    @property
    def n_communities(self) -> int:
        return len(self.communities)

    @property
    def pixel_size(self) -> float:
        return float(self.axes[-1].scale)

    @property
    def units(self) -> str:
        return self.axes[-1].units

    def agreement(self, truth: np.ndarray) -> dict[str, float]:
        """Pixel-level ARI, NMI, VI, many-to-one accuracy and mIoU against a truth map."""
        return agreement(self.pixel_labels, np.asarray(truth))

    def display_image(self) -> np.ndarray:
        """The image the communities are painted on, decimated for figures but full-sized."""
        step = max(1, int(np.ceil(max(self.image.shape) / plot.MAX_DISPLAY)))
        small = np.asarray(self.image[::step, ::step])
        # Figures expect full-size arrays for extents; repeat back (cheap: display-sized).
        return np.repeat(np.repeat(small, step, 0), step, 1)[: self.image.shape[0], : self.image.shape[1]]

    def plot(self, truth: np.ndarray | None = None) -> Figure:
        """Image, translucent community overlay and chip map side by side (plus truth)."""
        return plot.summary(self.display_image(), self.pixel_labels, self.chip_labels, truth=truth,
                            pixel_size=self.pixel_size, units=self.units)

    def figures(self) -> dict[str, Figure]:
        """The named figures that :meth:`save` writes."""
        image = self.display_image()
        figures = {
            "overlay.png": plot.overlay(image, self.pixel_labels, pixel_size=self.pixel_size,
                                        units=self.units),
            "chip_map.png": plot.chip_map(self.chip_labels),
            "community_graph.png": plot.community_graph(self.graph, self.chip_labels.ravel(),
                                                        seed=int(self.provenance.get("seed", 0))),
            "summary.png": self.plot(),
        }
        if self.consistency is not None:
            from .analysis.consistency import consistency_figure

            grid = np.asarray(self.consistency["disagreement"]).reshape(self.consistency["grid_shape"])
            figures["consistency.png"] = consistency_figure(self.consistency, grid)
            # Painted on the scan grid (refined boundaries when refine > 1), the joint map last,
            # each modality's communities in the colours of the joint ones they match
            maps = {n: labels for n, labels in self.scan_labels.items() if n != "joint"}
            figures["modalities.png"] = plot.modality_maps({**maps, "joint": self.scan_labels["joint"]},
                                                           colours_of="joint")
        if self.signals:
            figures["community_signals.png"] = plot.community_signals(self.signals, self.signal_axes,
                                                                      self.lines)
        return figures

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write figures, ``communities.csv``, ``labels.zarr``, ``provenance.json`` and
        ``report.html`` (:mod:`multimodal_seg.report`: every figure and table in one page).

        Each file is written under a temporary name and renamed into place, so an
        interrupted save never leaves a half-written file.

        Returns
        -------
        Mapping from file name to its path.
        """
        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output folder: {exc.strerror}",
                              fix="choose a folder you can write to", where=out) from exc
        written: dict[str, Path] = {}
        pngs: dict[str, bytes] = {}
        for name, fig in self.figures().items():
            pngs[name] = plot.png_bytes(fig, dpi=120)  # the same bytes go to the file and into report.html
            with atomic_path(out / name) as tmp:
                tmp.write_bytes(pngs[name])
            written[name] = out / name
        write_text_atomic(out / "communities.csv", table_to_csv(self.communities))
        written["communities.csv"] = out / "communities.csv"
        with atomic_path(out / "labels.zarr") as tmp:
            group = zarr.open_group(str(tmp), mode="w")
            group.create_array("pixel_labels", data=self.pixel_labels.astype(np.int32),
                               chunks=(min(1024, self.pixel_labels.shape[0]),
                                       min(1024, self.pixel_labels.shape[1])))
            group.create_array("chip_labels", data=self.chip_labels.astype(np.int32))
            for name, labels in self.modality_labels.items():
                group.create_array(f"modality_chip_labels/{name}", data=labels.astype(np.int32))
            for name, labels in self.scan_labels.items():
                group.create_array(f"scan_labels/{name}", data=labels.astype(np.int32))
            for name, mean in self.signals.items():
                group.create_array(f"community_mean_signals/{name}", data=mean.astype(np.float32))
            group.attrs.update({"axes": [a.to_dict() for a in self.axes], "grid": self.grid.to_dict()})
        written["labels.zarr"] = out / "labels.zarr"
        write_text_atomic(out / "provenance.json", to_json(self.provenance))
        written["provenance.json"] = out / "provenance.json"
        if self.consistency is not None:
            write_text_atomic(out / "consistency.json", to_json(self.consistency))
            written["consistency.json"] = out / "consistency.json"
        if self.lines:
            write_text_atomic(out / "community_lines.csv", lines_to_csv(self.lines))
            written["community_lines.csv"] = out / "community_lines.csv"
        page = report_html(figures=pngs, communities=self.communities, provenance=self.provenance,
                           consistency=self.consistency, lines=self.lines)
        with atomic_path(out / "report.html") as tmp:
            tmp.write_bytes(page.encode("utf-8"))  # as its <meta charset> says, whatever the locale
        written["report.html"] = out / "report.html"
        return written

    def __repr__(self) -> str:
        rows, cols = self.grid.grid_shape
        return (f"Segmentation({communities_phrase(self.n_communities)} over {rows}x{cols} chips of "
                f"{self.grid.size} px, modularity {self.modularity:.3f})")


def lines_to_csv(lines: dict[str, dict[str, Any]]) -> str:
    """Long-format CSV: modality, community, feature, energy, units, net counts per position and
    their standard error (empty in tables recorded without errors)."""
    rows = ["modality,community,feature,energy,units,net_counts_per_position,standard_error"]
    for modality, table in lines.items():
        errors = table.get("errors") or [[None] * len(table["features"])] * len(table["intensities"])
        for community, (values, spreads) in enumerate(zip(table["intensities"], errors)):
            for feature, energy, value, error in zip(table["features"], table["energies"], values, spreads):
                spread = "" if error is None else f"{error:.6g}"
                rows.append(f"{modality},{community},{feature},{energy:.6g},{table['units']},{value:.6g},{spread}")
    return "\n".join(rows) + "\n"
