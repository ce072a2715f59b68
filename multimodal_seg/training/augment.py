"""Augmentations that respect the physics of each kind of data: two views of one item.

Self-supervised training teaches the encoder to give two views the same
embedding, so the views decide what it learns to ignore.  The two views are not
copies of one item: they are an item and its neighbour (the chip moved by up to a
quarter of its edge, or the scan position next to it; :mod:`multimodal_seg.training.data`),
which is the same material seen with its own, independent shot noise.  Views of
one item would share their noise, and the network could tell items apart by it.
Each augmentation then mimics something that changes between acquisitions of the
same material, never what tells materials apart:

Images (chips with intensities in [0, 1], :class:`ImageAugment`)
    flips and 90-degree rotations (a micrograph has no preferred handedness or
    direction), a small zoom (magnification calibration), Poisson noise at a
    random dose (shot noise), contrast and
    brightness jitter (detector gain and offset), a slow linear intensity gradient
    (thickness ramps, charging, uneven illumination).  Not blur or large intensity
    changes: grey level (Z contrast) and fine texture are signal.
Spectra (raw counts, :class:`SpectrumAugment`)
    a small sub-channel energy shift (energy drift, calibration), a change of the
    background's log-slope across the window (thickness), and Poisson resampling
    of the counts scaled by a random dose factor (shot noise at lower dose or
    thinner specimen).  Not edge onsets or near-edge shapes: chemistry is signal.
Diffraction patterns (raw counts, :class:`DiffractionAugment`)
    a small rotation (scan rotation and camera calibration), a small shift of the
    pattern (descan, beam centring), and Poisson resampling at a random dose.
    Rotations stay small by default: a grain's orientation is signal.

Every augmentation is a batched torch operation on the CPU (run in the data
loader), drawn from a ``torch.Generator`` so the same seed gives the same views.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from .config import DiffractionAugment, ImageAugment, SpectrumAugment


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    import torch

    return low + (high - low) * torch.rand(n, generator=gen)


def _log_uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return _uniform(n, math.log(low), math.log(high), gen).exp()


def _affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
            padding: str) -> torch.Tensor:
    """Rotate by ``angle`` (radians), zoom by ``scale`` and shift by ``shift`` (fractions of the
    half-width) each image of ``x`` ``(b, 1, h, w)`` about its middle, bilinearly."""
    import torch
    import torch.nn.functional as F

    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 1]], dim=1),
                         torch.stack([sin, cos, shift[:, 0]], dim=1)], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _poisson(rate: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    import torch

    return torch.poisson(rate.clamp_min(0.0), generator=gen)


def augment_images(chips: torch.Tensor, options: ImageAugment, gen: torch.Generator) -> torch.Tensor:
    """One random view of each chip ``(b, h, w)`` (intensities in [0, 1]) -> ``(b, h, w)`` in [0, 1]."""
    import torch

    b, h, w = chips.shape
    x = chips.unsqueeze(1)
    if options.flips:
        flip_y, flip_x = torch.rand(b, generator=gen) < 0.5, torch.rand(b, generator=gen) < 0.5
        x = torch.where(flip_y[:, None, None, None], x.flip(-2), x)
        x = torch.where(flip_x[:, None, None, None], x.flip(-1), x)
    if options.rot90 and h == w:
        turns = torch.randint(0, 4, (b,), generator=gen)
        rotated = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
        x = rotated[turns, torch.arange(b)]
    if options.max_scale > 1:
        scale = _log_uniform(b, 1 / options.max_scale, options.max_scale, gen)
        x = _affine(x, torch.zeros(b), scale, torch.zeros(b, 2), padding="reflection")
    x = x.squeeze(1)
    contrast = _log_uniform(b, 1 / options.contrast, options.contrast, gen)[:, None, None]
    offset = _uniform(b, -options.brightness, options.brightness, gen)[:, None, None]
    mean = x.mean(dim=(1, 2), keepdim=True)
    x = (x - mean) * contrast + mean + offset
    if options.gradient > 0:  # a linear ramp in a random direction, peak-to-peak up to `gradient`
        angle = _uniform(b, 0, 2 * math.pi, gen)
        amplitude = _uniform(b, -options.gradient, options.gradient, gen)
        yy = torch.linspace(-0.5, 0.5, h)[None, :, None]
        xx = torch.linspace(-0.5, 0.5, w)[None, None, :]
        ramp = torch.sin(angle)[:, None, None] * yy + torch.cos(angle)[:, None, None] * xx
        x = x + amplitude[:, None, None] * ramp / math.sqrt(2)
    dose = _log_uniform(b, *options.dose, gen)[:, None, None]
    x = _poisson(x.clamp(0.0, 1.0) * dose, gen) / dose
    return x.clamp(0.0, 1.0)


def augment_spectra(spectra: torch.Tensor, options: SpectrumAugment, gen: torch.Generator) -> torch.Tensor:
    """One random view of each spectrum ``(b, channels)`` (raw counts) -> ``(b, channels)`` counts."""
    import torch

    b, c = spectra.shape
    x = spectra.clamp_min(0.0)
    if options.max_shift > 0:  # sample channel i at i - shift, linearly; edges repeat
        shift = _uniform(b, -options.max_shift, options.max_shift, gen)[:, None]
        pos = (torch.arange(c, dtype=x.dtype)[None, :] - shift).clamp(0, c - 1)
        low = pos.floor().long().clamp(max=c - 2) if c > 1 else pos.floor().long()
        frac = pos - low
        high = (low + 1).clamp(max=c - 1)
        x = x.gather(1, low) * (1 - frac) + x.gather(1, high) * frac
    if options.tilt > 0:
        tilt = _uniform(b, -options.tilt, options.tilt, gen)[:, None]
        u = torch.linspace(0.0, 1.0, c)[None, :]
        x = x * torch.exp(-tilt * (u - 0.5))
    dose = _log_uniform(b, *options.dose, gen)[:, None]
    return _poisson(x * dose, gen)


def augment_patterns(patterns: torch.Tensor, options: DiffractionAugment, gen: torch.Generator) -> torch.Tensor:
    """One random view of each pattern ``(b, qy, qx)`` (raw counts) -> ``(b, qy, qx)`` counts."""
    import torch

    b, qy, qx = patterns.shape
    x = patterns.clamp_min(0.0)
    if options.max_rotation > 0 or options.max_shift > 0:
        angle = _uniform(b, -1.0, 1.0, gen) * math.radians(options.max_rotation)
        # a shift of s px is 2 s / q in the normalised coordinates of affine_grid
        shift = _uniform(2 * b, -options.max_shift, options.max_shift, gen).reshape(b, 2)
        shift = shift * torch.tensor([2.0 / qy, 2.0 / qx])
        x = _affine(x.unsqueeze(1), angle, torch.ones(b), shift, padding="zeros").squeeze(1)
    dose = _log_uniform(b, *options.dose, gen)[:, None, None]
    return _poisson(x * dose, gen)


#: The augmentation of each kind, and the config section it takes.
AUGMENTATIONS = {"image": augment_images, "spectrum": augment_spectra, "diffraction": augment_patterns}


def augment_pair(first: np.ndarray, second: np.ndarray, kind: str, options: Any,
                 gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random view of each item of ``first`` and of its partner in ``second`` (float32 numpy).

    Parameters
    ----------
    first, second
        ``(b, *item)`` items and their partners (neighbouring chips or scan positions, see
        :mod:`multimodal_seg.training.data`): image chips ``(b, h, w)`` in [0, 1], spectra
        ``(b, channels)`` or patterns ``(b, qy, qx)`` in raw counts.
    kind
        ``"image"``, ``"spectrum"`` or ``"diffraction"``.
    options
        That kind's section of :class:`~multimodal_seg.training.config.AugmentConfig`.
    gen
        The random generator (seeded by the caller).
    """
    import torch

    augment = AUGMENTATIONS[kind]
    views = (augment(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), options, gen)
             for x in (first, second))
    return tuple(v.numpy() for v in views)  # type: ignore[return-value]
