"""Diffraction encoders on synthetic 4D-STEM patterns.

Patterns are physically shaped: a direct-beam disc (radius 3 px, soft edge), a
diffuse background falling off with scattering angle, and either Bragg spots of
a square lattice (Gaussian spots, intensity falling with |g| like a
Debye-Waller factor) or the broad ring of an amorphous material; Poisson noise
at a dose that varies +-20 % between positions, and sub-pixel beam jitter.
Phases: square lattice at 0 deg, the same lattice rotated by 30 deg (another
grain of the same phase), a lattice of larger spacing at 0 deg, and amorphous.

No expected embedding value is hard-coded: the tests check relations the
physics implies (orientation moves only the angular profile, and by the
rotation; spacing moves the radial profile; spots vs ring; centring undoes a
beam shift; invariance to dose).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from multimodal_seg.encoders import available_encoders, get_encoder
from multimodal_seg.encoders.diffraction import (
    DiffractionCNNEncoder,
    DiffractionProfilesEncoder,
    _beam_centres,
    _beam_centres_torch,
    _translated,
)
from multimodal_seg.errors import InputError, ParameterError, WeightsError

Q = 64  # detector pixels per side
SPACING = 10.0  # px between Bragg spots of the reference lattice
BEAM_RADIUS = 3.0


def pattern(rng: np.random.Generator | None, *, kind: str, q: int = Q, angle: float = 0.0,
            spacing: float = SPACING, shift: tuple[float, float] = (0.0, 0.0),
            dose: float = 1.0) -> np.ndarray:
    """One ``(q, q)`` pattern; ``rng=None`` gives the noise-free expectation.

    Lengths are given for a 64 px detector and scaled by ``q / 64`` (the same
    diffraction recorded with another pixel count or binning).
    """
    s = q / Q
    yy, xx = np.mgrid[0:q, 0:q].astype(float)
    cy, cx = (q - 1) / 2 + shift[0] * s, (q - 1) / 2 + shift[1] * s
    r = np.hypot(yy - cy, xx - cx)
    image = 2000.0 / (1.0 + np.exp((r - BEAM_RADIUS * s) / (0.3 * s)))  # direct beam
    image += 3.0 * np.exp(-r / (10.0 * s)) + 0.5  # diffuse background
    if kind == "crystal":
        a = np.deg2rad(angle)
        for h in range(-4, 5):
            for k in range(-4, 5):
                gy = spacing * (h * np.sin(a) + k * np.cos(a))
                gx = spacing * (h * np.cos(a) - k * np.sin(a))
                g = np.hypot(gy, gx)
                if g == 0 or g > 0.42 * Q:
                    continue
                amplitude = 150.0 * np.exp(-((g / 18.0) ** 2))  # Debye-Waller-like falloff
                spot = (yy - cy - gy * s) ** 2 + (xx - cx - gx * s) ** 2
                image += amplitude * np.exp(-spot / (2.0 * s**2))
    elif kind == "amorphous":
        image += 20.0 * np.exp(-((r - 12.0 * s) ** 2) / (2 * (2.0 * s) ** 2))
    else:
        raise ValueError(kind)
    image *= dose
    return image.astype(np.float32) if rng is None else rng.poisson(image).astype(np.float32)


def chips(n: int, rng: np.random.Generator, *, size: int = 2, q: int = Q,
          shift: tuple[float, float] = (0.0, 0.0), **kind) -> np.ndarray:
    """``(n, size, size, q, q)`` chips with +-20 % dose and +-0.3 px beam jitter (64 px scale)."""
    out = np.empty((n, size, size, q, q), np.float32)
    for index in np.ndindex(n, size, size):
        jitter = rng.uniform(-0.3, 0.3, 2)
        out[index] = pattern(rng, q=q, shift=(shift[0] + jitter[0], shift[1] + jitter[1]),
                             dose=rng.uniform(0.8, 1.2), **kind)
    return out


PHASES = {
    "grain0": {"kind": "crystal", "angle": 0.0},
    "grain30": {"kind": "crystal", "angle": 30.0},
    "wide": {"kind": "crystal", "spacing": 14.0},
    "amorphous": {"kind": "amorphous"},
}


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    out = {name: chips(6, rng, **kind) for name, kind in PHASES.items()}
    out["grain0-shifted"] = chips(6, rng, shift=(1.5, -1.0), **PHASES["grain0"])
    return out


@pytest.fixture(scope="module")
def encoder() -> DiffractionProfilesEncoder:
    return DiffractionProfilesEncoder()


@pytest.fixture(scope="module")
def embedded(data, encoder) -> dict[str, np.ndarray]:
    return {name: encoder.encode(c) for name, c in data.items()}


def _parts(enc: DiffractionProfilesEncoder, emb: np.ndarray) -> tuple[np.ndarray, ...]:
    """Split embeddings into radial profile, angular profile and spottiness."""
    r, a = enc.n_radial, enc.n_angular
    return emb[..., :r], emb[..., r : r + a], emb[..., r + a]


def _centroid_distance(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.linalg.norm(x.mean(axis=0) - y.mean(axis=0)))


def _spread(x: np.ndarray) -> float:
    """Mean distance of a phase's chips from their centroid."""
    return float(np.linalg.norm(x - x.mean(axis=0), axis=1).mean())


