"""The ``community_map`` signal: community labels on calibrated spatial axes.

:class:`CommunityMap` is a ``Signal2D`` of int32 community ids (0 = largest
community, -1 = none) whose axes are the calibrated spatial axes of the data it
segments; :class:`LazyCommunityMap` is its lazy twin.  Both are registered with
HyperSpy by ``multimodal_seg/hyperspy_extension.yaml`` (signal type
``"community_map"``), so ``hs.load`` and ``s.set_signal_type("community_map")``
return them.  What a segmentation run recorded (config, encoders, seed, versions,
warnings: the content of ``provenance.json``) is under ``metadata.Segmentation``.

Positions are matched through the calibration, as the pipeline matches
modalities (:mod:`multimodal_seg.chips.shared`): pixel ``i`` of an axis covers
``[offset + i * scale, offset + (i + 1) * scale)``, so a map can be read at the
scan positions of a spectrum image of the same area, or painted on a finer image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from hyperspy.signals import BaseSignal, LazySignal, LazySignal2D, Signal2D
from matplotlib.colors import to_hex

from .. import plot
from ..chips.shared import to_units
from ..errors import InputError, OutputError, ParameterError
from ..modalities.base import Axis
from .convert import as_axes, describe, spatial_axes

#: HyperSpy signal type of community maps.
SIGNAL_TYPE = "community_map"
UNCALIBRATED = ("px", "unknown")


def resample_labels(labels: np.ndarray, source: list[Axis], target: list[Axis], where: str) -> np.ndarray:
    """Labels of a calibrated map read at the pixels of another calibrated grid.

    Parameters
    ----------
    labels
        ``(rows, cols)`` labels on the ``source`` axes ``(y, x)``.
    source, target
        The two spatial axes of the map and of the grid to read it at.
    where
        Names the target in messages.

    Returns
    -------
    ``(target[0].size, target[1].size)`` int32: the label of the map pixel holding each
    target pixel's centre, -1 where the centre lies outside the map.

    Raises
    ------
    InputError
        One grid is calibrated and the other is not, uncalibrated grids of different
        sizes, or units that do not convert (a length against a reciprocal length).
    """
    index, inside = [], []
    for s_axis, t_axis in zip(source, target, strict=True):
        s_cal, t_cal = s_axis.units not in UNCALIBRATED, t_axis.units not in UNCALIBRATED
        if not s_cal and not t_cal and s_axis.size == t_axis.size:
            idx = np.arange(t_axis.size)  # the same pixels, by position in the array
        elif s_cal and t_cal:
            try:
                offset, scale = (to_units(v, t_axis.units, s_axis.units) for v in (t_axis.offset, t_axis.scale))
            except Exception as exc:  # pint: undefined or incompatible units
                raise InputError(
                    f"axis {t_axis.name!r} is in {t_axis.units}, which does not convert to the community "
                    f"map's {s_axis.units}: {exc}",
                    fix="give both the same kind of length units (nm, um ...)", where=where) from None
            centres = offset + (np.arange(t_axis.size) + 0.5) * scale
            idx = np.floor((centres - s_axis.offset) / s_axis.scale + 1e-9).astype(np.int64)
        else:
            raise InputError(
                f"its spatial axis {t_axis.name!r} ({t_axis.size} px, {t_axis.units}) cannot be matched with the "
                f"community map's ({s_axis.size} px, {s_axis.units}) without calibration on both",
                fix="set the scale and units of the signal's spatial axes (s.axes_manager[i].scale, .units) "
                    "to those of the data that was segmented", where=where)
        inside.append((idx >= 0) & (idx < s_axis.size))
        index.append(np.clip(idx, 0, s_axis.size - 1))
    out = np.asarray(labels)[np.ix_(*index)].astype(np.int32)
    out[~np.outer(*inside)] = -1
    return out


class CommunityMap(Signal2D):
    """Community id (int32, 0 = largest, -1 = none) of every pixel or scan position.

    Made by :func:`multimodal_seg.hyperspy.segment` (or
    :func:`~multimodal_seg.hyperspy.to_community_map`), by ``hs.load`` of a saved map,
    or by ``s.set_signal_type("community_map")`` on any 2-D label image.
    """

    _signal_type = SIGNAL_TYPE

    # ------------------------------------------------------------------ labels

    @property
    def n_communities(self) -> int:
        """Number of communities: the largest id + 1 (ids run 0, 1, ... without gaps)."""
        labels = self.data
        top = labels.max()
        return int(top.compute() if isinstance(top, da.Array) else top) + 1

    def map_axes(self) -> list[Axis]:
        """The map's two calibrated axes ``(y, x)``, in array order."""
        return as_axes(spatial_axes(self), ("y", "x"))

    def labels_on(self, signal: Any) -> np.ndarray:
        """The community of each spatial position of ``signal`` (its scan positions,
        or its pixels for an image), read from the map through both calibrations.

        Returns
        -------
        ``(rows, cols)`` int32 in the signal's array order, -1 outside the map.
        """
        return resample_labels(np.asarray(self.data), self.map_axes(),
                               as_axes(spatial_axes(signal), ("y", "x")), describe(signal))

    # ------------------------------------------------------------------ analysis

    def get_community_signals(self, signal: Any, kind: str = "mean") -> BaseSignal:
        """Mean or summed signal of each community (HyperSpy's ``get_cluster_signals``).

        Parameters
        ----------
        signal
            A spectrum image or 4D-STEM scan (positions: its navigation axes) or an
            image (positions: its pixels) of the segmented area, on any calibrated
            grid; lazy signals give lazy results (nothing is computed here).
        kind
            ``"mean"`` (per position) or ``"sum"`` over each community's positions.

        Returns
        -------
        The signal's class (lazy if it is lazy) with one navigation axis
        ``"community"`` and the signal's own signal axes: ``(n_communities, ...)``.
        For an image, a per-community value (``BaseSignal`` with navigation axis
        ``"community"``).  A community with no position in the signal gets NaN
        (mean) or 0 (sum).

        Raises
        ------
        ParameterError
            ``kind`` is not ``"mean"`` or ``"sum"``.
        InputError
            The signal cannot be matched with the map (see :meth:`labels_on`).
        """
        if kind not in ("mean", "sum"):
            raise ParameterError(f"kind={kind!r}", fix="use kind='mean' or kind='sum'", where="kind")
        labels = self.labels_on(signal).ravel()
        image = signal.axes_manager.navigation_dimension == 0
        data = signal.data
        flat = data.reshape((labels.size,) + tuple(data.shape[2:]))
        xp = da if isinstance(data, da.Array) else np
        per_community = []
        for community in range(self.n_communities):
            members = labels == community
            total = flat[members].sum(axis=0, dtype=np.float64)
            if kind == "mean":
                total = total / members.sum() if members.any() else total * np.nan
            per_community.append(total)
        values = xp.stack(per_community)
        title = str(signal.metadata.get_item("General.title", "") or "signal")
        community_axis = {"name": "community", "size": values.shape[0], "navigate": True}
        if image:
            cls = LazySignal if xp is da else BaseSignal
            return cls(values, axes=[community_axis],
                       metadata={"General": {"title": f"{kind} of {title} per community"}})
        signal_axes = [{**a.get_axis_dictionary(), "navigate": False}
                       for a in sorted(signal.axes_manager.signal_axes, key=lambda a: a.index_in_array)]
        metadata = signal.metadata.as_dictionary()
        metadata.setdefault("General", {})["title"] = f"{kind} of {title} per community"
        return type(signal)(values, axes=[community_axis, *signal_axes], metadata=metadata)

    def get_community_masks(self) -> Signal2D:
        """One boolean mask per community: ``(n_communities | rows, cols)``, navigation
        axis ``"community"`` (lazy for a lazy map), the map's own axes."""
        labels = self.data
        xp = da if isinstance(labels, da.Array) else np
        masks = xp.stack([labels == c for c in range(self.n_communities)])
        axes = [{"name": "community", "size": masks.shape[0], "navigate": True},
                *({**a.get_axis_dictionary(), "navigate": False} for a in spatial_axes(self))]
        cls = LazySignal2D if xp is da else Signal2D
        return cls(masks, axes=axes, metadata={"General": {"title": "community masks"}})

    def community_table(self) -> list[dict[str, Any]]:
        """One row per community: its pixels, area fraction and calibrated area, and the
        run's descriptors where the map came from a run (``metadata.Segmentation``).

        Returns
        -------
        ``[{"community", "n_pixels", "area_fraction", "area", "area_units", ...}, ...]``;
        the run adds ``n_chips``, ``mean_intensity``, ``std_intensity``, ``crystallinity``.
        """
        labels = np.asarray(self.data)
        n = self.n_communities
        counts = np.bincount(labels[labels >= 0].ravel(), minlength=n)
        y, x = self.map_axes()
        pixel_area = y.scale * x.scale
        units = f"{x.units}^2" if x.units == y.units else f"{y.units}*{x.units}"
        stored = self.metadata.get_item("Segmentation.communities")
        stored = stored.as_dictionary() if stored is not None else {}
        rows = []
        for c in range(n):
            row = {"community": c, "n_pixels": int(counts[c]),
                   "area_fraction": float(counts[c] / max(counts.sum(), 1)),
                   "area": float(counts[c] * pixel_area), "area_units": units}
            for column, values in stored.items():
                if column not in row and len(values) == n:
                    row[column] = values[c].item() if hasattr(values[c], "item") else values[c]
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ pictures

    def plot(self, image: Any = None, *, alpha: float = 0.4, **kwargs: Any) -> None:
        """Plot the map in the community colours (:func:`multimodal_seg.plot.community_colors`,
        as in every figure and the HTML report), or overlay it on ``image``.

        Parameters
        ----------
        image
            A HyperSpy image (``Signal2D``) of the area, on any calibrated grid, e.g. the
            HAADF image; ``None`` plots the map alone.
        alpha
            Opacity of the overlay, in [0, 1].
        kwargs
            Passed to HyperSpy's ``plot`` of the map (or of ``image``); ``colorbar`` is off
            unless asked for (a legend names the community colours).
        """
        from matplotlib.colors import ListedColormap

        if not 0 <= alpha <= 1:
            raise ParameterError(f"alpha={alpha}", fix="use an opacity between 0 and 1, e.g. 0.4", where="alpha")
        n = self.n_communities
        kwargs = {"colorbar": False, **kwargs}  # the legend names the colours
        if image is None:
            colours = ListedColormap(plot.community_colors(n)).with_extremes(under=(0, 0, 0, 0))  # -1: none
            super().plot(cmap=colours, vmin=-0.5, vmax=n - 0.5, **kwargs)
            ax = self._plot.signal_plot.ax  # HyperSpy's documented handle on its figure
        else:
            labels = self.labels_on(image)
            image.plot(**kwargs)
            ax = image._plot.signal_plot.ax
            base = ax.images[0]
            # Drawn like HyperSpy's own image (animated when it blits), just above it.
            ax.imshow(plot.label_rgba(labels, alpha), extent=base.get_extent(), interpolation="nearest",
                      animated=base.get_animated(), zorder=base.get_zorder() + 0.5)
        plot.legend(ax, n, inside=True)
        ax.figure.canvas.draw_idle()

    def plot_community_signals(self, signal: Any, kind: str = "mean", **kwargs: Any) -> Any:
        """Plot :meth:`get_community_signals` of ``signal``: spectra overlaid in the
        community colours (``hs.plot.plot_spectra``), or one pattern per community
        (``hs.plot.plot_images``).  This computes the community signals of a lazy signal.

        Parameters
        ----------
        signal
            A spectrum image or a 4D-STEM scan of the segmented area.
        kind
            ``"mean"`` or ``"sum"``.
        kwargs
            Passed to ``plot_spectra`` or ``plot_images``.

        Returns
        -------
        What HyperSpy's plotting function returns (the matplotlib axes).

        Raises
        ------
        InputError
            ``signal`` is an image: its community values are numbers, see
            :meth:`community_table` or :meth:`get_community_signals`.
        """
        import hyperspy.api as hs

        if signal.axes_manager.navigation_dimension == 0:
            raise InputError("is an image: each community's signal is one number, nothing to plot as a curve",
                             fix="use cmap.get_community_signals(image).data, or plot a spectrum image or "
                                 "4D-STEM scan", where=describe(signal))
        means = self.get_community_signals(signal, kind)
        if isinstance(means.data, da.Array):
            means.compute()
        labels = [f"community {c}" for c in range(means.axes_manager.navigation_size)]
        parts = [means.inav[c] for c in range(len(labels))]
        if means.axes_manager.signal_dimension == 1:
            colours = [to_hex(c) for c in plot.community_colors(len(labels))]
            return hs.plot.plot_spectra(parts, color=colours, legend=labels, **kwargs)
        defaults = {"cmap": "inferno", "norm": "log", "colorbar": None, "axes_decor": "off",
                    "per_row": min(len(parts), 6)}
        return hs.plot.plot_images(parts, label=labels, **{**defaults, **kwargs})

    # ------------------------------------------------------------------ files

    def save(self, filename: str | Path | None = None, overwrite: bool | None = None,
             extension: str | None = None, file_format: str | None = None, **kwds: Any) -> None:
        """HyperSpy's ``save``; ``.hspy`` (HDF5) round trips to this class.

        Raises
        ------
        OutputError
            ``.zspy``, when RosettaSciIO's zarr writer fails: RosettaSciIO 0.15's writer
            needs zarr 2 and this package uses zarr 3.
        """
        zspy = any(str(v).lower().lstrip(".") == "zspy" for v in (extension, file_format) if v) or (
            filename is not None and Path(filename).suffix.lower() == ".zspy")
        target = Path(filename) if filename is not None else None
        existed = target is not None and target.exists()
        try:
            super().save(filename, overwrite=overwrite, extension=extension, file_format=file_format, **kwds)
        except Exception as exc:
            if not zspy:
                raise
            if target is not None and target.exists() and not existed:
                import shutil

                shutil.rmtree(target, ignore_errors=True)  # no half-written store left behind
            import zarr

            raise OutputError(
                f"RosettaSciIO's .zspy writer failed ({type(exc).__name__}: {exc}): it needs zarr 2, and "
                f"multimodal_seg needs zarr 3 (installed: {zarr.__version__})",
                fix="save as HDF5 instead: cmap.save('result.hspy'), which hs.load reads back as a "
                    "CommunityMap", where=filename) from exc


class LazyCommunityMap(CommunityMap, LazySignal2D):
    """The lazy twin of :class:`CommunityMap` (``hs.load(..., lazy=True)``, ``cmap.as_lazy()``)."""
