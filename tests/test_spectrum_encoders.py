"""Spectrum-image encoders on synthetic EELS spectrum images.

Spectra are physically shaped: a power-law background ``E^-3`` and ionisation
edges (a smoothed step at the onset, then ``E^-2``), with the edge onsets and
jump ratios differing between two phases, local thickness varying the counts
by +-30 %, and Poisson noise.  No expected embedding value is hard-coded: the
tests check relations (same phase closer than other phase, invariances,
determinism, pooling) that the physics implies.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from multimodal_seg.encoders import available_encoders, get_encoder
from multimodal_seg.encoders.registry import encoder_options
from multimodal_seg.encoders.spectrum import SpectrumCNNEncoder, SpectrumPCAEncoder
from multimodal_seg.errors import InputError, ParameterError, WeightsError

CHANNELS = 256
ENERGY = np.linspace(300.0, 800.0, CHANNELS)  # eV
# (onset eV, jump ratio): phase A an oxide with only the O K edge; phase B also
# shows the Ti L2,3 edge and a weaker O K edge.
PHASES = {"A": [(532.0, 1.0)], "B": [(456.0, 0.8), (532.0, 0.6)]}
DOSE = 20_000.0  # counts per spectrum at nominal thickness


def eels_shape(energy: np.ndarray, edges: list[tuple[float, float]]) -> np.ndarray:
    """Noise-free EELS spectrum of unit total: power-law background plus edges."""
    background = (energy / energy[0]) ** -3.0
    spectrum = background.copy()
    for onset, jump in edges:
        step = 1.0 / (1.0 + np.exp(-(energy - onset) / 2.0))  # 2 eV edge width
        decay = (np.maximum(energy, onset) / onset) ** -2.0
        spectrum += jump * (onset / energy[0]) ** -3.0 * decay * step
    return spectrum / spectrum.sum()


def eels_chips(phase: str, n: int, rng: np.random.Generator, *, size: int = 3,
               channels: int = CHANNELS, dose: float = DOSE) -> np.ndarray:
    """``(n, size, size, channels)`` Poisson counts of one phase, thickness +-30 %."""
    energy = np.linspace(300.0, 800.0, channels)
    thickness = rng.uniform(0.7, 1.3, (n, size, size, 1))
    return rng.poisson(dose * thickness * eels_shape(energy, PHASES[phase])).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"A": eels_chips("A", 30, rng), "B": eels_chips("B", 30, rng)}


@pytest.fixture(scope="module")
def sample(data) -> np.ndarray:
    return np.concatenate([data["A"], data["B"]])


@pytest.fixture(scope="module")
def labels(data) -> np.ndarray:
    return np.repeat([0, 1], [len(data["A"]), len(data["B"])])


@pytest.fixture(scope="module")
def fitted(sample) -> SpectrumPCAEncoder:
    enc = SpectrumPCAEncoder()
    enc.fit(sample)
    return enc


def _nearest_other(features: np.ndarray) -> np.ndarray:
    dist = np.linalg.norm(features[:, None] - features[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    return dist.argmin(axis=1)


# ---------------------------------------------------------------- spectrum-pca


def test_pca_dim_dtype_and_kind(fitted, sample):
    emb = fitted.encode(sample)
    assert fitted.kind == "spectrum" and fitted.name == "spectrum-pca"
    assert fitted.dim == 2 * 16 + 1 and emb.shape == (len(sample), fitted.dim)
    assert emb.dtype == np.float32 and np.isfinite(emb).all()
    no_counts = SpectrumPCAEncoder(n_components=4, log_counts=False)
    no_counts.fit(sample)
    assert no_counts.dim == 8 and no_counts.encode(sample[:3]).shape == (3, 8)


def test_pca_same_phase_chips_are_nearest(fitted, sample, labels):
    emb = fitted.encode(sample)
    assert (labels[_nearest_other(emb)] == labels).all()
    assert silhouette_score(emb, labels) > 0.5


def test_pca_first_component_carries_the_phase(fitted, sample, labels):
    scores = fitted.encode(sample)[:, 0]  # mean of PC1 over each chip
    a, b = scores[labels == 0], scores[labels == 1]
    gap = abs(a.mean() - b.mean())
    assert gap > 5 * max(a.std(), b.std())
    assert fitted.explained_variance_ratio_[0] > 5 * fitted.explained_variance_ratio_[1]


def test_pca_new_chips_of_a_phase_land_with_that_phase(fitted, sample, labels):
    rng = np.random.default_rng(99)
    fresh = np.concatenate([eels_chips("A", 5, rng), eels_chips("B", 5, rng)])
    fresh_labels = np.repeat([0, 1], 5)
    known = fitted.encode(sample)
    centroids = np.stack([known[labels == k].mean(axis=0) for k in (0, 1)])
    emb = fitted.encode(fresh)
    nearest = np.linalg.norm(emb[:, None] - centroids[None], axis=2).argmin(axis=1)
    assert (nearest == fresh_labels).all()


def test_pca_total_normalisation_is_dose_invariant(fitted, sample):
    emb = fitted.encode(sample)
    scaled = SpectrumPCAEncoder()
    scaled.fit(3.0 * sample)
    np.testing.assert_allclose(scaled.encode(3.0 * sample), emb, rtol=1e-3, atol=1e-3)
    # basis from the original dose: only the log-counts feature moves, by log(3)
    moved = fitted.encode(3.0 * sample)
    np.testing.assert_allclose(moved[:, :-1], emb[:, :-1], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(moved[:, -1] - emb[:, -1], np.log(3.0), atol=1e-3)


def test_pca_without_normalisation_sees_the_dose(sample):
    enc = SpectrumPCAEncoder(normalise="none", log_counts=False)
    enc.fit(sample)
    emb = enc.encode(sample)
    assert not np.allclose(enc.encode(3.0 * sample), emb, atol=1e-2 * np.abs(emb).max())


@pytest.mark.parametrize("normalise", ["total", "max", "none"])
@pytest.mark.parametrize("poisson", [True, False])
def test_pca_options_all_separate_phases(sample, labels, normalise, poisson):
    enc = SpectrumPCAEncoder(n_components=4, normalise=normalise, poisson=poisson)
    enc.fit(sample)
    emb = enc.encode(sample)
    assert np.isfinite(emb).all()
    # without normalisation the thickness spread competes with composition, so
    # compare on the score means only
    means = emb[:, :4]
    assert (labels[_nearest_other(means)] == labels).all()


def test_pca_is_deterministic(sample):
    first, second = SpectrumPCAEncoder(), SpectrumPCAEncoder()
    first.fit(sample)
    second.fit(sample.copy())
    np.testing.assert_array_equal(first.components_, second.components_)
    np.testing.assert_array_equal(first.encode(sample), second.encode(sample))
    # the fit subsample (max_fit_spectra) is seeded too
    sub1, sub2 = SpectrumPCAEncoder(max_fit_spectra=100), SpectrumPCAEncoder(max_fit_spectra=100)
    sub1.fit(sample)
    sub2.fit(sample)
    np.testing.assert_array_equal(sub1.components_, sub2.components_)
    assert not np.array_equal(sub1.components_, first.components_)


def test_pca_std_over_positions_marks_interfaces(fitted, data):
    k = fitted.n_components
    mixed = data["A"][:10].copy()
    mixed[:, :, 2:] = data["B"][:10, :, 2:]  # a vertical A|B interface inside each chip
    pure = fitted.encode(data["A"][:10])[:, k : 2 * k]
    across = fitted.encode(mixed)[:, k : 2 * k]
    assert across[:, 0].min() > 3 * pure[:, 0].max()  # PC1 spread jumps at the interface


def test_pca_one_position_chips(fitted, sample):
    singles = sample[:4, :1, :1]
    emb = fitted.encode(singles)
    k = fitted.n_components
    assert emb.shape == (4, fitted.dim)
    np.testing.assert_array_equal(emb[:, k : 2 * k], 0.0)  # no spread within one position


def test_pca_pools_over_positions(fitted, sample):
    chips = sample[:3]
    singles = chips.reshape(-1, 1, 1, CHANNELS)
    per_position = fitted.encode(singles).reshape(3, 9, -1)
    pooled = fitted.encode(chips)
    k = fitted.n_components
    np.testing.assert_allclose(pooled[:, :k], per_position[:, :, :k].mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(pooled[:, k : 2 * k], per_position[:, :, :k].std(axis=1),
                               atol=1e-5)
    np.testing.assert_allclose(pooled[:, -1], per_position[:, :, -1].mean(axis=1), atol=1e-5)


def test_pca_empty_and_integer_spectra(fitted, sample):
    chips = sample[:2].copy()
    chips[0, 0, 0] = 0  # a position without counts (vacuum, beam blanked)
    emb = fitted.encode(chips.astype(np.int32))
    assert np.isfinite(emb).all()
    assert fitted.encode(np.zeros((0, 3, 3, CHANNELS), np.float32)).shape == (0, fitted.dim)


def test_pca_encode_before_fit_is_a_clear_error(sample):
    with pytest.raises(ParameterError, match="before fit"):
        SpectrumPCAEncoder().encode(sample[:2])


def test_pca_channel_count_must_match_fit(fitted):
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="channels"):
        fitted.encode(eels_chips("A", 2, rng, channels=CHANNELS + 1))


def test_pca_sample_too_small(sample):
    with pytest.raises(InputError, match="n_components"):
        SpectrumPCAEncoder(n_components=16).fit(sample[:1, :1, :1])
    with pytest.raises(InputError, match="n_components"):
        SpectrumPCAEncoder(n_components=16).fit(sample[..., :8])


@pytest.mark.parametrize(
    "chips",
    [np.zeros((2, 3, 3), np.float32), np.zeros((2, 3, 3, 0), np.float32),
     np.full((1, 1, 1, 4), np.nan, np.float32), np.zeros((1, 1, 1, 4), complex)],
    ids=["3d", "no-channels", "nan", "complex"],
)
def test_pca_bad_chips(chips):
    with pytest.raises(InputError):
        SpectrumPCAEncoder(n_components=1).fit(chips)


@pytest.mark.parametrize(
    "options",
    [{"n_components": 0}, {"n_components": 2.5}, {"n_components": True},
     {"normalise": "sum"}, {"normalise": None}, {"poisson": "yes"}, {"log_counts": 1},
     {"max_fit_spectra": 1}],
    ids=str,
)
def test_pca_bad_options(options):
    with pytest.raises(ParameterError):
        SpectrumPCAEncoder(**options)


def test_pca_fingerprint_lists_options():
    fp = SpectrumPCAEncoder(n_components=8, normalise="MAX", poisson=False).fingerprint()
    json.dumps(fp)
    assert fp["name"] == "spectrum-pca" and fp["n_components"] == 8
    assert fp["normalise"] == "max" and fp["poisson"] is False
    assert SpectrumPCAEncoder().fingerprint() != fp


# ---------------------------------------------------------------- spectrum-cnn


# weights, seeding, strict loading, pooling and dose invariance, shared with the other
# convnet encoder: tests/test_convnet_encoders.py


def _cnn(**options) -> SpectrumCNNEncoder:
    return SpectrumCNNEncoder(**{"weights": "random", "device": "cpu", **options})


@pytest.mark.parametrize("channels", [40, 256, 1500])
def test_cnn_any_channel_count(channels):
    rng = np.random.default_rng(channels)
    chips = np.concatenate([eels_chips("A", 2, rng, size=2, channels=channels),
                            eels_chips("B", 2, rng, size=2, channels=channels)])
    emb = _cnn().encode(chips)
    assert emb.shape == (4, 64) and np.isfinite(emb).all()
    assert not np.allclose(emb[0], emb[2], rtol=1e-3, atol=0)


@pytest.mark.parametrize(
    "options",
    [{"length": 4}, {"embedding_dim": 0}, {"batch_size": 0}, {"log": "no"},
     {"device": "tpu"}, {"weights": 3}],
    ids=str,
)
def test_cnn_bad_options(options):
    with pytest.raises(ParameterError):
        _cnn(**options)


def test_cnn_preparation_clips_scales_bins_and_logs_each_spectrum():
    rng = np.random.default_rng(3)
    spectra = (rng.poisson(5.0, (6, 512)) - 1).astype(np.float32)  # some counts negative
    spectra[2] = 0.0  # a blank spectrum stays 0
    kept = spectra.copy()
    prepared = _cnn(length=128).prepare(spectra).numpy()
    clipped = np.clip(spectra.astype(np.float64), 0, None)
    total = clipped.sum(axis=1, keepdims=True)
    scaled = np.divide(clipped * 512, total, out=np.zeros_like(clipped), where=total > 0)
    expected = np.log1p(scaled.reshape(6, 128, 4).mean(axis=2))  # 4 channels a bin
    assert prepared.shape == (6, 1, 128)
    np.testing.assert_allclose(prepared[:, 0], expected, rtol=1e-5, atol=1e-6)
    assert (prepared[2] == 0).all()
    np.testing.assert_array_equal(spectra, kept)  # the caller's array is not modified


def test_cnn_bad_chips():
    with pytest.raises(InputError):
        _cnn().encode(np.zeros((2, 3, 3), np.float32))


# ---------------------------------------------------------------- registry


def test_spectrum_encoders_in_registry(sample):
    assert {"spectrum-pca", "spectrum-cnn"} <= set(available_encoders())
    pca = get_encoder("spectrum-pca", n_components=4)
    assert isinstance(pca, SpectrumPCAEncoder) and pca.kind == "spectrum"
    cnn = get_encoder("spectrum-cnn", weights="random", device="cpu")
    assert isinstance(cnn, SpectrumCNNEncoder) and cnn.kind == "spectrum"
    assert {"n_components", "normalise", "poisson", "log_counts"} <= set(
        encoder_options("spectrum-pca"))
    with pytest.raises(WeightsError):
        get_encoder("spectrum-cnn")
    with pytest.raises(ParameterError, match="n_component"):
        get_encoder("spectrum-pca", n_component=4)
