"""Diffraction (4D-STEM) encoders: one vector per chip of diffraction patterns.

Chips are ``(n, h, w, qy, qx)`` raw counts: ``h x w`` scan positions, one
pattern each.  Each encoder embeds the patterns and averages them over the
chip's positions.

``diffraction-profiles`` (weight-free, the default for diffraction)
    What a microscopist reads off a pattern.  Each pattern is centred on its
    direct beam (centre of mass of the central disc), scaled (by default the
    pixels beyond the direct beam to mean 1 over them, so that the features do
    not change with the specimen's thickness, which scales what is scattered
    against the beam), ``log1p``, and resampled on a polar grid around that
    centre, folded to [0, 180) deg by Friedel symmetry.  Features:

    * radial profile (``n_radial`` bins): mean log intensity against scattering
      radius beyond the direct beam (radii inside it take the value just
      outside), rotation-invariant: lattice spacings, amorphous rings, diffuse
      background;
    * angular profile (``n_angular`` bins over [0, 180) deg): intensity above
      each radius's angular median, averaged over the annulus outside the direct
      beam, so the strongest rings (Bragg spots) dominate: the orientation of
      the lattice, which separates grains of one phase;
    * spottiness: the largest peak-to-median ratio (log) along any ring of the
      annulus: sharp Bragg spots (crystal) against a uniform ring (amorphous).

``diffraction-cnn`` (trainable; random init only when asked)
    A small 2D convnet over the centred, log-scaled pattern, resized to a fixed
    size, so any detector size works.

The direct beam is found per pattern as the pixels from half its maximum up, each
weighed by a ramp of its value (centre of mass and area of those weights), and the
annulus beyond it starts with a 1 px ramp too: hard cuts there made features jump as
descan moved the beam by a fraction of a pixel, splitting one region into two
populations.  Scaling uses :func:`~multimodal_seg.modalities.diffraction.scale_patterns`.
The profiles encoder does not shift the patterns: it samples its polar grid
around each pattern's own centre, which is exact and cheaper; the convnet
shifts them on its device (``grid_sample``), in the batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..modalities.diffraction import scale_patterns
from .base import Encoder
from .convnet import ConvChipEncoder, small_convnet
from .options import check_bool, check_choice, check_int
from .polar import polar_grid, polar_maps
from .positions import as_chips, mean_over_positions, position_signals

#: Pattern normalisations before ``log1p``: ``scattered`` (mean 1 per pixel outside the
#: direct beam), ``total`` (mean 1 per pixel), ``none`` (counts).
PATTERN_NORMALISATIONS = ("scattered", "total", "none")

#: Bilinear polar samples per block of patterns (bounds the memory of one block).
_SAMPLES_PER_BLOCK = 1_000_000


# ---------------------------------------------------------------- beam centring


#: The direct beam: a pixel's weight in it rises linearly from 0 at ``BEAM_THRESHOLD`` of the
#: pattern's maximum to 1 at ``BEAM_THRESHOLD + BEAM_EDGE`` (nothing below half the maximum
#: counts, so diffuse scattering around the beam, which grows with thickness, stays out).
BEAM_THRESHOLD = 0.5
BEAM_EDGE = 0.2


def _beam_centres(patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direct-beam centre and radius of each pattern, in pixels.

    Each pixel weighs in the beam by a ramp of its value from half the
    pattern's maximum to 0.7 of it (``BEAM_THRESHOLD``, ``BEAM_EDGE``): the direct beam,
    without the diffuse scattering and the (weaker) Bragg spots.  The centre is
    the centre of mass of the counts times those weights; the radius is the
    equivalent radius of the weights' sum (the beam's area), between 1 px and a
    quarter of the detector.

    Why a ramp and not a cut at half the maximum: pixel values change smoothly
    as the beam moves by a fraction of a pixel (descan), but the number of
    pixels above a cut jumps, and a radius that jumps between two values splits
    one region into two populations of patterns.

    Parameters
    ----------
    patterns
        ``(m, qy, qx)`` float32 counts.

    Returns
    -------
    ``(cy, cx, radius)``, each ``(m,)`` float64.  Patterns without positive
    counts get the detector centre.
    """
    m, qy, qx = patterns.shape
    flat = np.maximum(patterns.reshape(m, -1), 0.0)
    top = flat.max(axis=1)
    # in place, one array: the same values as clip((flat / top - threshold) / edge, 0, 1) and
    # flat times it, a quarter faster
    weight = flat / np.where(top > 0, top, 1.0)[:, None]
    weight -= BEAM_THRESHOLD
    weight /= BEAM_EDGE
    np.clip(weight, 0.0, 1.0, out=weight)
    area = weight.sum(axis=1, dtype=np.float64)
    weight *= flat
    mass = weight.reshape(m, qy, qx)
    total = mass.sum(axis=(1, 2), dtype=np.float64)
    ok = total > 0
    safe = np.where(ok, total, 1.0)
    cy = np.where(ok, mass.sum(axis=2, dtype=np.float64) @ np.arange(qy) / safe, (qy - 1) / 2)
    cx = np.where(ok, mass.sum(axis=1, dtype=np.float64) @ np.arange(qx) / safe, (qx - 1) / 2)
    radius = np.sqrt(area / np.pi).clip(1.0, max(min(qy, qx) / 4, 1.0))
    return cy, cx, radius


