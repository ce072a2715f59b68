"""Figures: community overlay, chip map, community graph.

All functions return a matplotlib Figure and never call ``plt.show()``; the
Agg backend is used when no display is available.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from matplotlib import colors as mcolors
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .graphs.labels import communities_phrase, n_labels
from .metrics import matched_labels
from .provenance import atomic_path

#: Largest image edge drawn at full resolution; larger images are decimated for display.
MAX_DISPLAY = 2048
#: Largest number of graph nodes laid out; larger graphs are subsampled for the figure.
MAX_GRAPH_NODES = 3000
#: Strongest known X-ray lines / EELS edges marked per spectrum (and listed in report.html).
MARKED_LINES = 8
#: zlib level of the PNGs written (:func:`png_bytes`): lossless at every level; 1 wrote the four
#: figures of a NASA EBC run in 1.26 s against 1.77 s at matplotlib's default 6 (median of 5),
#: for files 5 % larger (1487 against 1422 KiB).
PNG_COMPRESS_LEVEL = 1


def png_bytes(fig: Figure, *, dpi: int = 120) -> bytes:
    """``fig`` drawn at ``dpi`` as PNG bytes (compressed at ``PNG_COMPRESS_LEVEL``): every figure
    the package writes goes through here."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> None:
    """``fig`` written to ``path`` as a PNG (:func:`png_bytes`), atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(png_bytes(fig, dpi=dpi))


def community_colors(n: int) -> np.ndarray:
    """``(n, 4)`` RGBA colours: tab10 and its light shades for the first 20 communities, then
    further hues 137.5 deg apart (the golden angle), so that community ``i`` keeps its colour
    whatever ``n`` is (a time series gives new communities new colours)."""
    base = [mcolors.to_rgba(c) for c in (*_TAB10, *_TAB10_LIGHT)]
    extra = [mcolors.to_rgba(mcolors.hsv_to_rgb(((0.05 + 0.381966 * i) % 1.0, 0.75, 0.55 + 0.3 * (i % 2))))
             for i in range(max(0, n - len(base)))]
    return np.array((base + extra)[:n]) if n else np.zeros((0, 4))


_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_TAB10_LIGHT = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
                "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")


def _decimate(image: np.ndarray) -> tuple[np.ndarray, int]:
    step = max(1, int(np.ceil(max(image.shape) / MAX_DISPLAY)))
    return image[::step, ::step], step


def nearest_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map ``(h, w)`` sampled at the centres of a ``shape`` grid over the same field
    (nearest neighbour): the communities painted on the image's pixels read on a coarser
    scan's grid, or the other way round."""
    labels = np.asarray(labels)
    rows, cols = ((np.arange(n) + 0.5) * labels.shape[i] / n for i, n in enumerate(shape))
    return labels[np.ix_(rows.astype(np.int64), cols.astype(np.int64))]


def label_rgba(labels: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """RGBA image of a label map; -1 is transparent."""
    n = int(labels.max()) + 1 if (labels >= 0).any() else 1
    rgba = community_colors(n)[np.clip(labels, 0, None)]
    rgba[..., 3] = np.where(labels >= 0, alpha, 0.0)
    return rgba


def legend(ax, n: int, names: list[str] | None = None, *, inside: bool = False) -> None:
    """A legend of ``n`` community colours (``names`` or "community i") right of ``ax``, or
    ``inside`` it (upper right, on a translucent frame) where the figure's layout is not
    ours to widen (HyperSpy's figures: a legend outside the axes was cut off)."""
    colors = community_colors(n)
    handles = [Patch(color=colors[i], label=names[i] if names else f"community {i}") for i in range(n)]
    if inside:
        ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.8)
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                  frameon=False)


def _extent(shape: tuple[int, int], scale: float) -> tuple[float, float, float, float]:
    return (0, shape[1] * scale, shape[0] * scale, 0)


def overlay(image: np.ndarray, pixel_labels: np.ndarray, *, alpha: float = 0.4,
            pixel_size: float = 1.0, units: str = "px", title: str = "communities") -> Figure:
    """The image in grey with translucent community colours and a legend."""
    img, step = _decimate(np.asarray(image))
    lab, _ = _decimate(np.asarray(pixel_labels))
    fig = Figure(figsize=(7.5, 6), layout="constrained")
    ax = fig.add_subplot()
    extent = _extent(image.shape, pixel_size)
    ax.imshow(img, cmap="gray", extent=extent, interpolation="nearest")
    ax.imshow(label_rgba(lab, alpha), extent=extent, interpolation="nearest")
    ax.set_xlabel(units)
    ax.set_ylabel(units)
    ax.set_title(title)
    legend(ax, int(pixel_labels.max()) + 1)
    return fig


