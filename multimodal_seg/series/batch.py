"""A whole series at once: one graph over the chips of every frame, one partition, shared ids.

Every frame is cut into the same chips and embedded with the same encoder and
intensity scale (:class:`multimodal_seg.series.model.FrameEmbedder`); the embeddings of
all frames are standardised and reduced together (:class:`multimodal_seg.graphs.knn.FeatureReducer`),
joined in one kNN graph (:func:`multimodal_seg.graphs.knn.knn_graph`) and split by one
community step (:func:`multimodal_seg.graphs.communities.partition_graph`, with the
pipeline's community options and defaults).  A community id therefore means the same
material in every frame by construction: no matching between frames, no oracle.  An
unchanged chip of frame ``t`` has its own copy in every other frame among its nearest
neighbours, so it keeps its community; chips of a region that changes move to the
community of what they became.

Cost: the graph holds ``n_frames x n_chips`` chips (exact kNN up to 20,000 chips,
pynndescent above); Leiden's consensus costs its number of runs on that graph, or above
4096 chips on the graph of 4096 groups of similar chips
(:data:`multimodal_seg.graphs.communities.CONSENSUS_VERTICES`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..chips.grid import ChipGrid
from ..errors import InputError
from ..graphs import knn
from ..graphs.communities import partition_graph
from ..plot import save_figure
from ..provenance import run_record, to_json, write_text_atomic
from .frames import Frame, SeriesAxis, check_frame, read_frames
from .identities import confidence
from .model import (
    FrameEmbedder, FrameReport, SeriesConfig, describe_frame, disordered_area, measure_frame, output_folder, series_config,
    series_crystallinity,
)
from .outputs import descriptor_figure, overlay, save_png, write_tables


@dataclass
class SeriesResult:
    """The communities of a series, with shared ids, and what they say frame by frame.

    Attributes
    ----------
    config
        The options used.
    axis
        Where the frames sit (time, dose, or frame number).
    reports
        One :class:`multimodal_seg.series.model.FrameReport` per frame: chip and pixel
        labels, descriptors per community, points of interest.
    frames
        The frames (lazy images), for overlays.
    grid
        The chip grid shared by every frame.
    axes
        Calibrated ``y``, ``x`` axes of the frames.
    intensity
        ``(low, high)`` counts mapped to [0, 1] before encoding (and in overlays).
    modularity
        Of the partition, on the series graph.
    provenance
        Config, versions, seed, sources, encoder, grid.
    """

    config: SeriesConfig
    axis: SeriesAxis
    reports: list[FrameReport]
    frames: list[Frame]
    grid: ChipGrid
    axes: list
    intensity: tuple[float, float]
    modularity: float
    provenance: dict[str, Any]

    @property
    def chip_labels(self) -> np.ndarray:
        """``(n_frames, chip rows, chip cols)`` community ids."""
        return np.stack([r.chip_labels for r in self.reports])

    @property
    def n_communities(self) -> int:
        return int(self.chip_labels.max()) + 1

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row of ``fractions.csv``: per frame and community, area and descriptors."""
        return [row for report in self.reports for row in report.rows]

    def crystallinity(self) -> dict[int, float]:
        """Each community's crystallinity over the series (chip-weighted mean of its frames')."""
        return series_crystallinity(self.rows)

    def disordered_fraction(self) -> np.ndarray:
        """``(n_frames,)`` disordered (damaged, amorphous) area fraction of every frame, found from
        the data alone: each community's area times the share of its crystallinity windows
        below 0.5 (:func:`multimodal_seg.series.model.disordered_area`)."""
        return np.array([disordered_area(r.rows) for r in self.reports])

    def summary(self) -> dict[str, Any]:
        """What ``series.json`` holds: frames, communities over the series, grid, axis."""
        crystallinity = self.crystallinity()
        share = series_crystallinity(self.rows, "disordered_share")
        communities = []
        for community in range(self.n_communities):
            areas = [row["area_fraction"] for row in self.rows if row["community"] == community]
            present = [r.index for r in self.reports if (r.chip_labels == community).any()]
            communities.append({"community": community, "crystallinity": crystallinity.get(community),
                                "disordered_share": share.get(community), "first_frame": min(present, default=None),
                                "last_frame": max(present, default=None), "max_area_fraction": max(areas)})
        return {"axis": self.axis.to_dict(), "n_frames": len(self.reports), "n_communities": self.n_communities,
                "modularity": self.modularity, "grid": self.grid.to_dict(), "intensity": list(self.intensity),
                "frames": [{"frame": r.index, "source": r.label,
                            "value": r.value if np.isfinite(r.value) else None,
                            "new_communities": r.new_communities,
                            "disordered_fraction": float(f)} for r, f in zip(self.reports,
                                                                             self.disordered_fraction())],
                "communities": communities}

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write the series' files (see :mod:`multimodal_seg.series.outputs`) into ``out``.

        Also ``labels.npz`` (``chip_labels`` ``(n_frames, chip rows, chip cols)``,
        ``pixel_labels`` ``(n_frames, rows, cols)`` int16, ``values`` on the series axis),
        ``series.json`` (:meth:`summary`) and ``provenance.json``.
        """
        out = output_folder(out)
        (out / "overlays").mkdir(exist_ok=True)
        written = {}
        for report, frame in zip(self.reports, self.frames):
            path = out / "overlays" / f"frame_{report.index:05d}.png"
            save_png(overlay(frame.pixels(), report, intensity=self.intensity), path)
        written["overlays"] = out / "overlays"
        write_tables(out, self.reports, self.axis)
        save_figure(descriptor_figure(self.reports, self.axis), out / "descriptors.png", dpi=110)
        from ..provenance import atomic_path

        with atomic_path(out / "labels.npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, chip_labels=self.chip_labels.astype(np.int32),
                                    pixel_labels=np.stack([r.pixel_labels for r in self.reports]).astype(np.int16),
                                    values=np.array([r.value for r in self.reports]))
        write_text_atomic(out / "series.json", to_json(self.summary()))
        write_text_atomic(out / "provenance.json", to_json(self.provenance))
        for name in ("fractions.csv", "poi.csv", "poi.json", "descriptors.png", "labels.npz", "series.json",
                     "provenance.json"):
            written[name] = out / name
        return written


def segment_series(frames: Any, *, out: str | Path | None = None, config: Any = None, signal: int | str | None = None,
                   max_points: int | None = None, progress: bool = True, **options: Any) -> SeriesResult:
    """Segment a series of frames with community ids shared by every frame.

    Parameters
    ----------
    frames
        Image files, a folder of them, a stack in one file (HyperSpy, TIFF, MRC ... with a
        time or dose axis), an ``(n, rows, cols)`` array, or a list of these, or
        :class:`multimodal_seg.series.frames.Frame` objects
        (:func:`multimodal_seg.series.frames.read_frames`).
    out
        Output folder; ``None`` writes nothing.
    config
        A YAML file, dict or :class:`multimodal_seg.config.SegmentConfig` (its chips,
        encoder, graph, communities and seed sections).
    signal
        Which signal of files holding several.
    max_points
        Points of interest kept per frame (default 10).
    progress
        Show a progress bar over the frames.
    options
        :func:`multimodal_seg.segment` keywords: ``chip_size``, ``stride``, ``encoder``,
        ``weights``, ``k``, ``n_pcs``, ``method``, ``resolution``, ``consensus``, ``merge``,
        ``seed`` ...

    Returns
    -------
    SeriesResult

    Raises
    ------
    InputError
        An unreadable frame, or one of another size or calibration than the first (named,
        before anything is written).
    ParameterError, OutputError
        Bad options; an output path that is a file.
    """
    started = time.perf_counter()
    cfg = series_config(config, max_points=max_points, **options)
    if isinstance(frames, (list, tuple)) and frames and all(isinstance(f, Frame) for f in frames):
        frames = list(frames)
        for frame in frames[1:]:
            check_frame(frame, frames[0].shape, frames[0].image.axes)
    else:
        frames = read_frames(frames, signal=signal)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        output_folder(out)  # raises the error that names it
    embedder = FrameEmbedder.build(cfg, frames[0])
    embeddings, stats = [], []
    for frame in tqdm(frames, desc="embedding frames", unit="frame", disable=not progress, leave=False):
        emb, st = embedder.embed(frame, frame.pixels())
        embeddings.append(emb)
        stats.append(st)
    n_chips = embedder.grid.n_chips
    if len(frames) * n_chips < 2:
        raise InputError("the series has a single chip", fix="use smaller chips or more frames", where="frames")
    features = knn.FeatureReducer(n_pcs=cfg.graph.n_pcs, seed=cfg.seed,
                                  standardise=embedder.encoder.standardise).fit_transform(np.vstack(embeddings))
    graph = knn.knn_graph(features, k=cfg.graph.k, seed=cfg.seed)
    partition = partition_graph(graph, **cfg.communities.model_dump(), seed=cfg.seed, features={"frames": features},
                                grid_shape=(len(frames), *embedder.grid.grid_shape),
                                grid_step=embedder.grid.half_chip_steps)
    partition.warn_if_close_call("the series' partition", stacklevel=2)
    labels = partition.labels.astype(np.int64)
    sure = confidence(graph, labels, np.arange(labels.size))
    axis = SeriesAxis.of(frames[0])
    reports, seen, previous = [], set(), None
    for i, frame in enumerate(frames):
        chips = slice(i * n_chips, (i + 1) * n_chips)
        report = describe_frame(embedder, frame, index=i, value=axis.value(frame, i), labels=labels[chips],
                                confidence=sure[chips], previous=previous, seen=seen, config=cfg)
        measure_frame(report, embedder, frame.pixels(), stats[i], n_known=int(labels.max()) + 1, seed=cfg.seed)
        reports.append(report)
        seen |= set(np.unique(labels[chips]).tolist())
        previous = labels[chips]
    provenance = run_record(cfg.model_dump(), extra={
        "seed": cfg.seed, "mode": "batch", "sources": [f.label for f in frames], "axis": axis.to_dict(),
        "encoder": embedder.encoder.fingerprint(), "encoder_choice": embedder.choice,
        "grid": embedder.grid.to_dict(), "n_chips": int(labels.size), "intensity": list(embedder.intensity),
        "partition": partition.record(),
        "seconds": time.perf_counter() - started})
    result = SeriesResult(config=cfg, axis=axis, reports=reports, frames=frames, grid=embedder.grid,
                          axes=embedder.axes, intensity=embedder.intensity, modularity=partition.modularity,
                          provenance=provenance)
    if out is not None:
        result.save(out)
    return result