# ---------------------------------------------------------------- beam centring


def test_beam_centres_recover_subpixel_shifts():
    rng = np.random.default_rng(0)
    shifts = [(0.0, 0.0), (0.5, -0.5), (1.3, 0.7), (-2.0, 1.6), (2.4, -2.2)]
    for kind in ("crystal", "amorphous"):
        stack = np.stack([pattern(rng, kind=kind, shift=s) for s in shifts])
        cy, cx, radius = _beam_centres(stack)
        np.testing.assert_allclose(cy, [(Q - 1) / 2 + s[0] for s in shifts], atol=0.15)
        np.testing.assert_allclose(cx, [(Q - 1) / 2 + s[1] for s in shifts], atol=0.15)
        np.testing.assert_allclose(radius, BEAM_RADIUS, atol=0.75)


def test_convnet_beam_centres_in_torch_are_the_numpy_ones():
    # diffraction-cnn finds the beam in torch (float32 sums, on its device); the profiles
    # encoder in numpy (float64 sums): the same centres to a small fraction of a pixel,
    # on noisy patterns, a blank one (detector centre) and one with negative counts clipped
    import torch

    rng = np.random.default_rng(3)
    stack = np.stack([pattern(rng, kind=kind, shift=shift, dose=dose)
                      for kind in ("crystal", "amorphous")
                      for shift, dose in (((0.4, -1.3), 1.0), ((-2.2, 0.6), 0.2))]
                     + [np.zeros((Q, Q)), pattern(rng, kind="crystal", shift=(1.0, 1.0)) - 0.5])
    stack = stack.astype(np.float32)
    cy, cx, _ = _beam_centres(stack)
    ty, tx = _beam_centres_torch(torch.from_numpy(np.maximum(stack, 0.0)))
    assert ty.dtype == torch.float32
    np.testing.assert_allclose(ty.numpy(), cy, atol=1e-4)
    np.testing.assert_allclose(tx.numpy(), cx, atol=1e-4)
    assert (cy[4], cx[4]) == ((Q - 1) / 2, (Q - 1) / 2)