def _beam_centres_torch(counts: Any) -> tuple[Any, Any]:
    """:func:`_beam_centres`' centres for the convnet, computed in torch on the encoder's
    device: ``counts`` ``(m, qy, qx)`` float32 tensor, non-negative -> ``(cy, cx)``, each
    ``(m,)`` float32 (px).

    The same weights as :func:`_beam_centres` (a ramp of each pixel's value from
    ``BEAM_THRESHOLD`` of the pattern's maximum), summed in float32 (every device has it;
    the centres agree with numpy's float64 sums to about 1e-5 px, tested).  The profiles
    encoder keeps the numpy form: it runs in several Dask threads at once, where torch would
    start an OpenMP team per thread (docs/design.md, "Torch in one thread").
    """
    import torch

    m, qy, qx = counts.shape
    flat = counts.reshape(m, -1)
    top = flat.amax(dim=1, keepdim=True)
    weight = flat / torch.where(top > 0, top, 1.0)
    weight.sub_(BEAM_THRESHOLD).div_(BEAM_EDGE).clamp_(0.0, 1.0).mul_(flat)
    mass = weight.reshape(m, qy, qx)
    rows, columns = mass.sum(dim=2), mass.sum(dim=1)  # (m, qy), (m, qx)
    total = rows.sum(dim=1)
    ok = total > 0
    safe = torch.where(ok, total, 1.0)
    cy = torch.where(ok, rows @ torch.arange(qy, dtype=rows.dtype, device=rows.device) / safe, (qy - 1) / 2)
    cx = torch.where(ok, columns @ torch.arange(qx, dtype=rows.dtype, device=rows.device) / safe, (qx - 1) / 2)
    return cy, cx


