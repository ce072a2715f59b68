"""The files of a series run, batch or live, each written atomically.

- ``fractions.csv``: one row per frame and community: ``frame, community,
  area_fraction, n_chips, mean_intensity, std_intensity, crystallinity,
  disordered_share`` (the share of the community's crystallinity windows below 0.5),
  then the frame's position on the series axis (a column named after it: ``time``,
  ``dose`` ..., :func:`axis_column`) and its ``source``;
- ``poi.csv`` and ``poi.json``: the ranked points of interest of every frame, in
  calibrated coordinates (:class:`multimodal_seg.series.poi.PointOfInterest`);
- ``overlays/frame_00012.png``: each frame in grey with its communities in fixed
  colours (community ``i`` always has ``plot.community_colors`` colour ``i``), a legend,
  and its points of interest circled and numbered by rank; live runs also keep
  ``live.png``, the latest overlay, replaced atomically;
- ``descriptors.png``: area fraction, crystallinity and mean intensity of every
  community over the frames (time or dose on the axis when the frames carry it), and
  the disordered area (:func:`multimodal_seg.series.model.disordered_area`).

Overlays are drawn with Pillow, not matplotlib: a 1024 x 1024 overlay takes tens of
milliseconds, which a live run needs (its budget is one second per frame).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from ..plot import MAX_DISPLAY, community_colors
from ..provenance import atomic_path, write_text_atomic
from .frames import SeriesAxis
from .model import DISORDER_THRESHOLD, FrameReport, disordered_area

#: The columns of fractions.csv before the axis and source columns.
FRACTION_COLUMNS = ("frame", "community", "area_fraction", "n_chips", "mean_intensity", "std_intensity",
                    "crystallinity", "disordered_share")
#: The columns of poi.csv.
POINT_COLUMNS = ("frame", "rank", "y", "x", "units", "row", "col", "kind", "score", "community", "n_chips",
                 "y0", "y1", "x0", "x1")
#: Opacity of the community colours on the grey frame.
OVERLAY_ALPHA = 0.4
#: Width of the legend strip beside an overlay, pixels.
LEGEND_WIDTH = 110


def axis_column(axis: SeriesAxis) -> str | None:
    """The name of the column (and ``poi.json`` key) holding each frame's position on the
    series axis: the axis's own name, prefixed with ``axis_`` where a file already has a column
    of that name (a calibrated stack axis without a name is called ``frame``, which is also
    the frame number's column); None for frames counted by their number alone."""
    if axis.source == "index":
        return None
    taken = {*FRACTION_COLUMNS, *POINT_COLUMNS, "source", "points"}
    return f"axis_{axis.name}" if axis.name in taken else axis.name


def _number(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def fractions_csv(reports: Sequence[FrameReport], axis: SeriesAxis) -> str:
    """The text of ``fractions.csv`` for these frames."""
    buffer = io.StringIO()
    extra = [] if axis_column(axis) is None else [axis_column(axis)]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*FRACTION_COLUMNS, *extra, "source"])
    for report in reports:
        for row in report.rows:
            writer.writerow([_number(row[c]) for c in FRACTION_COLUMNS]
                            + [_number(report.value) for _ in extra] + [report.label])
    return buffer.getvalue()