@pytest.mark.parametrize("kind", ["grain0", "amorphous"])
def test_profiles_move_smoothly_as_the_beam_moves_by_a_fraction_of_a_pixel(kind):
    # Descan moves every pattern by a fraction of a pixel.  A beam radius counted in whole
    # pixels above half the maximum jumped as the beam crossed pixel edges, and one region
    # split into two populations of patterns (one per radius).  Over a 1 px sweep in 1/40 px
    # steps, no step may move the features by more than a small part of what the whole
    # sweep does (a hard cut made single steps of 0.30-0.37, more than the whole sweep).
    enc = DiffractionProfilesEncoder()
    shifts = np.linspace(0.0, 1.0, 41)
    features = np.stack([enc.encode(pattern(None, **PHASES[kind], shift=(0.3 * s, s))[None, None, None])[0]
                         for s in shifts])
    steps = np.abs(np.diff(features, axis=0)).max(axis=1)
    assert steps.max() < 0.05
    assert steps.max() < 0.3 * np.abs(features - features[0]).max()


def test_polar_sampler_matches_scipy_bilinear_with_extended_edges():
    # the compiled sampler against scipy's map_coordinates (order 1, edge pixels extended),
    # with centres near every edge so that the grid runs off the detector
    from scipy import ndimage

    from multimodal_seg.encoders.polar import polar_grid, polar_maps

    rng = np.random.default_rng(1)
    images = rng.gamma(2.0, size=(6, 40, 52)).astype(np.float32)
    cy = np.array([19.5, 0.3, 38.9, 20.25, 5.0, 33.7])
    cx = np.array([25.5, 26.0, 25.0, 0.1, 51.4, 47.05])
    dy, dx, radii = polar_grid(17.5, 4, 6)
    assert dy.shape == (len(radii), 2, dy.shape[2]) and dy.shape[2] % 6 == 0
    expected = np.stack([
        ndimage.map_coordinates(image, (y + dy, x + dx), order=1, mode="nearest").mean(axis=1)
        for image, y, x in zip(images, cy, cx)])
    got = polar_maps(images, cy, cx, dy, dx)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- diffraction-profiles


def test_profiles_dim_dtype_kind(encoder, embedded):
    assert encoder.kind == "diffraction" and encoder.name == "diffraction-profiles"
    assert encoder.dim == 16 + 18 + 1
    for emb in embedded.values():
        assert emb.shape == (6, encoder.dim) and emb.dtype == np.float32
        assert np.isfinite(emb).all()
    small = DiffractionProfilesEncoder(n_radial=4, n_angular=6)
    assert small.dim == 11 and small.encode(np.zeros((2, 1, 1, 16, 16), np.float32)).shape == (2, 11)


def test_every_chip_is_nearest_to_its_own_phase(embedded):
    names = list(PHASES)
    emb = np.concatenate([embedded[n] for n in names])
    labels = np.repeat(np.arange(len(names)), 6)
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(axis=1)] == labels).all()


def test_rotated_grain_differs_only_in_the_angular_profile(encoder, embedded):
    rad0, ang0, _ = _parts(encoder, embedded["grain0"])
    rad30, ang30, _ = _parts(encoder, embedded["grain30"])
    # same phase: the rotation-invariant radial profile agrees within the noise ...
    assert _centroid_distance(rad0, rad30) < 2 * max(_spread(rad0), _spread(rad30))
    # ... the angular profile separates the grains far beyond the noise
    assert _centroid_distance(ang0, ang30) > 10 * max(_spread(ang0), _spread(ang30))
    # and 30 deg is 3 bins of 10 deg: rotating the profile of one grain gives the other's
    step = round(30 / (180 / encoder.n_angular))
    mean0, mean30 = ang0.mean(axis=0), ang30.mean(axis=0)
    assert np.corrcoef(np.roll(mean0, step), mean30)[0, 1] > 0.9
    assert np.corrcoef(mean0, mean30)[0, 1] < 0.5


def test_lattice_spacing_moves_the_radial_profile(encoder, embedded):
    rad0, _, _ = _parts(encoder, embedded["grain0"])
    wide, _, _ = _parts(encoder, embedded["wide"])
    assert _centroid_distance(rad0, wide) > 5 * max(_spread(rad0), _spread(wide))


