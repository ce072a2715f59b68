"""The weight-free Fourier encoder on synthetic HAADF-like chips: lattices at several
orientations and spacings, and amorphous (random-atom) chips, all with Poisson noise."""

from __future__ import annotations


import numpy as np
import pytest
from scipy.spatial.distance import cdist

from multimodal_seg.encoders.fourier import N_STATS, FourierEncoder
from multimodal_seg.errors import ParameterError

SIZE = 64
# Lattice frequency 64 / 8.58 = 7.46 cycles per chip: the centre of radial bin 2 of the
# default 12 bins (edges 1, 3.58, 6.17, 8.75, ...), so small rotations do not move
# its power across a bin edge (rotation invariance holds "up to sampling").
SPACING = 8.58


def _scaled(chips: np.ndarray) -> np.ndarray:
    """One intensity scale for all chips, as the pipeline does (to about [0, 1])."""
    return np.clip(chips / np.percentile(chips, 99.5), 0, 1).astype(np.float32)


def _standardised(features: np.ndarray) -> np.ndarray:
    f = features.astype(np.float64)
    std = f.std(axis=0)
    return (f - f.mean(axis=0)) / np.where(std > 0, std, 1.0)


from .synthetic import amorphous_image, lattice_image  # noqa: E402


@pytest.fixture(scope="module")
def chip_set():
    """Four noisy copies each of: a lattice at 0 deg, the same lattice at 30 deg,
    a finer lattice (another phase), and amorphous material."""
    rng = np.random.default_rng(0)
    makers = {
        "0deg": lambda: lattice_image(SIZE, SPACING, 0.0, rng, dose=200.0),
        "30deg": lambda: lattice_image(SIZE, SPACING, 30.0, rng, dose=200.0),
        "other_phase": lambda: lattice_image(SIZE, 0.7 * SPACING, 0.0, rng, dose=200.0),
        "amorphous": lambda: amorphous_image(SIZE, 0.8 * SPACING, rng, dose=200.0),
    }
    chips, kinds = [], []
    for kind, make in makers.items():
        for _ in range(4):
            chips.append(make())
            kinds.append(kind)
    return _scaled(np.stack(chips)), np.array(kinds)


def _distances(features: np.ndarray, kinds: np.ndarray, metric: str):
    d = cdist(_standardised(features), _standardised(features), metric)

    def within(kind):
        block = d[np.ix_(kinds == kind, kinds == kind)]
        return block[np.triu_indices(len(block), 1)].mean()

    def between(a, b):
        return d[np.ix_(kinds == a, kinds == b)].mean()

    return within, between


# --- output contract -------------------------------------------------------------------


@pytest.mark.parametrize("n_radial,n_angular", [(12, 12), (8, 1), (4, 6), (1, 1)])
@pytest.mark.parametrize("size", [16, 32, 64])
def test_output_shape_dtype_and_finite(chip_set, size, n_radial, n_angular):
    chips = chip_set[0][:, :size, :size]
    enc = FourierEncoder(n_radial=n_radial, n_angular=n_angular)
    out = enc.encode(chips)
    assert out.shape == (len(chips), enc.dim) and out.dtype == np.float32
    assert enc.dim == N_STATS + n_radial * n_angular + n_radial
    assert np.isfinite(out).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
@pytest.mark.parametrize("size,n_radial", [(8, 12), (12, 12), (32, 40)])
def test_output_is_finite_for_small_chips_and_fine_radial_bins(size, n_radial):
    # ChipGrid accepts chips from 4 px; the polar map guards empty bins, the radial one must too.
    chips = np.random.default_rng(1).random((3, size, size)).astype(np.float32)
    assert np.isfinite(FourierEncoder(n_radial=n_radial).encode(chips)).all()


