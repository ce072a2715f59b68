"""A damage series: HAADF frames of one specimen whose amorphous front grows from frame to frame.

The specimen is the HAADF phantom's (:mod:`multimodal_seg.synthetic.phantoms`): two
grains of phase A at different orientations, a grain of phase B, and an amorphous
(irradiation-damaged) layer advancing from the bottom edge.  Here the layer grows
with the dose, as in an in-situ irradiation experiment:

* the specimen is drawn once: its grains, its lattices of atomic columns (with their
  static displacements and weights) over the grains' whole extent, and random
  amorphous atom sites over the region the front reaches by the last frame;
* in frame ``i`` the front lies at ``depth_i(x) = start + p(x) + (end - start) *
  i / (n - 1) * v(x)`` (fractions of the image height per column ``x``), where
  ``p`` is the phantom's wavy, rough front profile about its mean and ``v(x) = 1 +
  unevenness * sin(...)`` the local speed (the front advances faster in some
  places: "where the boundary moved most" is a real place); the front only advances;
* a column is in the frame while the region map of that frame still gives its
  region (crystal columns vanish where the front has passed, amorphous sites appear);
  where two regions meet, clashing columns are resolved with one fixed priority, so
  material away from the front is the same specimen in every frame;
* each frame is imaged with the same beam (the counts scale is set once, from the
  first frame) and its own shot and read noise.

Nothing moves but the front: no drift, no change of focus or thickness.  The truth
of frame ``i`` is :meth:`DamageSeries.truth` (region ids as in the phantom: 0, 1
grains of A, 2 phase B, 3 amorphous); :attr:`DamageSeries.damaged_fraction` is the
amorphous area fraction per frame.  :mod:`multimodal_seg.synthetic.feed` writes the
frames to a folder at a chosen rate, like a microscope.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError
from .phantoms import (
    check_specimen, default_materials, detector_counts, expected_counts, haadf_phantom, perturb_and_weigh, place_columns, region_at,
    region_layout, resolve_clashes, with_front,
)

__all__ = ["DamageSeries", "damage_series"]

#: Region id of the amorphous (damaged) material in the truth maps.
AMORPHOUS = 3
#: The specimen's physics and their defaults: those of the HAADF phantom.
SPECIMEN = {name: parameter.default for name, parameter in inspect.signature(haadf_phantom).parameters.items()
            if name not in ("shape", "seed", "noise")}


@dataclass
class DamageSeries:
    """Frames of a specimen whose amorphous front grows, with the truth of each frame.

    Attributes
    ----------
    shape
        ``(rows, cols)`` of every frame, pixels.
    n_frames
        Number of frames.
    times
        ``(n_frames,)`` acquisition time of each frame, seconds from the first.
    depths
        ``(n_frames, cols)`` depth of the amorphous layer per column, fraction of the height.
    pixel_size, units
        Calibration of both image axes (``units`` per pixel).
    seed
        The seed everything was drawn from.
    description
        One paragraph: the specimen, the growth and the imaging.
    """

    shape: tuple[int, int]
    n_frames: int
    times: np.ndarray
    depths: np.ndarray
    pixel_size: float
    units: str
    seed: int
    description: str
    _grains: np.ndarray = field(repr=False)
    _pos: np.ndarray = field(repr=False)
    _reg: np.ndarray = field(repr=False)
    _weight: np.ndarray = field(repr=False)
    _priority: np.ndarray = field(repr=False)
    _imaging: dict = field(repr=False)

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self.n_frames:
            raise ParameterError(f"frame {index!r} is not one of the {self.n_frames} frames",
                                 fix=f"use an index from 0 to {self.n_frames - 1}", where="frame")
        return int(index)

    def truth(self, index: int) -> np.ndarray:
        """Region map of frame ``index``: int16 ``(rows, cols)``, 3 = amorphous."""
        return with_front(self._grains, self.depths[self._check_index(index)])

    @property
    def damaged_fraction(self) -> np.ndarray:
        """``(n_frames,)`` area fraction of the amorphous region in each frame."""
        return np.array([float(np.mean(self.truth(i) == AMORPHOUS)) for i in range(self.n_frames)])

    def expected(self, index: int) -> np.ndarray:
        """Noiseless image of frame ``index`` in relative units (before the counts scale)."""
        truth = self.truth(index)
        active = region_at(truth, self._pos[:, 0], self._pos[:, 1]) == self._reg
        pos, reg = self._pos[active], self._reg[active]
        keep = resolve_clashes(pos, reg, self.pixel_size, self._priority[active])
        im = self._imaging
        return expected_counts(self.shape, pos[keep], self._weight[active][keep], truth, im["materials"],
                               pixel_size=self.pixel_size, column_sigma=im["column_sigma"],
                               reference_spacing=im["lattice_a"], thickness_gradient=im["thickness_gradient"],
                               ramp_direction=im["ramp_direction"])

    def frame(self, index: int, *, noise: bool = True) -> np.ndarray:
        """Frame ``index`` as detector counts: float32 ``(rows, cols)``.

        The same index always gives the same array (its noise is seeded by the
        series' seed and the index); ``noise=False`` gives the expected counts.
        """
        index = self._check_index(index)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, index)))
        return detector_counts(self.expected(index), scale=self._imaging["scale"], rng=rng,
                               read_noise=self._imaging["read_noise"], noise=noise)


def _check_growth(n_frames: int, start: float, end: float, unevenness: float, frame_interval: float) -> None:
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ParameterError(f"n_frames must be a positive integer, got {n_frames!r}",
                             fix="pass e.g. n_frames=8", where="n_frames")
    if not (0.0 <= start < 0.95 and 0.0 <= end < 0.95 and start <= end):
        raise ParameterError(
            f"the damaged layer must grow within the image: start={start!r}, end={end!r} "
            "(mean depth as a fraction of the height)",
            fix="use 0 <= start <= end < 0.95, e.g. start=0.08, end=0.45", where="start")
    if not 0.0 <= unevenness < 1.0:
        raise ParameterError(f"unevenness must be in [0, 1), got {unevenness!r}",
                             fix="use e.g. 0.5 (0: the front advances evenly)", where="unevenness")
    if not (math.isfinite(frame_interval) and frame_interval > 0):
        raise ParameterError(f"frame_interval must be a positive number of seconds, got {frame_interval!r}",
                             fix="pass e.g. frame_interval=1.0", where="frame_interval")


def damage_series(
    shape: tuple[int, int] = (512, 512),
    n_frames: int = 8,
    *,
    seed: int = 0,
    start: float = 0.08,
    end: float = 0.45,
    unevenness: float = 0.5,
    frame_interval: float = 1.0,
    **specimen: float,
) -> DamageSeries:
    """A HAADF damage series: the phantom specimen with an amorphous front that grows.

    Parameters
    ----------
    shape
        ``(rows, cols)`` of every frame, at least 64 px each.
    n_frames
        Number of frames.
    seed
        Seed of the specimen and of every frame's noise; the same seed gives the same series.
    start, end
        Mean depth of the amorphous layer in the first and the last frame, as fractions
        of the image height (``0 <= start <= end < 0.95``).
    unevenness
        Relative variation of the front's local speed along the image (``[0, 1)``; 0:
        every column advances equally).
    frame_interval
        Seconds between frames (:attr:`DamageSeries.times`).
    specimen
        The phantom's physics, as for :func:`multimodal_seg.synthetic.phantoms.haadf_phantom`
        and with its defaults: ``pixel_size``, ``dose`` (mean counts per pixel of the first
        frame; the beam stays the same afterwards), ``read_noise``, ``lattice_a``,
        ``lattice_b``, ``rotation``, ``column_sigma``, ``thickness_gradient``.

    Returns
    -------
    DamageSeries
        Frames are rendered on demand (:meth:`DamageSeries.frame`, about 0.3 s for
        1024 x 1024 px), with their truth (:meth:`DamageSeries.truth`).

    Raises
    ------
    ParameterError
        Impossible specimen parameters (as for the phantom), or a growth that leaves the image.
    """
    unknown = sorted(set(specimen) - set(SPECIMEN))
    if unknown:
        raise ParameterError(f"unknown specimen parameters {unknown}",
                             fix=f"use those of haadf_phantom: {', '.join(SPECIMEN)}", where=", ".join(unknown))
    (rows, cols), p = check_specimen(shape, seed, **{**SPECIMEN, **specimen})
    _check_growth(n_frames, start, end, unevenness, frame_interval)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    grains, depth = region_layout(rng, rows, cols)
    profile = depth - depth.mean()  # the phantom's wavy, rough front about its mean
    x = (np.arange(cols) + 0.5) / cols
    speed = 1.0 + unevenness * np.sin(2 * np.pi * rng.uniform(0.4, 0.9) * x + rng.uniform(0, 2 * np.pi))
    progress = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    # At least 2 px deep everywhere: the layer stays one piece along the bottom edge (a
    # detached piece would be given to the grain around it, and reappear at once later).
    floor = max(0.01, 2.0 / rows)
    depths = np.clip(start + profile[None, :] + (end - start) * progress[:, None] * speed[None, :], floor, 0.95)
    depths = np.maximum.accumulate(depths, axis=0)  # the front never retreats, clipping included

    # Columns over the grains' whole extent and amorphous sites where the front gets to.
    extent = with_front(grains, depths[-1])
    materials = default_materials(p)
    optics = {"pixel_size": p["pixel_size"], "column_sigma": p["column_sigma"], "reference_spacing": p["lattice_a"]}
    crystal_pos, crystal_reg = place_columns(rng, grains, materials, **optics)
    amorphous_pos, amorphous_reg = place_columns(rng, np.where(extent == AMORPHOUS, AMORPHOUS, -1), materials,
                                                 **optics)
    pos = np.concatenate([crystal_pos, amorphous_pos])
    reg = np.concatenate([crystal_reg, amorphous_reg])
    pos, weight = perturb_and_weigh(rng, pos, reg, materials, p["pixel_size"])
    priority = rng.permutation(len(pos))
    imaging = {k: p[k] for k in ("column_sigma", "lattice_a", "thickness_gradient", "read_noise")}
    imaging["ramp_direction"] = rng.uniform(0, 2 * np.pi)
    imaging["materials"] = materials
    times = frame_interval * np.arange(n_frames, dtype=np.float64)
    description = (
        f"Damage series of {n_frames} HAADF frames ({rows}x{cols} px at {p['pixel_size']:g} nm/px, "
        f"{frame_interval:g} s apart) of the phantom specimen (two grains of phase A, one of phase B): "
        f"the amorphous layer grows from a mean depth of {start:.0%} to {end:.0%} of the height, "
        f"its local speed varying by +-{unevenness:.0%} along the front; the same columns in every "
        f"frame away from the front, fresh Poisson and read noise ({p['read_noise']:g} counts) per frame, "
        f"{p['dose']:g} counts/px in the first frame."
    )
    series = DamageSeries(shape=(rows, cols), n_frames=int(n_frames), times=times, depths=depths,
                          pixel_size=p["pixel_size"], units="nm", seed=int(seed), description=description,
                          _grains=grains, _pos=pos, _reg=reg, _weight=weight, _priority=priority,
                          _imaging=imaging)
    series._imaging["scale"] = p["dose"] / float(series.expected(0).mean(dtype=np.float64))
    return series
