"""The lattice period of an image (multimodal_seg.chips.texture) and the chip size it sets."""

from __future__ import annotations

import glob
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

import multimodal_seg as mms
from multimodal_seg.chips import texture
from multimodal_seg.chips.sizing import (AUTO_MIN_IMAGE_CHIP, LATTICE_PERIODS, auto_image_chip, chip_geometry,
                                         texture_pixels)
from multimodal_seg.chips.texture import (MAX_FREQUENCIES, TREND_SPAN, image_lattice, lattice_amplitudes,
                                           lattice_basis_period, lattice_features, lattice_period, radial_trend)
from multimodal_seg.config import ChipConfig
from multimodal_seg.metrics import adjusted_rand
from multimodal_seg.synthetic.families import draw
from multimodal_seg.synthetic.phantoms import Amorphous, Crystal, render_haadf

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: The square phase's lattice constant (nm), as in the phantom families.
LATTICE_NM = 0.40


def _crystal(period: float, seed: int = 0, size: int = 384) -> np.ndarray:
    """One grain of the square phase with a lattice period of ``period`` px, Poisson noise."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), dtype=np.int16)
    geo, noise = rng.spawn(2)
    return render_haadf(truth, [Crystal(LATTICE_NM, 17.0)], geo, noise, pixel_size=LATTICE_NM / period,
                        dose=150.0, reference_spacing=LATTICE_NM)


@pytest.mark.parametrize("period", [5.0, 10.0, 24.0])
def test_the_period_of_a_rendered_lattice_is_found(period):
    image = _crystal(period)
    found = lattice_period(image)
    assert found is not None and abs(found - period) / period < 0.06, found
    # the period image_lattice takes from its full periodogram is the same
    assert image_lattice(image).period == found


def test_the_trend_is_the_running_median_of_the_log_power_over_a_factor_in_radius():
    rng = np.random.default_rng(5)
    power = rng.exponential(size=300) * np.arange(1, 301) ** -2.0
    trend = radial_trend(power)
    assert trend[0] == power[0]
    r = np.arange(1, 300)
    for radius in (1, 2, 7, 50, 299):  # by its definition, window by window
        inside = (r >= radius / TREND_SPAN) & (r <= radius * TREND_SPAN)
        assert trend[radius] == pytest.approx(np.exp(np.median(np.log(power[1:][inside]))), rel=1e-12)


def test_no_lattice_in_noise_or_in_shapes_without_one():
    rng = np.random.default_rng(1)
    assert lattice_period(rng.poisson(100.0, (512, 512)).astype(np.float32)) is None
    # grey-level blobs and a ramp, as in an SEM image of phases: structure, but no lattice
    blobs = ndimage.gaussian_filter(rng.normal(size=(512, 512)), 12) > 0
    image = 80 + 60 * blobs + np.linspace(0, 30, 512)[None, :]
    assert lattice_period(rng.poisson(image).astype(np.float32)) is None
    rng2 = np.random.default_rng(2)
    amorphous = render_haadf(np.zeros((384, 384), np.int16), [Amorphous()], *rng2.spawn(2), pixel_size=0.04,
                             dose=150.0, reference_spacing=LATTICE_NM)
    assert lattice_period(amorphous) is None


def test_only_a_central_window_is_read_from_a_large_lazy_image():
    image = _crystal(10.0, size=384)
    tiled = da.from_array(np.tile(image, (40, 40)), chunks=384)  # 15360 px square, lazy
    assert abs(lattice_period(tiled) - 10.0) < 0.6


@pytest.mark.realdata
def test_real_sem_images_without_a_lattice_keep_the_plain_chip_rule():
    import imageio.v3 as iio

    paths = sorted(glob.glob(str(DATA / "labelled" / "**" / "*_image.png"), recursive=True))
    if not paths:
        pytest.skip("labelled SEM sets not found in ../shared/data")
    for path in paths[::4]:
        image = iio.imread(path)
        image = image if image.ndim == 2 else image[..., 0]
        assert lattice_period(image) is None, path
    for path in paths:  # nor does any repeat a lattice basis finds in them (JPEG blocks: 3.9 px)
        image = iio.imread(path)
        repeat = image_lattice(image if image.ndim == 2 else image[..., 0]).repeat
        assert texture_pixels(repeat) == AUTO_MIN_IMAGE_CHIP, (path, repeat)


def test_a_lattice_basis_is_two_reflections_and_their_sum_of_comparable_lengths():
    n = 512
    square = np.array([[0.0, 20.0], [20.0, 0.0], [20.0, 20.0], [20.0, -20.0], [0.0, 40.0]]) / n
    assert lattice_basis_period(square, n) == pytest.approx(n / 20.0)
    hexagonal = np.array([[0.0, 30.0], [30 * np.sqrt(3) / 2, 15.0], [30 * np.sqrt(3) / 2, -15.0]]).round() / n
    assert lattice_basis_period(hexagonal, n) == pytest.approx(n / 30.0, rel=0.03)
    # orders of one row of spots (and a boundary's streak) are collinear: no basis
    assert lattice_basis_period(np.array([[0.0, k * 12.0] for k in (1, 2, 3, 4)]) / n, n) is None
    # a streak's spot beside a reflection and its satellite: lengths many times apart
    streak = np.array([[6.0, 1.0], [40.0, 30.0], [46.0, 31.0]]) / n
    assert lattice_basis_period(streak, n) is None
    assert lattice_basis_period(square[:2], n) is None  # no sum among the reflections


def test_the_repeat_of_a_lattice_that_fills_part_of_the_image():
    # islands of a 20 px square lattice (a quarter of the image) in amorphous matrix: the
    # radial ring stands under the size condition, the 2-D reflections form a basis
    size, period = 512, 20.0
    yy, xx = np.mgrid[0:size, 0:size]
    truth = ((yy > 0.75 * size) | (np.hypot(yy - 150, xx - 200) < 60)).astype(np.int16)
    rng = np.random.default_rng(3)
    image = render_haadf(truth, [Amorphous(), Crystal(LATTICE_NM, 23.0)], *rng.spawn(2),
                         pixel_size=LATTICE_NM / period, dose=150.0, reference_spacing=LATTICE_NM)
    lattice = image_lattice(image)
    assert lattice.repeat == pytest.approx(period, rel=0.08)
    assert lattice.period is None or lattice.period < 0.8 * period  # what the radial rule alone read
    # a layered specimen's boundaries streak its spectrum, but make no coarse basis
    layers = draw("layouts", 9)  # layers, 10 px lattice
    assert image_lattice(np.asarray(layers.modalities["haadf"].data)).repeat < 12.0


def test_chips_hold_several_periods_of_a_coarse_lattice():
    assert auto_image_chip((512, 512)) == AUTO_MIN_IMAGE_CHIP == auto_image_chip((512, 512), 10.0)
    assert auto_image_chip((512, 512), 25.0) == int(np.ceil(LATTICE_PERIODS * 25.0))
    # an image too small for 3 texture chips across gets chips of a quarter of its side, not
    # one chip (no graph), nor chips under MIN_IMAGE_CHIP
    assert auto_image_chip((60, 60), 25.0) == 15 and auto_image_chip((30, 40)) == 7
    assert auto_image_chip((64, 64)) == 32 and auto_image_chip((12, 12)) == 4
    coarse = draw("magnification", 16)  # 25 px lattice
    size, stride = chip_geometry(ChipConfig(), coarse.modalities)
    # the chips hold the lattice, the step stays that of the field of view's chips
    assert size >= LATTICE_PERIODS * 24 and stride == AUTO_MIN_IMAGE_CHIP // 2
    assert chip_geometry(ChipConfig(size=size), coarse.modalities)[1] == size // 2
    fine = draw("orientation", 0)  # 10 px lattice: the plain rule
    assert chip_geometry(ChipConfig(), fine.modalities)[0] == AUTO_MIN_IMAGE_CHIP


def test_grains_of_a_coarse_lattice_are_found_with_the_automatic_chips():
    # 25 px lattice: 32 px chips (1.3 periods) scored ARI 0.00 on this draw
    coarse = draw("magnification", 16)
    seg = mms.segment(coarse.modalities, progress=False)
    assert adjusted_rand(seg.scan_labels["haadf"], coarse.truth) > 0.8


# --- lattice reflections and their local amplitudes ---------------------------------------


def _two_grains(period: float = 10.0, angles: tuple[float, float] = (17.0, 52.0), size: int = 256) -> tuple:
    """Two grains of the square phase side by side (left, right), at two orientations."""
    truth = np.zeros((size, size), dtype=np.int16)
    truth[:, size // 2:] = 1
    rng = np.random.default_rng(3)
    geo, noise = rng.spawn(2)
    image = render_haadf(truth, [Crystal(LATTICE_NM, a) for a in angles], geo, noise, pixel_size=LATTICE_NM / period,
                         dose=150.0, reference_spacing=LATTICE_NM)
    return image, truth


def test_the_reflections_of_grains_at_two_orientations_are_found():
    image, _ = _two_grains()
    lattice = image_lattice(image)
    found = lattice.frequencies
    # the period from the same periodogram is the one the chip size is chosen from
    assert lattice.period == lattice_period(image) == pytest.approx(10.0, abs=0.6)
    assert 4 <= len(found) <= MAX_FREQUENCIES
    periods = 1.0 / np.hypot(found[:, 0], found[:, 1])
    angles = np.degrees(np.arctan2(found[:, 0], found[:, 1])) % 90.0
    # the strongest are the first-order reflections of both grains: a 10 px period at each
    # grain's orientation (a square lattice repeats every 90 degrees)
    first = periods[:4]
    assert np.all(np.abs(first - 10.0) < 0.6), first
    # two orientations among them, 35 degrees apart as the grains are
    distinct = np.unique(np.round(angles[:4]))
    assert len(distinct) == 2 and abs(abs(distinct[1] - distinct[0]) - 35.0) < 3, angles[:4]
    # one of each +/- pair
    assert not any(np.allclose(f, -g, atol=1e-9) for f in found for g in found)
    rng = np.random.default_rng(1)
    noise = image_lattice(rng.poisson(100.0, (256, 256)).astype(np.float32))
    assert noise.period is None and noise.frequencies.shape == (0, 2)


def test_a_grains_amplitude_is_full_inside_none_outside_and_half_at_its_edge():
    image, truth = _two_grains()
    found = image_lattice(image).frequencies
    rows = cols = np.arange(256.0)
    amplitude = lattice_amplitudes(image, found, 10.0, rows, cols)
    assert amplitude.shape == (256, 256, 1 + len(found)) and amplitude.dtype == np.float32
    # zero frequency: the local mean intensity
    np.testing.assert_allclose(amplitude[100:156, 40:80, 0].mean(), image[100:156, 20:100].mean(), rtol=0.02)
    # a reflection of the left grain: strong on the left, nothing on the right, half at the boundary
    left = int(np.argmax(amplitude[:, 40:80, 1:].mean(axis=(0, 1)) / amplitude[:, 176:216, 1:].mean(axis=(0, 1)))) + 1
    inside, outside = amplitude[64:192, 40:80, left].mean(), amplitude[64:192, 176:216, left].mean()
    edge = amplitude[64:192, 127:129, left].mean()
    assert outside < 0.1 * inside
    assert abs(edge - 0.5 * (inside + outside)) < 0.12 * inside, (inside, edge, outside)
    # features of a grid of positions: the same values where the grids meet
    coarse = lattice_amplitudes(image, found, 10.0, rows[::4], cols[::4])
    np.testing.assert_allclose(coarse, amplitude[::4, ::4], rtol=1e-3, atol=1e-3 * amplitude.max())
    # a step that the padded length (316 -> 320 px) does not divide pads the tile to one it does
    thirds = lattice_amplitudes(image, found, 10.0, rows[1::3], cols[1::3])
    np.testing.assert_allclose(thirds, amplitude[1::3, 1::3], rtol=1e-3, atol=1e-3 * amplitude.max())


def test_the_fourier_sum_on_an_even_grid_is_an_inverse_fft_with_the_same_sums(monkeypatch):
    rng = np.random.default_rng(5)
    k = np.arange(-15, 16)  # 31 indices: no more than 120 / 3
    values = (rng.normal(size=(31, 3)) + 1j * rng.normal(size=(31, 3))).astype(np.complex64)
    calls = []
    ifft = texture.scipy.fft.ifft
    monkeypatch.setattr(texture.scipy.fft, "ifft", lambda *a, **kw: calls.append(1) or ifft(*a, **kw))
    cases = [(2.5 + 3.0 * np.arange(40), 1),   # evenly spaced, a whole step dividing 120: an FFT
             (np.arange(0.0, 119.0), 1),       # every pixel
             (2.5 + 3.0 * np.arange(40) ** 1.01, 0),  # uneven: the factors' matrix
             (np.arange(0.0, 60.0, 1.5), 0),   # a step that is not whole
             (2.5 + 7.0 * np.arange(10), 0),   # a step that does not divide 120
             (2.5 + 4.0 * np.arange(25), 0)]   # 4 divides it, but 31 indices alias on 30 bins
    for at, ffts in cases:
        calls.clear()
        exact = np.exp(2j * np.pi * np.outer(at, k) / 120) @ values.astype(np.complex128)
        summed = texture.fourier_sum(values, at, k, 120)
        assert summed.dtype == np.complex64 and len(calls) == ffts
        np.testing.assert_allclose(summed, exact, rtol=0, atol=1e-5 * np.abs(exact).max())


class _ReadCounter:
    """An image that records the shape of every region read from it."""

    def __init__(self, image: np.ndarray) -> None:
        self.image, self.shape, self.reads = image, image.shape, []

    def __getitem__(self, key):
        region = self.image[key]
        self.reads.append(region.shape)
        return region


def test_a_large_image_is_filtered_in_tiles_with_the_same_amplitudes(monkeypatch):
    image, _ = _two_grains()
    found = image_lattice(image).frequencies
    at = np.arange(0.0, 256, 2)
    whole = lattice_amplitudes(image, found, 10.0, at, at)
    monkeypatch.setattr(texture, "AMPLITUDE_TILE", 96)
    counter = _ReadCounter(image)
    tiled = lattice_amplitudes(counter, found, 10.0, at, at)
    # 3 x 3 tiles, each read with 40 px (4 envelope widths) of its neighbours around it
    assert len(counter.reads) == 9 and max(max(r) for r in counter.reads) == 96 + 2 * 40
    # the filters are centred on the reflections themselves, not on the nearest frequency of
    # each tile's FFT grid, so tiles and the whole image agree (to 1 % of each feature's range)
    assert np.all(np.abs(tiled - whole).max(axis=(0, 1)) < 0.01 * whole.max(axis=(0, 1)))


def test_lattice_features_are_none_without_a_lattice():
    rng = np.random.default_rng(4)
    blobs = ndimage.gaussian_filter(rng.normal(size=(256, 256)), 12) > 0
    assert lattice_features(rng.poisson(80 + 60 * blobs).astype(np.float32), np.arange(8.0), np.arange(8.0)) is None
    image, _ = _two_grains()
    features = lattice_features(image, np.arange(0.0, 256, 8), np.arange(0.0, 256, 8))
    assert features.shape[:2] == (32, 32) and features.shape[2] == 1 + len(image_lattice(image).frequencies)