def test_amorphous_is_not_spotty_and_has_no_orientation(encoder, embedded):
    _, ang_am, spots_am = _parts(encoder, embedded["amorphous"])
    for crystal in ("grain0", "grain30", "wide"):
        _, ang, spots = _parts(encoder, embedded[crystal])
        assert spots.min() > 3 * spots_am.max()
        assert np.ptp(ang.mean(axis=0)) > 5 * np.ptp(ang_am.mean(axis=0))


def test_small_beam_shift_barely_moves_the_embedding(data, encoder, embedded):
    names = list(PHASES)
    centroids = {n: embedded[n].mean(axis=0) for n in names}
    between = min(np.linalg.norm(centroids[a] - centroids[b])
                  for i, a in enumerate(names) for b in names[i + 1 :])
    moved = _centroid_distance(embedded["grain0"], embedded["grain0-shifted"])
    assert moved < 0.15 * between
    # centring is what makes it small: without it the same shift moves the embedding far more
    fixed = DiffractionProfilesEncoder(centre=False)
    moved_fixed = _centroid_distance(fixed.encode(data["grain0"]),
                                     fixed.encode(data["grain0-shifted"]))
    assert moved_fixed > 5 * moved


def test_profiles_are_dose_invariant(data, encoder, embedded):
    np.testing.assert_allclose(encoder.encode(4.0 * data["grain30"]), embedded["grain30"],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["grain0", "amorphous"])
def test_profiles_ignore_thickness_beyond_the_direct_beam(kind):
    # Single scattering: what the specimen scatters (spots, rings, background) grows with its
    # thickness t and is taken out of the direct beam: beam (1 - 0.3 t), scattered t.
    beam_only = pattern(None, kind="amorphous") - pattern(None, kind="amorphous", dose=0.0)
    r = np.hypot(*np.mgrid[0:Q, 0:Q] - (Q - 1) / 2)
    beam = np.where(r <= BEAM_RADIUS + 2, beam_only, 0.0)
    scattered = pattern(None, **PHASES[kind]) - beam

    def at(t: float) -> np.ndarray:
        return ((1 - 0.3 * t) * beam + t * scattered).astype(np.float32)[None, None, None]

    def change(enc: DiffractionProfilesEncoder) -> float:
        thin, thick = enc.encode(at(0.8)), enc.encode(at(1.2))
        return float(np.abs(thin - thick).max())

    scattered_norm = DiffractionProfilesEncoder()  # normalise="scattered"
    assert scattered_norm.normalise == "scattered"
    # Scaled by the total counts, every scattered radius moves with the thickness; scaled by
    # the scattered counts, only through the estimated beam size (a pixel more or less).
    total = change(DiffractionProfilesEncoder(normalise="total"))
    assert total > 0.1 and change(scattered_norm) < min(0.02, 0.1 * total)
    # the grains still differ by orientation
    e0, e30 = (scattered_norm.encode(pattern(None, **PHASES[k])[None, None, None]) for k in ("grain0", "grain30"))
    assert np.abs(e0 - e30).max() > 0.1


def test_profiles_pool_over_positions(data, encoder, embedded):
    singles = data["wide"].reshape(-1, 1, 1, Q, Q)
    per_position = encoder.encode(singles).reshape(6, 4, -1)
    np.testing.assert_allclose(embedded["wide"], per_position.mean(axis=1), rtol=1e-5, atol=1e-6)
    flat = data["wide"].reshape(-1, Q, Q)
    np.testing.assert_allclose(encoder.pattern_features(flat), per_position.reshape(24, -1))