def points_csv(reports: Sequence[FrameReport]) -> str:
    """The text of ``poi.csv`` for these frames."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(POINT_COLUMNS)
    for report in reports:
        for p in report.points:
            writer.writerow([_number(v) for v in (p.frame, p.rank, p.y, p.x, p.units, p.row, p.col, p.kind,
                                                  p.score, p.community, p.n_chips, *p.extent)])
    return buffer.getvalue()


def points_json(reports: Sequence[FrameReport], axis: SeriesAxis) -> str:
    """The text of ``poi.json``: per frame, its source, axis value and ranked points."""
    column = axis_column(axis)
    frames = [{"frame": r.index, "source": r.label,
               **({} if column is None else {column: None if not np.isfinite(r.value) else r.value}),
               "points": [p.to_dict() for p in r.points]} for r in reports]
    return json.dumps({"axis": axis.to_dict(), "frames": frames}, indent=1)


def write_tables(out: Path, reports: Sequence[FrameReport], axis: SeriesAxis) -> None:
    """``fractions.csv``, ``poi.csv`` and ``poi.json`` for these frames (each replaced atomically)."""
    write_text_atomic(out / "fractions.csv", fractions_csv(reports, axis))
    write_text_atomic(out / "poi.csv", points_csv(reports))
    write_text_atomic(out / "poi.json", points_json(reports, axis))


def overlay(image: np.ndarray, report: FrameReport, *, intensity: tuple[float, float]) -> Image.Image:
    """One frame in grey (``intensity`` range), its communities coloured, its points of interest
    circled and numbered, and a legend of the communities present."""
    step = max(1, int(np.ceil(max(image.shape) / MAX_DISPLAY)))
    grey = np.asarray(image)[::step, ::step].astype(np.float32)
    labels = report.pixel_labels[::step, ::step]
    low, high = intensity
    grey = np.clip((grey - low) / max(high - low, 1e-12), 0.0, 1.0)
    colours = community_colors(int(labels.max()) + 1)[:, :3].astype(np.float32)
    # Blend through a lookup table (label -1, no chip, is the last row: grey only): one
    # gather and one add, a third of the time of masked blending on 10^6 pixels.
    lut = np.vstack([colours * OVERLAY_ALPHA, np.zeros((1, 3))]).astype(np.float32) * 255
    weight = np.where(labels >= 0, np.float32(1 - OVERLAY_ALPHA), np.float32(1.0))[..., None]
    rgb = lut[labels] + (grey * np.float32(255))[..., None] * weight
    height, width = grey.shape
    canvas = Image.new("RGB", (width + LEGEND_WIDTH, max(height, 40)), "white")
    canvas.paste(Image.fromarray((rgb + 0.5).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, min(18, height // 40)))
    line = font.size + 6
    draw.text((width + 8, 4), f"frame {report.index}", fill="black", font=font)
    present = np.unique(report.chip_labels)
    for i, community in enumerate(present[: max(0, (height - 2 * line) // line)]):
        y = 4 + line * (i + 1)
        colour = tuple(int(255 * c) for c in colours[community])
        draw.rectangle([width + 8, y, width + 8 + font.size, y + font.size], fill=colour, outline="black")
        draw.text((width + 14 + font.size, y), f"{community}" + (" new" if community in report.new_communities
                                                                   else ""), fill="black", font=font)
    radius = float(np.clip(height / report.chip_labels.shape[0], 6.0, 40.0))  # about one chip stride
    for p in report.points:
        cy, cx = p.row / step, p.col / step
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        draw.ellipse(box, outline="black", width=4)
        draw.ellipse(box, outline="yellow", width=2)
        draw.text((cx + radius * 0.75, cy - radius * 1.1), str(p.rank), fill="yellow", font=font,
                  stroke_width=2, stroke_fill="black")
    return canvas


def save_png(image: Image.Image, path: Path) -> None:
    """Write a PNG atomically (fast compression: overlays are replaced every frame)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)


def descriptor_figure(reports: Sequence[FrameReport], axis: SeriesAxis) -> Figure:
    """Area fraction, crystallinity and mean intensity of every community over the frames."""
    rows = [row for report in reports for row in report.rows]
    x = np.array([r.value if np.isfinite(r.value) else r.index for r in reports], dtype=float)
    label = axis.label if all(np.isfinite(r.value) for r in reports) else "frame"
    if label == "frame":
        x = np.array([r.index for r in reports], dtype=float)
    ids = sorted({row["community"] for row in rows})
    colours = community_colors(max(ids, default=-1) + 1)
    at = {(row["frame"], row["community"]): row for row in rows}
    fig = Figure(figsize=(8, 8.5), layout="constrained")
    panels = fig.subplots(3, 1, sharex=True)
    quantities = (("area_fraction", "area fraction"), ("crystallinity", "crystallinity"),
                  ("mean_intensity", "mean intensity (counts)"))
    for ax, (key, title) in zip(panels, quantities):
        for community in ids:
            values = [at.get((r.index, community), {}).get(key, np.nan) for r in reports]
            if key == "area_fraction":
                values = [0.0 if v is None or not np.isfinite(v) else v for v in values]
            ax.plot(x, values, "o-", color=colours[community], ms=3, lw=1.2, label=f"community {community}")
        ax.set_ylabel(title)
    panels[0].plot(x, [disordered_area(r.rows) for r in reports], "k--", lw=1.5,
                   label=f"disordered area (windows with crystallinity < {DISORDER_THRESHOLD:g})")
    panels[1].axhline(DISORDER_THRESHOLD, color="0.6", lw=0.8, ls=":")
    panels[-1].set_xlabel(label)
    panels[0].legend(fontsize="x-small", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    panels[0].set_title(f"communities over {len(reports)} frames")
    return fig