def test_deterministic_and_batch_independent(chip_set):
    chips = chip_set[0]
    enc = FourierEncoder()
    a = enc.encode(chips)
    np.testing.assert_array_equal(a, enc.encode(chips))
    np.testing.assert_array_equal(a, FourierEncoder().encode(chips))
    one_by_one = np.concatenate([enc.encode(chips[i : i + 1]) for i in range(len(chips))])
    np.testing.assert_allclose(a, one_by_one, rtol=1e-5, atol=1e-6)


def test_intensity_statistics_columns(chip_set):
    chips = chip_set[0].astype(np.float64)
    out = FourierEncoder().encode(chips)
    flat = chips.reshape(len(chips), -1)
    gy, gx = np.gradient(chips, axis=(1, 2))
    expected = np.column_stack([
        flat.mean(axis=1), flat.std(axis=1), *np.percentile(flat, [10, 50, 90], axis=1),
        np.hypot(gy, gx).mean(axis=(1, 2)),
    ])
    np.testing.assert_allclose(out[:, :N_STATS], expected, rtol=1e-4, atol=1e-5)


def test_spectral_features_ignore_brightness_offsets(chip_set):
    # The chip mean is removed before the spectrum: adding a constant changes only the stats.
    chips = chip_set[0]
    enc = FourierEncoder()
    a, b = enc.encode(chips), enc.encode(chips + 0.25)
    np.testing.assert_allclose(a[:, N_STATS:], b[:, N_STATS:], atol=2e-3)
    np.testing.assert_allclose(b[:, 0] - a[:, 0], 0.25, atol=1e-5)


# --- physics: spacing and orientation ---------------------------------------------------


@pytest.mark.parametrize("spacing", [5.0, 8.58, 14.0])
def test_radial_profile_peaks_at_the_lattice_frequency(spacing):
    rng = np.random.default_rng(2)
    chip = _scaled(lattice_image(SIZE, spacing, 20.0, rng, dose=200.0)[None])
    enc = FourierEncoder()
    radial = enc.encode(chip)[0, N_STATS + enc.n_radial * enc.n_angular :]
    edges = np.linspace(1.0, SIZE / 2, enc.n_radial + 1)
    expected_bin = np.digitize(SIZE / spacing, edges) - 1  # first-order Bragg spots
    assert radial.argmax() == expected_bin


def _peak_angular_bins(chip: np.ndarray, enc: FourierEncoder) -> set[int]:
    polar = enc.encode(chip[None])[0, N_STATS : N_STATS + enc.n_radial * enc.n_angular]
    polar = polar.reshape(enc.n_radial, enc.n_angular)
    ring = np.digitize(SIZE / SPACING, np.linspace(1.0, SIZE / 2, enc.n_radial + 1)) - 1
    return set(np.argsort(polar[ring])[-2:].tolist())


def test_polar_map_follows_the_lattice_orientation():
    # 12 angular bins of 15 deg; angles chosen so the spots sit mid-bin.
    rng = np.random.default_rng(3)
    enc = FourierEncoder()
    peaks = {t: _peak_angular_bins(_scaled(lattice_image(SIZE, SPACING, t, rng, dose=200.0)[None])[0], enc)
             for t in (7.5, 37.5, 67.5)}
    for t, bins in peaks.items():
        a, b = sorted(bins)
        assert b - a == 6, f"square lattice at {t} deg: spots 90 deg apart expected, got bins {bins}"
    # A 30 deg rotation moves both spots by two bins, the same way each time.
    shift_1 = {(x - y) % 12 for x in peaks[37.5] for y in peaks[7.5]}
    shift_2 = {(x - y) % 12 for x in peaks[67.5] for y in peaks[37.5]}
    assert shift_1 & {2, 10} and shift_1 & {2, 10} == shift_2 & {2, 10}