def test_profiles_deterministic_and_any_detector_size(encoder):
    rng = np.random.default_rng(5)
    for q in (40, 48, 96):  # the same diffraction recorded with other pixel counts
        grain = chips(2, rng, q=q, size=1, kind="crystal")
        rotated = chips(2, rng, q=q, size=1, kind="crystal", angle=30.0)
        e0, e30 = encoder.encode(grain), encoder.encode(rotated)
        assert e0.shape == (2, encoder.dim) and np.isfinite(e0).all()
        np.testing.assert_array_equal(e0, encoder.encode(grain.copy()))
        assert np.linalg.norm(e0[0] - e30[0]) > 3 * np.linalg.norm(e0[0] - e0[1])
    rect = np.stack([pattern(rng, kind="crystal")[:, 8:56]])[:, None, None]  # 64 x 48
    assert encoder.encode(rect).shape == (1, encoder.dim)


def test_large_detectors_are_binned_to_the_same_features(encoder):
    # 192 px is binned by 2 (max_size=128): the same diffraction as on 96 px
    kinds = [PHASES["grain0"], PHASES["grain30"], PHASES["amorphous"]]
    large = np.stack([pattern(None, q=192, **k) for k in kinds])[:, None, None]
    fine = encoder.encode(large)
    coarse = encoder.encode(np.stack([pattern(None, q=96, **k) for k in kinds])[:, None, None])
    between = min(np.linalg.norm(coarse[i] - coarse[j]) for i in range(3) for j in range(i))
    assert np.linalg.norm(fine - coarse, axis=1).max() < 0.2 * between
    # not binning changes little more than the sharper disc edge and spot peaks
    unbinned = DiffractionProfilesEncoder(max_size=256).encode(large)
    assert np.linalg.norm(unbinned - fine, axis=1).max() < 0.35 * between


def test_profiles_blank_and_integer_patterns(encoder):
    blank = np.zeros((1, 1, 2, Q, Q), np.int32)
    blank[0, 0, 1] = 7
    emb = encoder.encode(blank)
    assert np.isfinite(emb).all()
    assert encoder.encode(np.zeros((0, 2, 2, Q, Q), np.float32)).shape == (0, encoder.dim)


@pytest.mark.parametrize(
    "options",
    [{"n_radial": 0}, {"n_angular": 1.5}, {"centre": "yes"}, {"normalise": "max"},
     {"r_max": 0.0}, {"r_max": 1.5}, {"r_max": True}, {"max_size": 8}],
    ids=str,
)
def test_profiles_bad_options(options):
    with pytest.raises(ParameterError):
        DiffractionProfilesEncoder(**options)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 2, Q, Q), np.float32), np.full((1, 1, 1, 8, 8), np.inf, np.float32)],
    ids=["4d", "inf"],
)
def test_profiles_bad_chips(encoder, bad):
    with pytest.raises(InputError):
        encoder.encode(bad)


def test_profiles_fingerprint():
    fp = DiffractionProfilesEncoder(n_angular=36, centre=False).fingerprint()
    json.dumps(fp)
    assert fp["name"] == "diffraction-profiles" and fp["n_angular"] == 36
    assert fp["centre"] is False and fp != DiffractionProfilesEncoder().fingerprint()


# ---------------------------------------------------------------- diffraction-cnn


# weights, seeding, strict loading, pooling and dose invariance, shared with the other
# convnet encoder: tests/test_convnet_encoders.py


def _cnn(**options) -> DiffractionCNNEncoder:
    return DiffractionCNNEncoder(**{"weights": "random", "device": "cpu", **options})


@pytest.mark.parametrize("q", [40, 64, 100, 200])
@pytest.mark.parametrize("size", [64, None])
def test_cnn_any_detector_size(q, size):
    rng = np.random.default_rng(q)
    stack = np.concatenate([chips(1, rng, q=q, size=1, kind="crystal"),
                            chips(1, rng, q=q, size=1, kind="amorphous")])
    emb = _cnn(size=size).encode(stack)
    assert emb.shape == (2, 64) and np.isfinite(emb).all()
    assert not np.allclose(emb[0], emb[1], rtol=1e-3, atol=0)


