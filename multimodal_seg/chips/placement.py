"""Boundary positions placed by their own signals: the last step of painting a partition.

A partition painted from chips places its boundaries to within a chip's reach, even after
refinement: a chip straddling a boundary mixes both sides.  A spectrum image or a 4D-STEM
scan measures every scan position on its own, so near a boundary each position can be
asked directly which side its own spectrum (or pattern) belongs to; an image with a crystal
lattice can be asked how strong each of its lattice reflections is around each pixel, over
one lattice period (:func:`multimodal_seg.chips.texture.lattice_features`).  Whatever the
features, a single position is noisy, so its signal does not simply overrule the painted
map; the two are weighed:

* **the signal's evidence**: every community is modelled by its positions away from any
  boundary (a community too thin to have two such positions, a strip a few positions wide,
  by all its positions), as a Gaussian with the community's mean and a variance per feature
  pooled over the communities (diagonal: features with no spread are left out).  A position's
  evidence for a community is its log-likelihood under that model, summed over the
  modalities that take part (independent measurements of one position);
* **the map's evidence**: the painted label is right with probability ``1 - m``, the
  other communities within ``radius`` positions share ``m``.  ``m``, the map's error rate
  near boundaries, is not a knob: it is estimated from the data by expectation-maximisation
  (the mean posterior that a boundary position belongs elsewhere, iterated to its fixed
  point from ``m = 0.5``).

Each position within ``radius`` of a boundary then takes the community with the highest
posterior among those within ``radius`` of it, if its signal prefers that community to
the painted one.  A clean signal (a high-dose EELS scan)
places the boundary where its positions change; a noisy one moves only positions whose
signal is clear, since its likelihoods are flat; and a modality says nothing about
communities its own partition does not tell apart (``groups``: their means are pooled, so
its likelihoods there are equal and the map decides).  A community of a single position
is not modelled: it stays, and no position moves into it.  Positions deeper than ``radius``
inside a community never move, so a boundary moves at most ``radius`` positions.

Measured on the phantom families (docs/design.md, "Boundary positions placed by their
own signals").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Version of the rules, part of the place stage's fingerprint: studies placed under older
#: rules are placed again.  2: communities without two interior positions are modelled by
#: all their positions (1: not modelled).  3: images with a lattice take part (their lattice
#: amplitudes), models on at most ``MODEL_POSITIONS`` positions, large grids sampled.  4: the
#: lattice filters centred on each reflection's own frequency (images filtered in tiles).  5: a
#: study stores the placed positions' labels only (every ``step``-th position of a large grid),
#: not the whole painted map.  6: a refined partition placed by every modality it was made from,
#: none an image, may move over the coarse grid's stride (the pipeline's ``placement_radius``).
#: 7: an image's lattice amplitudes summed at an evenly spaced grid by an inverse FFT, its tiles
#: padded to a length the grid's step divides (where that changed the padding, amplitudes near
#: the far edges moved by up to 0.3 % of their range).
RULES = 7
#: Each community (or group) is modelled on an even sample of at most this many of its positions.
MODEL_POSITIONS = 10_000
#: Expectation-maximisation of the map's error rate: stop when it moves less than this.
TOLERANCE = 1e-6
#: and after at most this many rounds.
MAX_ROUNDS = 200


@dataclass(frozen=True)
class Placement:
    """What :func:`place_boundary_positions` did.

    Attributes
    ----------
    labels
        ``(rows, cols)`` int32: the placed map.
    moved
        Positions whose community changed.
    band
        Positions within ``radius`` of a boundary (the ones that could move).
    map_error
        The estimated probability that the painted map is wrong at a boundary position (``m``);
        ``None`` where no position could move (nothing to estimate it from).
    """

    labels: np.ndarray
    moved: int
    band: int
    map_error: float | None

    def record(self) -> dict:
        """JSON-able summary for provenance."""
        return {"moved": self.moved, "band": self.band,
                "map_error": None if self.map_error is None else round(self.map_error, 6)}


def within_reach(labels: np.ndarray, radius: int) -> np.ndarray:
    """Boolean ``labels.shape + (n_communities,)``: whether community ``c`` (labels ``>= 0``)
    lies within ``radius`` positions (a square window) of each position."""
    labels = np.asarray(labels)
    n = int(labels.max()) + 1 if (labels >= 0).any() else 0
    near = np.zeros(labels.shape + (n,), bool)
    for value in range(n):  # a square window's maximum is separable: cheap at any radius
        near[..., value] = ndimage.maximum_filter(labels == value, size=2 * radius + 1, mode="constant")
    return near


def boundary_band(labels: np.ndarray, radius: int) -> np.ndarray:
    """Boolean ``labels.shape``: labelled positions with another label (``>= 0``) within
    ``radius`` positions (a square window)."""
    labels = np.asarray(labels)
    return _band(labels, within_reach(labels, radius))


def _band(labels: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Labelled positions with more than one community within reach (``near``: :func:`within_reach`)."""
    return (labels >= 0) & (near.sum(axis=-1) > 1)


