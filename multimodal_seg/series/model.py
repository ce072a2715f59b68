"""What a series run shares, batch or live: its options, its chips and encoder, and what it says of a frame.

* :class:`SeriesConfig`: the segmentation sections of :class:`multimodal_seg.config.SegmentConfig`
  (chips, encoder, graph, communities, seed; their defaults are the pipeline's) and the
  series' own options (points of interest; live: window and re-optimisation);
* :class:`FrameEmbedder`: one chip grid, one encoder and one intensity scale for every
  frame of a series, set by the first frame (the chip-size rule of
  :mod:`multimodal_seg.chips.sizing`, the encoder of :mod:`multimodal_seg.encoders.choice`,
  the intensity range of :func:`multimodal_seg.pipeline.embedding.modality_intensity`),
  so that the same material gives the same features in every frame;
* :func:`describe_frame`: a frame's community map painted back and its points of interest
  (:mod:`multimodal_seg.series.poi`); :func:`measure_frame`: its descriptors per community
  (:mod:`multimodal_seg.analysis.descriptors`) and :func:`disordered_area`.

Why one intensity scale: ``segment()`` scales each image by its own robust range; in a
series whose damaged area grows that range moves, and the same crystal would be
embedded differently from frame to frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..analysis.descriptors import community_table, sampled_crystallinity
from ..chips.grid import ChipGrid
from ..chips.shared import ModalityChips
from ..chips.sizing import chip_geometry
from ..config import KEYWORDS, ChipConfig, CommunityConfig, EncoderConfig, GraphConfig, load_config, with_overrides
from ..encoders.base import Encoder
from ..encoders.choice import choose_encoders
from ..errors import ParameterError
from ..modalities.base import Axis, ModalityData
from ..pipeline.embedding import encode_chips, learns, modality_intensity
from .frames import Frame, check_frame
from .poi import PointOfInterest, interest, points_of_interest

#: Options of segment() that a series does not take (one image per frame, no refinement yet).
NOT_FOR_SERIES = ("fusion", "refine")
#: A crystallinity window below this is disordered (the index is near 0 for amorphous material
#: and near 1 for a lattice: the midpoint of a two-valued index, not a fit).
DISORDER_THRESHOLD = 0.5


class SeriesConfig(BaseModel):
    """Everything a series run depends on, besides the frames.

    The sections are those of :class:`multimodal_seg.config.SegmentConfig` with its
    defaults.  ``max_points`` is the number of points of interest kept per frame;
    ``window`` (frames whose chips stay in the live graph) and ``reoptimise_every``
    (frames between re-optimisations of the live partition; 0 never) apply to live runs.
    """

    model_config = ConfigDict(extra="forbid")

    chips: ChipConfig = Field(default_factory=ChipConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    communities: CommunityConfig = Field(default_factory=CommunityConfig)
    seed: int = Field(0, ge=0)
    max_points: int = Field(10, ge=0, le=1000)
    window: int = Field(8, ge=2, le=10_000)
    reoptimise_every: int = Field(10, ge=0)


def series_config(config: Any = None, *, live: bool = False, max_points: int | None = None,
                  window: int | None = None, reoptimise_every: int | None = None,
                  **options: Any) -> SeriesConfig:
    """A checked :class:`SeriesConfig` from a config (YAML file, dict or ``SegmentConfig``) and options.

    ``options`` are :func:`multimodal_seg.segment` keywords (``chip_size``, ``encoder``,
    ``k``, ``resolution``, ``consensus``, ``seed`` ...); ``None`` keeps the default.

    Raises
    ------
    ParameterError
        Unknown options, bad values, options a series cannot use (fusion, boundary
        refinement), live options for a batch run, or community options the live
        update cannot honour (Louvain, merging).
    """
    refused = sorted(k for k in options if k in NOT_FOR_SERIES and options[k] is not None)
    unknown = sorted(k for k in options if k not in KEYWORDS and k not in NOT_FOR_SERIES)
    if refused or unknown:
        raise ParameterError(
            f"options a series does not take: {', '.join(refused + unknown)}",
            fix=f"use {', '.join(sorted(set(KEYWORDS) - set(NOT_FOR_SERIES)))}, max_points"
                + (", window, reoptimise_every" if live else ""),
            where=", ".join(refused + unknown))
    if not live and (window is not None or reoptimise_every is not None):
        raise ParameterError("window and reoptimise_every apply to live series only",
                             fix="use them with LiveSeries or `mmseg watch`", where="window")
    base = with_overrides(load_config(config), **options)
    if base.chips.refine not in (1, "auto") or base.modality_encoders or base.fusion.layer_weights:
        raise ParameterError("the config sets boundary refinement, modality encoders or fusion weights, "
                             "which a series of single images cannot use",
                             fix="drop chips.refine, modality_encoders and fusion from the config",
                             where="config")
    extra = {k: v for k, v in (("max_points", max_points), ("window", window),
                                ("reoptimise_every", reoptimise_every)) if v is not None}
    try:
        result = SeriesConfig(chips=base.chips, encoder=base.encoder, graph=base.graph,
                              communities=base.communities, seed=base.seed, **extra)
    except ValidationError as exc:
        raise ParameterError(f"invalid series options: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}",
                             fix="see `mmseg series --help`", where=str(exc.errors()[0]['loc'][0])) from None
    com = result.communities
    if live and (com.method != "leiden" or com.merge is not None):
        refused = [f"{key}={value!r}" for key, value, ok in (("method", com.method, com.method == "leiden"),
                                                              ("merge", com.merge, com.merge is None)) if not ok]
        raise ParameterError(
            "a live series updates its partition with Leiden (leidenalg, memberships of earlier chips "
            f"fixed); {' and '.join(refused)} cannot be honoured there",
            fix="use method='leiden' and no merge for live series (a batch run takes both)",
            where=refused[0].split("=")[0])
    return result


def _image_encoder(config: SeriesConfig, image: ModalityData) -> tuple[Encoder, str]:
    encoder, choice = choose_encoders(config.encoder, {"image": image})["image"]
    if learns(encoder):
        raise ParameterError(
            f"encoder {encoder.name!r} learns from the data it embeds; a series embeds every frame "
            "with one unchanging encoder", fix="use an image encoder such as fourier or resnet50",
            where="encoder")
    return encoder, choice


@dataclass
class FrameEmbedder:
    """One grid, encoder and intensity scale for every frame of a series.

    Attributes
    ----------
    shape
        ``(rows, cols)`` of every frame.
    axes
        The series' ``y``, ``x`` axes (calibration; offsets are the first frame's).
    grid
        The chip grid.
    intensity
        ``(low, high)`` counts mapped to [0, 1] before encoding, from the first frame.
    encoder
        The image encoder (never fitted on the data: see :meth:`build`).
    choice
        Why that encoder, in words.
    """

    shape: tuple[int, int]
    axes: list[Axis]
    grid: ChipGrid
    intensity: tuple[float, float]
    encoder: Encoder
    choice: str

    @classmethod
    def build(cls, config: SeriesConfig, first: Frame) -> "FrameEmbedder":
        """The embedder of a series whose first frame is ``first``.

        Raises
        ------
        ParameterError
            Bad chip or encoder options, or an encoder that learns from the data
            (``Encoder.fit``): a series embeds every frame with one unchanging encoder.
        """
        modalities = {"image": first.image}
        encoder, choice = _image_encoder(config, first.image)
        size, stride = chip_geometry(config.chips, modalities)
        return cls(first.shape, list(first.image.axes[:2]), ChipGrid(first.shape, size, stride),
                   modality_intensity(first.image), encoder, choice)

    @classmethod
    def from_dict(cls, config: SeriesConfig, state: dict[str, Any]) -> "FrameEmbedder":
        """The embedder :meth:`to_dict` described, its encoder rebuilt from ``config``."""
        axes = [Axis(**a) for a in state["axes"]]
        shape = tuple(state["shape"])
        stub = ModalityData("image", "image", da.zeros(shape, dtype=np.float32), axes, "<state>")
        encoder, choice = _image_encoder(config, stub)
        g = state["grid"]
        return cls(shape, axes, ChipGrid(tuple(g["shape"]), g["size"], g["stride"]), tuple(state["intensity"]),
                   encoder, choice)

    @property
    def chips(self) -> ModalityChips:
        return ModalityChips(origins=self.grid.origins, size=self.grid.size)

    def check(self, frame: Frame) -> None:
        """The frame has the series' shape and calibration (:func:`multimodal_seg.series.frames.check_frame`)."""
        check_frame(frame, self.shape, self.axes)

    def embed(self, frame: Frame, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``(n_chips, dim)`` and chip statistics ``(n_chips, 2)`` of a frame, after
        checking it; ``pixels`` is ``frame.pixels()``."""
        self.check(frame)
        in_memory = replace(frame.image, data=pixels)
        return encode_chips(in_memory, self.chips, self.encoder, intensity=self.intensity, progress=False)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "axes": [a.to_dict() for a in self.axes], "grid": self.grid.to_dict(),
                "intensity": list(self.intensity), "encoder": self.encoder.fingerprint(), "choice": self.choice}


@dataclass
class FrameReport:
    """What a series says of one frame.

    Attributes
    ----------
    index
        The frame's number in the series (0 first).
    label
        Where it came from (file, ``file[i]`` in a stack, ``<array i>``).
    value
        Its position on the series axis (time, dose ...; NaN where unknown).
    chip_labels
        ``(chip rows, chip cols)`` community per chip.
    pixel_labels
        ``(rows, cols)`` community per pixel (vote of overlapping chips); a live series
        drops it once the frame's overlay is written (``None``), so memory does not grow
        with the frames.
    rows
        One dict per community known so far: ``frame``, ``community``, ``area_fraction``,
        ``n_chips``, ``mean_intensity``, ``std_intensity``, ``crystallinity`` (NaN where
        absent from the frame).
    points
        Ranked points of interest.
    new_communities
        Ids first seen in this frame.
    seconds
        Time spent per step.
    """

    index: int
    label: str
    value: float
    chip_labels: np.ndarray
    pixel_labels: np.ndarray | None
    rows: list[dict[str, Any]]
    points: list[PointOfInterest]
    new_communities: list[int]
    seconds: dict[str, float] = field(default_factory=dict)


def describe_frame(embedder: FrameEmbedder, frame: Frame, *, index: int, value: float, labels: np.ndarray,
                   confidence: np.ndarray, previous: np.ndarray | None, seen: set[int],
                   config: SeriesConfig) -> FrameReport:
    """Paint a frame's chip labels back and find its points of interest (its ``rows`` are
    filled by :func:`measure_frame`, which a live run calls once the overlay is shown).

    Parameters
    ----------
    labels, confidence
        ``(n_chips,)`` community ids and share of each chip's graph weight inside its community.
    previous
        The previous frame's ``(n_chips,)`` labels (``None`` for the first frame).
    seen
        Community ids seen in earlier frames (ids not in it are new here).
    """
    start = time.perf_counter()
    grid = embedder.grid
    labels = np.asarray(labels, dtype=np.int64)
    chip_map = labels.reshape(grid.grid_shape)
    pixel_labels = grid.chip_labels_to_pixels(chip_map).astype(np.int32)
    new = sorted(set(np.unique(labels).tolist()) - seen)
    channels = interest(chip_map, None if previous is None else np.asarray(previous).reshape(grid.grid_shape),
                        np.asarray(confidence).reshape(grid.grid_shape),
                        new_ids=set(new) if seen else set(), rare_max=config.graph.k)
    points = points_of_interest(channels, chip_map, grid, embedder.axes, frame=index,
                                max_points=config.max_points)
    return FrameReport(index=index, label=frame.label, value=value, chip_labels=chip_map,
                       pixel_labels=pixel_labels, rows=[], points=points, new_communities=new,
                       seconds={"describe": time.perf_counter() - start})


def measure_frame(report: FrameReport, embedder: FrameEmbedder, pixels: np.ndarray, stats: np.ndarray, *,
                  n_known: int, seed: int) -> None:
    """Fill ``report.rows``: area, intensity, crystallinity and disordered share of every community.

    Parameters
    ----------
    pixels
        The frame (``frame.pixels()``).
    stats
        ``(n_chips, 2)`` chip statistics from the embedding.
    n_known
        Communities known so far (one row each; absent ones have area 0 and NaN descriptors).
    seed
        Of the crystallinity windows' sample.
    """
    start = time.perf_counter()
    labels = report.chip_labels.ravel()
    owner, index_of_window = sampled_crystallinity(pixels, embedder.chips, labels, seed=seed)
    sampled = np.bincount(owner, minlength=n_known)
    with np.errstate(invalid="ignore", divide="ignore"):
        crystallinity = np.bincount(owner, weights=index_of_window, minlength=n_known) / sampled
        share = np.bincount(owner, weights=index_of_window < DISORDER_THRESHOLD, minlength=n_known) / sampled
    table = community_table(labels, report.pixel_labels, stats, crystallinity)
    report.rows = []
    for community in range(n_known):
        row = table[community] if community < len(table) else None
        present = row is not None and row.n_chips > 0
        report.rows.append({"frame": report.index, "community": community,
                            "area_fraction": row.area_fraction if row else 0.0,
                            "n_chips": row.n_chips if row else 0,
                            "mean_intensity": row.mean_intensity if present else float("nan"),
                            "std_intensity": row.std_intensity if present else float("nan"),
                            "crystallinity": float(crystallinity[community]) if present else float("nan"),
                            "disordered_share": float(share[community]) if present else float("nan")})
    report.seconds["measure"] = time.perf_counter() - start


def disordered_area(rows: list[dict[str, Any]]) -> float:
    """The disordered area fraction of one frame: each community's area times its disordered share.

    A community's disordered share is the fraction of its sampled crystallinity windows
    below :data:`DISORDER_THRESHOLD`: 1 for amorphous material, 0 for crystal, and in
    between for a community of mixed chips (along a damage front or grain boundaries),
    which is then counted by its chips rather than wholly in or out.  Why not threshold
    each community's mean crystallinity: on the damage phantom the communities of
    boundary chips sit at 0.47-0.78, so one such community of 5 % of the area would flip
    in or out of the damaged area on the noise of its mean.
    """
    return float(sum(row["area_fraction"] * row["disordered_share"] for row in rows
                     if row["n_chips"] and np.isfinite(row["disordered_share"])))


def series_crystallinity(rows: list[dict[str, Any]], key: str = "crystallinity") -> dict[int, float]:
    """Each community's ``crystallinity`` (or another per-frame value) over the whole series: the
    mean of its frames', weighted by chips."""
    sums: dict[int, list[float]] = {}
    for row in rows:
        if row["n_chips"] and np.isfinite(row[key]):
            acc = sums.setdefault(row["community"], [0.0, 0.0])
            acc[0] += row[key] * row["n_chips"]
            acc[1] += row["n_chips"]
    return {c: total / n for c, (total, n) in sorted(sums.items())}


def output_folder(out: str | Path) -> Path:
    """An output folder that can be written (created if missing).

    Raises
    ------
    OutputError
        It is a file, or cannot be created.
    """
    from ..errors import OutputError

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OutputError("the output path is a file, not a folder", fix="give a folder path", where=path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder: {exc}", fix="choose a writable location",
                          where=path) from exc
    return path