def test_cnn_input_is_the_log_of_patterns_scaled_to_mean_one():
    # scaling and log are taken in torch (vectorised, on every core), the same values as the numpy
    # scaling that diffraction-profiles reads, to float rounding; negative counts clipped
    from multimodal_seg.modalities.diffraction import scale_patterns

    patterns = np.stack([pattern(None, kind=kind) for kind in ("crystal", "amorphous")]).astype(np.float32)
    patterns[0, 0, :5] = -3.0  # a dark-reference subtraction gone below zero
    x = _cnn(centre=False).prepare(patterns)
    clipped = np.maximum(patterns, 0.0)
    expected = scale_patterns(clipped / clipped.mean(axis=(1, 2), keepdims=True), "log")
    assert x.shape == (2, 1, *patterns.shape[1:])
    np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert float(x.min()) == 0.0  # the clipped counts: log1p(0)


def test_cnn_centring_undoes_a_beam_shift():
    centred, fixed = _cnn(), _cnn(centre=False)
    stack = np.stack([pattern(None, kind="crystal"),
                      pattern(None, kind="crystal", shift=(1.5, -1.0))])[:, None, None]
    moved = np.linalg.norm(np.diff(centred.encode(stack), axis=0))
    moved_fixed = np.linalg.norm(np.diff(fixed.encode(stack), axis=0))
    assert moved < 0.3 * moved_fixed


def test_cnn_shift_is_a_bilinear_translation_with_zeros_beyond_the_edges():
    # each pattern moved by its own sub-pixel shift, as scipy's order-1 shift with zero
    # padding; the coordinates are bitwise those of affine_grid's identity plus the shift
    import scipy.ndimage as ndi
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(5)
    x = rng.random((3, 1, 20, 24), dtype=np.float32)
    pixels = np.array([[0.3, -1.7], [2.25, 0.5], [0.0, 0.0]])  # (dy, dx) px
    shift = torch.tensor(np.stack([2 * pixels[:, 1] / 24, 2 * pixels[:, 0] / 20], axis=1),
                         dtype=torch.float32)
    out = _translated(torch.from_numpy(x), shift).numpy()
    for image, moved, (dy, dx) in zip(x[:, 0], out[:, 0], pixels):
        expected = ndi.shift(image, (-dy, -dx), order=1, mode="grid-constant", cval=0.0)
        np.testing.assert_allclose(moved, expected, atol=2e-5)
    np.testing.assert_allclose(out[2], x[2], atol=1e-6)  # no shift: unchanged, to rounding
    grid = F.affine_grid(torch.eye(2, 3)[None], [1, 1, 20, 24], align_corners=False) + shift[:, None, None]
    reference = F.grid_sample(torch.from_numpy(x), grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
    assert torch.equal(torch.from_numpy(out), reference)


@pytest.mark.parametrize(
    "options",
    [{"size": 4}, {"size": 32.0}, {"embedding_dim": -1}, {"batch_size": True},
     {"centre": None}, {"device": "gpu"}],
    ids=str,
)
def test_cnn_bad_options(options):
    with pytest.raises(ParameterError):
        _cnn(**options)


# ---------------------------------------------------------------- registry


def test_diffraction_encoders_in_registry():
    assert {"diffraction-profiles", "diffraction-cnn"} <= set(available_encoders())
    profiles = get_encoder("diffraction-profiles", n_angular=12)
    assert isinstance(profiles, DiffractionProfilesEncoder) and profiles.kind == "diffraction"
    cnn = get_encoder("diffraction-cnn", weights="random", device="cpu", size=32)
    assert isinstance(cnn, DiffractionCNNEncoder) and cnn.kind == "diffraction"
    with pytest.raises(WeightsError):
        get_encoder("diffraction-cnn")
    with pytest.raises(ParameterError, match="n_angular"):
        get_encoder("diffraction-profiles", n_angle=12)