def _log_likelihoods(features: np.ndarray, labels: np.ndarray, basis: np.ndarray,
                     modelled: np.ndarray, groups: np.ndarray | None, at: np.ndarray) -> np.ndarray:
    """``(len(at), n_communities)`` Gaussian log-likelihoods of the positions ``at`` (flat
    indices), up to a constant per position, under models fitted on the positions ``basis``;
    ``-inf`` for communities not modelled."""
    n = len(modelled)
    flat = features.reshape(-1, features.shape[-1])
    lab, inner = labels.ravel(), np.flatnonzero(basis.ravel())
    groups = np.arange(n) if groups is None else np.asarray(groups)
    means = np.zeros((n, flat.shape[1]))
    residuals = []
    for group in np.unique(groups[modelled]):
        members = np.flatnonzero((groups == group) & modelled)
        where = inner[np.isin(lab[inner], members)]
        # an even sample of at most MODEL_POSITIONS: a mean to 1 % of the spread, whatever the map's size
        rows = flat[where[:: max(1, len(where) // MODEL_POSITIONS)]].astype(np.float64)
        means[members] = rows.mean(axis=0)
        residuals.append(rows - means[members[0]])
    variance = np.concatenate(residuals).var(axis=0)
    keep = variance > 1e-12 * max(float(variance.max(initial=0.0)), np.finfo(float).tiny)
    scale = np.sqrt(variance[keep])
    scaled, centres = flat[at][:, keep].astype(np.float64) / scale, means[:, keep] / scale
    # -|x - mu|^2 / 2 = x.mu - |mu|^2 / 2 - |x|^2 / 2; the last term is the same for every community
    out = scaled @ centres.T - 0.5 * (centres ** 2).sum(axis=1)
    out[:, ~modelled] = -np.inf
    return out


def place_boundary_positions(labels: np.ndarray, features: Mapping[str, np.ndarray], *,
                             groups: Mapping[str, np.ndarray] | None = None,
                             radius: int = 1) -> Placement:
    """Move the positions near boundaries of a painted map to the community their signals
    and the map, weighed together, make most probable (module docstring).

    Parameters
    ----------
    labels
        ``(rows, cols)`` int: the painted map, one label per scan position (``-1``: none).
    features
        ``{modality: (rows, cols, d)}``: each taking modality's features of every position
        (one position per chip), on the same positions as ``labels``.
    groups
        ``{modality: (n_communities,)}``: which communities the modality tells apart
        (:func:`multimodal_seg.graphs.labels.community_groups`); communities of one group share
        a mean.  Missing: all apart.
    radius
        Positions within this many of another community (square window) may move, to a
        community within the same distance.

    Returns
    -------
    :class:`Placement`.
    """
    labels = np.asarray(labels)
    if radius < 1 or not features:
        return Placement(labels.astype(np.int32), 0, 0, None)
    for name, values in features.items():
        if values.shape[:2] != labels.shape:
            raise ValueError(f"features of {name!r} have shape {values.shape}, expected {labels.shape} + (d,)")
    n = int(labels.max()) + 1
    near = within_reach(labels, radius)
    band = _band(labels, near)
    interior = ~band & (labels >= 0)
    # a community too thin for two interior positions is modelled by all its positions: a
    # boundary shifted onto a strip two positions wide is otherwise never put back (measured
    # on the Phenom Al/Cu map 3, docs/design.md)
    thin = np.bincount(labels[interior], minlength=n) < 2
    basis = interior | (thin[np.maximum(labels, 0)] & (labels >= 0))
    modelled = np.bincount(labels[basis], minlength=n) >= 2
    positions = np.argwhere(band)
    if not len(positions) or modelled.sum() < 2:
        return Placement(labels.astype(np.int32), 0, int(band.sum()), None)
    at = np.ravel_multi_index(positions.T, labels.shape)
    evidence = sum(_log_likelihoods(values, labels, basis, modelled, (groups or {}).get(name), at)
                   for name, values in features.items())
    # the communities within `radius` of each band position: its candidates
    candidate = near[positions[:, 0], positions[:, 1]] & modelled
    current = labels[positions[:, 0], positions[:, 1]]
    # only positions of a modelled community with another modelled one near them can move
    movable = modelled[current] & (candidate.sum(axis=1) - candidate[np.arange(len(positions)), current] > 0)
    positions, current, candidate = positions[movable], current[movable], candidate[movable]
    evidence = np.where(candidate, evidence[movable], -np.inf)
    index = np.arange(len(positions))
    own = np.zeros(candidate.shape, bool)
    own[index, current] = True
    others = candidate.sum(axis=1) - 1
    error = None
    best = current
    if len(positions):
        # The map's prior: its own label 1 - m, the other candidates m between them.  A
        # position's posterior of its own label is then 1 / (1 + ratio m / (1 - m)), with
        # ratio the mean likelihood of its other candidates over its own; each round of the
        # expectation-maximisation needs only that (one number per position).
        n_others = np.maximum(others, 1)
        other = np.where(candidate & ~own, evidence, -np.inf)
        top = other.max(axis=1)  # finite: a movable position has another candidate
        log_ratio = top - evidence[index, current] + np.log(np.exp(other - top[:, None]).sum(axis=1) / n_others)
        with np.errstate(over="ignore"):  # an infinite ratio (own label hopeless) gives posterior 0
            ratio = np.exp(log_ratio)
        error = 0.5
        for _ in range(MAX_ROUNDS):
            share = np.clip(error, np.finfo(float).eps, 1.0 - np.finfo(float).eps)
            new_error = float(1.0 - np.mean(1.0 / (1.0 + ratio * (share / (1.0 - share)))))
            converged = abs(new_error - error) < TOLERANCE
            error = new_error
            if converged:
                break
        # the most probable candidate under the prior of the last round
        prior = np.where(own, 1.0 - share, share / n_others[:, None])
        best = np.where(candidate, evidence + np.log(prior), -np.inf).argmax(axis=1)
        # a position moves only where its signal prefers the new community: where the map's error
        # rate comes out at one half or more, the prior alone would otherwise move positions the
        # signal says nothing about
        best = np.where(evidence[index, best] > evidence[index, current], best, current)
    placed = labels.astype(np.int32).copy()
    placed[positions[:, 0], positions[:, 1]] = best
    return Placement(placed, int((best != current).sum()), int(band.sum()), error)