def test_rotating_by_90_degrees_rolls_the_angular_bins(chip_set):
    chips = chip_set[0][chip_set[1] == "30deg"]
    turned = np.rot90(chips, axes=(1, 2))
    enc = FourierEncoder()  # 12 bins of 15 deg: 90 deg is 6 bins
    a, b = enc.encode(chips), enc.encode(np.ascontiguousarray(turned))
    np.testing.assert_allclose(a[:, :N_STATS], b[:, :N_STATS], rtol=1e-4, atol=1e-5)
    polar_a = a[:, N_STATS : N_STATS + 144].reshape(-1, 12, 12)
    polar_b = b[:, N_STATS : N_STATS + 144].reshape(-1, 12, 12)
    rolled = np.roll(polar_b, 6, axis=2)
    # Equal up to the few samples on the axes, which fall in different bins once turned.
    noise_scale = np.abs(polar_a[0] - polar_a[1]).mean()
    assert np.abs(polar_a - rolled).mean() < 0.2 * noise_scale
    assert np.abs(polar_a - polar_b).mean() > 2 * np.abs(polar_a - rolled).mean()


def test_one_angular_bin_is_invariant_to_90_degree_turns(chip_set):
    chips, kinds = chip_set
    turned = np.ascontiguousarray(np.rot90(chips, axes=(1, 2)))
    enc = FourierEncoder(n_angular=1)
    a, b = enc.encode(chips), enc.encode(turned)
    turn = np.linalg.norm(a - b, axis=1).mean()
    # Typical distance between two noisy copies of the same material.
    copies = np.mean([cdist(a[kinds == k], a[kinds == k])[np.triu_indices(4, 1)].mean() for k in set(kinds)])
    assert turn < 0.25 * copies


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_orientation_separates_grains_with_the_polar_map(chip_set, metric):
    chips, kinds = chip_set
    within, between = _distances(FourierEncoder().encode(chips), kinds, metric)
    noise = max(within("0deg"), within("30deg"))
    # 30 deg apart is much further than two noisy copies of one orientation ...
    assert between("0deg", "30deg") > (2.0 if metric == "cosine" else 1.4) * noise
    # ... and about as far as another phase or amorphous material.
    assert between("0deg", "30deg") > 0.8 * min(between("0deg", "other_phase"), between("0deg", "amorphous"))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_one_angular_bin_brings_rotated_grains_together(chip_set, metric):
    chips, kinds = chip_set
    rot_inv = _distances(FourierEncoder(n_angular=1).encode(chips), kinds, metric)
    polar = _distances(FourierEncoder().encode(chips), kinds, metric)

    def relative(dist):
        within, between = dist
        return between("0deg", "30deg") / min(between("0deg", "other_phase"), between("0deg", "amorphous"))

    # Rotation-invariant features: the rotated grain is much closer than another phase ...
    assert relative(rot_inv) < 0.8
    # ... and much closer, relative to that scale, than with the polar map.
    assert relative(rot_inv) < 0.8 * relative(polar)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_every_chip_has_a_nearest_neighbour_of_its_own_kind(chip_set, metric):
    # What the kNN graph needs: orientation, phase and order all separate the chips.
    chips, kinds = chip_set
    f = _standardised(FourierEncoder().encode(chips))
    d = cdist(f, f, metric)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(kinds[d.argmin(axis=1)], kinds)


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize("n_radial,n_angular", [(0, 12), (12, 0), (-1, 4), (0, 0)])
def test_bad_options_raise(n_radial, n_angular):
    with pytest.raises(ParameterError) as info:
        FourierEncoder(n_radial=n_radial, n_angular=n_angular)
    assert info.value.where == "encoder options"


def test_fingerprint_and_description_name_the_options():
    enc = FourierEncoder(n_radial=8, n_angular=6)
    fp = enc.fingerprint()
    assert fp["name"] == "fourier" and fp["n_radial"] == 8 and fp["n_angular"] == 6
    assert fp != FourierEncoder().fingerprint()
    assert "n_radial=8" in enc.describe() and "n_angular=6" in enc.describe()