def chip_map(chip_labels: np.ndarray, *, title: str = "chip communities") -> Figure:
    """One square per chip, coloured by community; white where there is no chip."""
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(label_rgba(np.asarray(chip_labels)), interpolation="nearest")
    ax.set_xlabel("chip column")
    ax.set_ylabel("chip row")
    ax.set_title(title)
    legend(ax, int(chip_labels.max()) + 1)
    return fig


def community_graph(graph: sp.csr_matrix, labels: np.ndarray, *, seed: int = 0,
                    title: str = "chip similarity graph") -> Figure:
    """Chips as nodes (force-directed layout), coloured by community, edges in grey.

    The layout is igraph's Fruchterman-Reingold with its grid at every size (igraph's default
    grids graphs above 1000 nodes only): 961 chips of a NASA EBC image laid out in 0.2 s
    against 1.0 s; the communities stand apart in it as before."""
    from .graphs.communities import seeded_igraph, to_igraph

    labels = np.asarray(labels).ravel()
    n = graph.shape[0]
    if n > MAX_GRAPH_NODES:  # lay out a random subgraph: the picture, not the analysis
        keep = np.sort(np.random.default_rng(seed).choice(n, MAX_GRAPH_NODES, replace=False))
        graph, labels = graph[keep][:, keep], labels[keep]
        title += f" ({MAX_GRAPH_NODES} of {n} chips)"
    g = to_igraph(graph.tocsr())
    with seeded_igraph(seed):
        layout = np.asarray(g.layout_fruchterman_reingold(weights="weight", niter=300, grid=True).coords)
    upper = sp.triu(graph, k=1).tocoo()
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    segments = np.stack([layout[upper.row], layout[upper.col]], axis=1)
    ax.add_collection(LineCollection(segments, colors="0.6", linewidths=0.3, alpha=0.3))
    colors = community_colors(int(labels.max()) + 1)
    ax.scatter(layout[:, 0], layout[:, 1], s=8, c=colors[np.clip(labels, 0, None)], linewidths=0)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title)
    legend(ax, int(labels.max()) + 1)
    return fig


def summary(image: np.ndarray, pixel_labels: np.ndarray, chip_labels: np.ndarray, *,
            truth: np.ndarray | None = None, pixel_size: float = 1.0, units: str = "px") -> Figure:
    """Side-by-side panels: image, overlay, chip map (and truth when given, each true region
    in the colour of the community matched to it: :func:`multimodal_seg.metrics.matched_labels`)."""
    panels = 4 if truth is not None else 3
    # panels as tall as the image is (a square image in a squat figure lost its titles), and
    # room for a title above and a label below
    aspect = image.shape[0] / max(image.shape[1], 1)
    fig = Figure(figsize=(4.2 * panels, min(4.2 * aspect, 8.0) + 1.0), layout="constrained")
    axes = fig.subplots(1, panels)
    img, _ = _decimate(np.asarray(image))
    lab, _ = _decimate(np.asarray(pixel_labels))
    extent = _extent(image.shape, pixel_size)
    axes[0].imshow(img, cmap="gray", extent=extent)
    axes[0].set_title("image")
    axes[1].imshow(img, cmap="gray", extent=extent)
    axes[1].imshow(label_rgba(lab, 0.45), extent=extent, interpolation="nearest")
    axes[1].set_title(communities_phrase(n_labels(np.asarray(pixel_labels))))
    axes[2].imshow(label_rgba(np.asarray(chip_labels)), interpolation="nearest")
    axes[2].set_title("chip map")
    if truth is not None:
        # each true region in the colour of the community that matches it best, so that the
        # two panels compare at a glance; a region no community matches gets a colour of its own
        truth = np.asarray(truth)
        shown = matched_labels(truth, nearest_labels(pixel_labels, truth.shape))
        axes[3].imshow(label_rgba(_decimate(shown)[0]), extent=extent, interpolation="nearest")
        axes[3].set_title("ground truth")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_xlabel(f"width {readable_length(image.shape[1] * pixel_size, units)}")
    return fig


def readable_length(value: float, units: str) -> str:
    """``value`` ``units`` with the SI prefix that keeps it between 1 and 1000 where the units
    are a length (``0.002677 m`` -> ``2.677 mm``), to four significant digits; as given
    otherwise (``px``: pint would read it as a CSS pixel)."""
    import pint

    if units != "px":
        try:
            quantity = pint.UnitRegistry().Quantity(value, units)
            if quantity.check("[length]"):
                compact = quantity.to_compact()
                return f"{compact.magnitude:.4g} {compact.units:~P}"
        except Exception:  # noqa: BLE001 - units pint does not know are shown as given
            pass
    return f"{value:.4g} {units}"