def _bin_patterns(patterns: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor x factor`` detector pixels (counts are kept), ``(m, qy, qx)``.

    A remainder of rows or columns is cropped evenly from both sides, so the
    detector centre stays where it was.
    """
    if factor <= 1:
        return patterns
    m, qy, qx = patterns.shape
    ny, nx = qy // factor, qx // factor
    y0, x0 = (qy - ny * factor) // 2, (qx - nx * factor) // 2
    cropped = patterns[:, y0 : y0 + ny * factor, x0 : x0 + nx * factor]
    return cropped.reshape(m, ny, factor, nx, factor).sum(axis=(2, 4), dtype=np.float32)


def _inverse(mean: np.ndarray) -> np.ndarray:
    mean = mean.astype(np.float32)
    return np.divide(1.0, mean, out=np.zeros_like(mean), where=mean > 0)


def _log_scale(patterns: np.ndarray, normalise: str, outside: np.ndarray | None = None) -> np.ndarray:
    """``log1p`` of each pattern's counts (negative ones clipped to 0) after scaling, float32,
    a new array (:func:`multimodal_seg.modalities.diffraction.scale_patterns` takes the log).

    ``total``: each pattern to mean 1 per pixel.  ``scattered``: the pixels beyond the
    direct beam (``outside``, ``(m, qy, qx)`` weights in [0, 1], 1 beyond it) to mean 1 per
    pixel over them, the beam by the pattern's mean over all pixels, and the pixels on the
    edge between the two by the blend of both scales that their weight gives (a hard edge
    would make the scaled values jump as the beam moves by a fraction of a pixel).
    ``none``: counts as they are.
    """
    x = np.maximum(patterns, 0.0, dtype=np.float32)
    if normalise != "none":
        flat = x.reshape(len(x), -1)
        total = _inverse(flat.mean(axis=1, dtype=np.float64))
        if normalise == "total":
            x *= total[:, None, None]
        else:
            where = outside.reshape(len(x), -1)
            scattered = _inverse(np.einsum("ij,ij->i", flat, where, dtype=np.float64)
                                 / np.maximum(where.sum(axis=1, dtype=np.float64), 1.0))
            scale = total[:, None, None] + outside * (scattered - total)[:, None, None]
            x *= scale.astype(np.float32)
    return scale_patterns(x, "log")


def _beyond_beam(shape: tuple[int, int], cy: np.ndarray, cx: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """``(m, qy, qx)`` float32 weights of the pixels beyond ``radius`` ``(m,)`` from each
    centre: 0 inside, 1 outside, rising linearly over the pixel across the circle (see
    :func:`_ring_weights`)."""
    y = np.arange(shape[0], dtype=np.float32)[None, :, None] - cy.astype(np.float32)[:, None, None]
    x = np.arange(shape[1], dtype=np.float32)[None, None, :] - cx.astype(np.float32)[:, None, None]
    return _ring_weights(np.sqrt(y * y + x * x), radius.astype(np.float32)[:, None, None])


def _ring_weights(distance: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """How far each distance (px) lies beyond ``radius``, as a weight in [0, 1]: 0 up to
    ``radius``, 1 from ``radius + 1``, linear between.  A smooth edge, so that features do
    not jump when the beam's centre or radius moves by a fraction of a pixel."""
    return np.clip(distance - radius, 0.0, 1.0).astype(np.float32)


class DiffractionProfilesEncoder(Encoder):
    """Weight-free diffraction features: radial and angular profiles and spottiness.

    Per pattern: binning of large detectors (``max_size``), optional
    direct-beam centring, scaling (``normalise``) and
    ``log1p``, polar resampling around the centre out to ``r_max`` (bilinear,
    radial and arc steps of at most 1 px, Friedel mates averaged).  Then (see the
    module docstring) the radial profile, the angular profile over the annulus
    beyond ``1.5 r + 2`` px (``r``: the direct beam's radius) and the spottiness.
    Embedding = mean over the chip's positions,
    ``dim = n_radial + n_angular + 1``.

    Parameters
    ----------
    n_radial
        Radial bins from the centre to ``r_max``.
    n_angular
        Angular bins over [0, 180) deg (10 deg each by default); angles run
        from the detector's column (+qx) axis towards its row (+qy) axis.
    centre
        Centre each pattern on its direct beam; otherwise the detector centre is
        used (for patterns already centred, or without a direct beam).
    normalise
        ``"scattered"`` (default): scale the pixels beyond ``1.5 r + 2`` px of the
        beam's centre to mean 1 over those pixels and the beam by the pattern's
        mean, and read the radial profile beyond the beam only (embeddings
        independent of dose, and of thickness in single scattering);
        ``"total"``: scale each pattern to mean 1 per pixel before ``log1p``
        (independent of dose; the profile keeps the beam's share, which changes
        with thickness); ``"none"``: ``log1p`` of the counts.
    r_max
        Outer radius as a fraction of half the detector's smaller side
        (0 < r_max <= 1).
    max_size
        Larger detectors are first binned by the smallest integer factor that
        brings them to at most ``max_size`` pixels per side (summing counts):
        the profiles need no finer sampling, and the cost grows with the
        pixel count.

    Raises
    ------
    ParameterError
        Bad option.
    """

    name = "diffraction-profiles"
    lightweight = True  # a few array operations per chip
    kind = "diffraction"
    pools_positions = True

    def __init__(
        self,
        *,
        n_radial: int = 16,
        n_angular: int = 18,
        centre: bool = True,
        normalise: str = "scattered",
        r_max: float = 0.9,
        max_size: int = 128,
    ) -> None:
        self.n_radial = check_int(n_radial, "n_radial", minimum=1, example="16")
        self.n_angular = check_int(n_angular, "n_angular", minimum=1, example="18")
        self.centre = check_bool(centre, "centre")
        self.normalise = check_choice(normalise, "normalise", PATTERN_NORMALISATIONS)
        if (isinstance(r_max, bool) or not isinstance(r_max, (int, float, np.floating))
                or not 0 < r_max <= 1):
            raise ParameterError(
                f"r_max must be a fraction in (0, 1], not {r_max!r}",
                fix="use e.g. r_max=0.9 (90% of half the detector width)",
                where="r_max",
            )
        self.r_max = float(r_max)
        self.max_size = check_int(max_size, "max_size", minimum=16, example="128")

    @property
    def dim(self) -> int:
        return self.n_radial + self.n_angular + 1

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_radial": self.n_radial,
            "n_angular": self.n_angular,
            "centre": self.centre,
            "normalise": self.normalise,
            "r_max": self.r_max,
            "max_size": self.max_size,
            "version": 2,  # 2: smooth beam edge and annulus (descan no longer splits regions)
        }

    def encode(self, chips: np.ndarray) -> np.ndarray:
        """Embed chips ``(n, h, w, qy, qx)`` raw counts -> ``(n, dim)`` float32."""
        patterns, per_chip = position_signals(as_chips(chips, self.kind))
        return mean_over_positions(self.pattern_features(patterns), per_chip)

    def position_features(self, signals: np.ndarray) -> np.ndarray:
        """Features of single patterns ``(m, qy, qx)`` -> ``(m, dim)``; see :meth:`pattern_features`."""
        return self.pattern_features(signals)

    def pattern_features(self, patterns: np.ndarray) -> np.ndarray:
        """Features of single patterns ``(m, qy, qx)`` -> ``(m, dim)`` float32 (no pooling)."""
        patterns = np.asarray(patterns, dtype=np.float32)
        factor = -(-max(patterns.shape[1:]) // self.max_size)  # ceil
        patterns = _bin_patterns(patterns, factor)
        m, qy, qx = patterns.shape
        r_max = self.r_max * max(min(qy, qx) / 2 - 1, 1.0)
        dy, dx, radii = polar_grid(r_max, self.n_radial, self.n_angular)
        per_block = max(1, _SAMPLES_PER_BLOCK // dy.size)
        out = np.empty((m, self.dim), dtype=np.float32)
        for start in range(0, m, per_block):
            block = patterns[start : start + per_block]
            out[start : start + len(block)] = self._block_features(block, dy, dx, radii)
        return out

    def _block_features(self, patterns: np.ndarray, dy: np.ndarray, dx: np.ndarray,
                        radii: np.ndarray) -> np.ndarray:
        m, qy, qx = patterns.shape
        cy, cx, beam = _beam_centres(patterns)
        if not self.centre:
            cy = np.full(m, (qy - 1) / 2)
            cx = np.full(m, (qx - 1) / 2)
        inner = 1.5 * beam + 2.0  # the annulus beyond the direct beam starts here (px)
        outside = _beyond_beam((qy, qx), cy, cx, inner) if self.normalise == "scattered" else None
        polar = polar_maps(_log_scale(patterns, self.normalise, outside), cy, cx, dy, dx)  # (m, R, T)
        n_r, n_t = polar.shape[1:]
        annulus = _ring_weights(radii[None, :], inner[:, None])  # (m, R): 1 on the annulus
        radial = polar.mean(axis=2)
        if self.normalise == "scattered":
            # the profile beyond the direct beam only: radii inside the annulus take the
            # profile's value 1 px into it (the scattering just outside the beam, interpolated
            # between the two rings there, both on the annulus since rings are at most 1 px
            # apart), so bins change smoothly as the estimated beam size moves
            step = radii[1] - radii[0] if len(radii) > 1 else 1.0
            at = np.clip((inner + 1.0 - radii[0]) / step, 0.0, n_r - 1.0)
            below = np.minimum(at.astype(np.int64), n_r - 2) if n_r > 1 else np.zeros(m, dtype=np.int64)
            frac = (at - below)[:, None] if n_r > 1 else np.zeros((m, 1))
            lo = np.take_along_axis(radial, below[:, None], axis=1)
            hi = np.take_along_axis(radial, np.minimum(below + 1, n_r - 1)[:, None], axis=1)
            edge = lo + frac * (hi - lo)
            radial = annulus * radial + (1.0 - annulus) * edge
        radial = radial.reshape(m, self.n_radial, n_r // self.n_radial).mean(axis=2)
        # angles and spots are read on the annulus only: its rings' medians suffice (the
        # medians are the encoder's largest cost after the resampling)
        start = int(np.argmax(annulus.any(axis=0))) if annulus.any() else n_r
        rings = polar[:, start:]
        excess = rings - np.median(rings, axis=2, keepdims=True)
        annulus = annulus[:, start:]
        weights = annulus / np.maximum(annulus.sum(axis=1), 1e-6)[:, None]
        angular = np.einsum("mr,mrt->mt", weights, excess)
        angular = angular.reshape(m, self.n_angular, n_t // self.n_angular).mean(axis=2)
        # every excess is >= 0 (a ring's maximum is at least its median): 0 without an annulus;
        # a ring on the annulus's edge counts by its weight
        spottiness = (annulus * excess.max(axis=2, initial=0.0)).max(axis=1, initial=0.0)
        return np.column_stack([radial, angular, spottiness]).astype(np.float32)


# ---------------------------------------------------------------- diffraction-cnn


class DiffractionCNNEncoder(ConvChipEncoder):
    """A small 2D convnet over each diffraction pattern, averaged over the chip's positions.

    Preprocessing per pattern: binned by the largest integer factor that keeps
    at least ``size`` pixels per side, scaled to mean 1 per pixel and ``log1p``
    (as for ``diffraction-profiles``), resized to ``size`` x ``size``
    (antialiased bilinear, so any detector size works), and, when ``centre``, shifted
    (bilinear, sub-pixel) so the direct beam's centre of mass is at the middle.
    The network (:func:`~multimodal_seg.encoders.convnet.small_convnet`, kernels
    5, 3, 3, 3) pools to 4 x 4 positions, so the embedding keeps where in the
    pattern the intensity is: spacing and orientation.  The other options
    (``weights``, required; ``embedding_dim``; ``batch_size``, patterns per
    forward pass; ``device``; ``compile``; ``progress``), the weights and the errors are
    those of every convnet encoder (:class:`~multimodal_seg.encoders.convnet.ConvChipEncoder`).

    Parameters
    ----------
    size
        Edge length patterns are resized to; ``None`` keeps the detector size
        (the adaptive pooling handles any size, at a cost growing with it).
    centre
        Centre each pattern on its direct beam first.
    """

    name = "diffraction-cnn"
    kind = "diffraction"
    architecture = "diffraction-cnn 2D convnet"
    two_dimensional = True
    # with the preprocessing in torch, the speed benchmark's 4096 patterns on a 2-core AMD EPYC
    # (medians of 6 and 10, alternated in one process): 0.564-0.567 s in batches of 128 against
    # 0.603-0.616 s of 64 and 0.589 s of 256
    cpu_batch = 128

    def __init__(
        self,
        *,
        weights: str | Path | None = None,
        size: int | None = 64,
        embedding_dim: int = 64,
        centre: bool = True,
        batch_size: int | str = "auto",
        device: str = "auto",
        compile: bool = False,
        progress: bool = False,
    ) -> None:
        self.size = None if size is None else check_int(size, "size", minimum=8, example="64")
        self.centre = check_bool(centre, "centre")
        self._setup(weights=weights, embedding_dim=embedding_dim, batch_size=batch_size,
                    device=device, progress=progress, compile=compile)

    def _build_network(self) -> Any:
        return small_convnet(2, kernels=(5, 3, 3, 3), pooled=4, embedding_dim=self.embedding_dim)

    def architecture_options(self) -> dict[str, Any]:
        return {"size": self.size, "embedding_dim": self.embedding_dim, "centre": self.centre}

    def fingerprint(self) -> dict[str, Any]:
        # centring 2: beam centres summed in float32 in torch (they moved by about 1e-5 px)
        return {**super().fingerprint(), "centring": 2}

    def preprocessing(self) -> str:
        size = "kept at the detector size" if self.size is None else (
            f"binned and resized to {self.size} x {self.size} px")
        return (f"each pattern: {size}, scaled to mean 1 per pixel, log1p"
                f"{', shifted so the direct beam is at the middle' if self.centre else ''}")

    def prepare(self, items: np.ndarray) -> Any:
        import torch
        import torch.nn.functional as F

        if self.size is not None:  # integer binning first: cheaper centring, exact area sums
            items = _bin_patterns(items, max(1, min(items.shape[1:]) // self.size))
        m, qy, qx = items.shape
        # every step in torch, on every core or on the GPU: numpy's single-core passes (beam
        # centres, scaling, log) took half of this method's time on a 2-core CPU.
        # torch.tensor copies, so the caller's array is never modified
        counts = torch.tensor(items, dtype=torch.float32, device=self.device).clamp_(min=0.0)
        if self.centre:
            cy, cx = _beam_centres_torch(counts)
        mean = counts.mean(dim=(1, 2), keepdim=True)
        # each pattern to mean 1 per pixel (a blank one stays 0), then log1p
        x = counts.mul_(torch.where(mean > 0, 1.0 / mean, 0.0)).log1p_().unsqueeze(1)
        if self.size is not None and (qy, qx) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)
        if self.centre:
            # normalised coordinates (align_corners=False): pixel p -> (2 p + 1) / q - 1,
            # so the offset of the beam from the middle is 2 (c - (q - 1) / 2) / q
            x = _translated(x, torch.stack([2 * (cx - (qx - 1) / 2) / qx, 2 * (cy - (qy - 1) / 2) / qy], dim=1))
        return x.contiguous(memory_format=self.memory_format)


def _translated(x: Any, shift: Any) -> Any:
    """Each image of ``x`` ``(m, c, h, w)`` resampled at the identity grid plus its own
    ``shift`` ``(m, 2)`` (x then y, in ``grid_sample``'s normalised coordinates: 2 is the
    image's width or height), so what lay at ``+shift`` comes to the middle; bilinear, zeros
    beyond the edges.

    The grid is built channel-first, ``(m, 2, h, w)``, and handed over as a permuted view:
    adding an ``(m, 2)`` shift to ``(m, h, w, 2)`` broadcasts over a last axis of 2, which took
    as long as the sampling itself and twelve times as long as this (0.048 against 0.004 s per
    4096 grids of 64 x 64 on a 2-core CPU), and ``grid_sample`` reads the view as fast as a
    contiguous grid.  The coordinates are bitwise those of ``affine_grid`` (identity) plus
    the shift.
    """
    import torch
    import torch.nn.functional as F

    m, _, h, w = x.shape
    identity = torch.eye(2, 3, device=x.device)[None]
    xs = F.affine_grid(identity, [1, 1, 1, w], align_corners=False)[0, 0, :, 0]  # (w,)
    ys = F.affine_grid(identity, [1, 1, h, 1], align_corners=False)[0, :, 0, 1]  # (h,)
    gx = (xs[None, :] + shift[:, 0:1])[:, None, :].expand(m, h, w)
    gy = (ys[None, :] + shift[:, 1:2])[:, :, None].expand(m, h, w)
    grid = torch.stack([gx, gy], dim=1).permute(0, 2, 3, 1)  # (m, h, w, 2), a view
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
