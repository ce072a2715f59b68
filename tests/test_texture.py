"""The lattice period of an image (multimodal_seg.chips.texture) and the chip size it sets."""

from __future__ import annotations

import glob
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

import multimodal_seg as mms
from multimodal_seg.chips.sizing import AUTO_MIN_IMAGE_CHIP, LATTICE_PERIODS, auto_image_chip, chip_geometry
from multimodal_seg.chips.texture import lattice_period
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
    found = lattice_period(_crystal(period))
    assert found is not None and abs(found - period) / period < 0.06, found


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


def test_chips_hold_several_periods_of_a_coarse_lattice():
    assert auto_image_chip((512, 512)) == AUTO_MIN_IMAGE_CHIP == auto_image_chip((512, 512), 10.0)
    assert auto_image_chip((512, 512), 25.0) == int(np.ceil(LATTICE_PERIODS * 25.0))
    assert auto_image_chip((60, 60), 25.0) == 60  # never more than the image
    coarse = draw("magnification", 16)  # 25 px lattice
    size, stride = chip_geometry(ChipConfig(), coarse.modalities)
    assert size >= LATTICE_PERIODS * 24 and stride == size // 2
    fine = draw("orientation", 0)  # 10 px lattice: the plain rule
    assert chip_geometry(ChipConfig(), fine.modalities)[0] == AUTO_MIN_IMAGE_CHIP


def test_grains_of_a_coarse_lattice_are_found_with_the_automatic_chips():
    # 25 px lattice: 32 px chips (1.3 periods) scored ARI 0.00 on this draw
    coarse = draw("magnification", 16)
    seg = mms.segment(coarse.modalities, progress=False)
    assert adjusted_rand(seg.scan_labels["haadf"], coarse.truth) > 0.8