def modality_maps(chip_labels: dict[str, np.ndarray], *, colours_of: str | None = None) -> Figure:
    """Each modality's own partition and the joint one, side by side (label maps of any grid).

    ``colours_of``: the name of the map whose colours the others follow: each of their
    communities is drawn in the colour of the community of that map it is matched to
    (:func:`multimodal_seg.metrics.matched_labels`, on that map sampled onto its grid), and one
    without a partner in a colour of its own, so that the same region reads in one colour
    across the panels.  ``None``: every map in its own community ids.
    """
    reference = None if colours_of is None else np.asarray(chip_labels[colours_of])
    fig = Figure(figsize=(3.6 * len(chip_labels), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(chip_labels)))
    for ax, (name, labels) in zip(axes, chip_labels.items()):
        labels = np.asarray(labels)
        shown = labels if reference is None or name == colours_of else matched_labels(
            labels, nearest_labels(reference, labels.shape))
        ax.imshow(label_rgba(shown), interpolation="nearest")
        ax.set_title(f"{name}: {communities_phrase(n_labels(labels))}")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def label_heights(positions: list[float], *, span: float, gap: float = 0.02,
                  levels: tuple[float, ...] = (1.0, 0.8, 0.6)) -> list[float]:
    """Heights (axes fraction) for vertical labels at sorted ``positions``: each label takes
    the highest of ``levels`` whose last label is at least ``gap * span`` away (the least
    crowded one where none is), so that lines a few tens of eV apart do not print their
    names over each other."""
    last = [-np.inf] * len(levels)
    heights = []
    for position in positions:
        free = [i for i, previous in enumerate(last) if position - previous >= gap * span]
        level = free[0] if free else int(np.argmin(last))
        last[level] = position
        heights.append(levels[level])
    return heights


def community_signals(signals: dict[str, np.ndarray], axes: dict | None = None,
                      lines: dict | None = None) -> Figure:
    """Mean spectrum (lines, calibrated energy, known lines/edges marked) or mean
    diffraction pattern (log images) of each community."""
    axes, lines = axes or {}, lines or {}
    rows = list(signals.items())
    n_pattern = max((m.shape[0] for _, m in rows if m.ndim == 3), default=0)
    fig = Figure(figsize=(max(8, 2.2 * n_pattern), 3.8 * len(rows)), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(rows), 1))
    for sub, (name, mean) in zip(subfigs, rows):
        colors = community_colors(mean.shape[0])
        if mean.ndim == 2:  # spectra
            ax = sub.subplots()
            energy_axis = (axes.get(name) or [None])[-1]
            x = (energy_axis.offset + energy_axis.scale * np.arange(mean.shape[1])
                 if energy_axis is not None else np.arange(mean.shape[1]))
            positive = mean[mean > 0]
            floor = 0.5 * positive.min() if positive.size else 1e-3
            for i, spectrum in enumerate(mean):
                ax.plot(x, np.clip(spectrum, floor, None), color=colors[i], label=f"community {i}", lw=1)
            ax.set_yscale("log")
            ax.set_ylim(bottom=floor)
            ax.set_xlabel(f"energy ({energy_axis.units})" if energy_axis is not None else "channel")
            ax.set_ylabel("mean counts per position")
            ax.set_title(f"{name}: mean spectrum per community")
            table = lines.get(name)
            if table:
                from .analysis.spectral_lines import marked

                shown = marked(table, top=MARKED_LINES)
                heights = label_heights([table["energies"][i] for i, _ in shown], span=float(np.ptp(x)) or 1.0)
                for (index, label), height in zip(shown, heights):
                    ax.axvline(table["energies"][index], color="0.5", lw=0.6, ls=":")
                    ax.text(table["energies"][index], height, label.split("/")[0],
                            transform=ax.get_xaxis_transform(), rotation=90, va="top",
                            ha="right", fontsize="x-small", color="0.3")
            if mean.shape[0] <= 12:
                ax.legend(fontsize="small", frameon=False, loc="upper right")
        else:  # patterns
            grid = np.atleast_1d(sub.subplots(1, mean.shape[0]))
            for i, (ax, pattern) in enumerate(zip(grid, mean)):
                ax.imshow(np.log1p(np.clip(pattern, 0, None)), cmap="inferno")
                ax.set_title(f"community {i}", color=colors[i], fontsize="small")
                ax.set_xticks([])
                ax.set_yticks([])
            sub.suptitle(f"{name}: mean diffraction pattern per community (log)")
    return fig
