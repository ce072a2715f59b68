"""What every convnet encoder (``spectrum-cnn``, ``diffraction-cnn``) does the same way.

The shared machinery (:class:`multimodal_seg.encoders.convnet.ConvChipEncoder`):
weights must be named, random weights are seeded and marked, a state dict is
loaded strictly, embeddings are the mean over a chip's positions whatever the
batch size, and the caller's random stream is left alone.  Each test runs on both
encoders with their own synthetic chips (EELS spectra, 4D-STEM patterns); what
only one of them does is tested in its own module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multimodal_seg.encoders.convnet import ConvChipEncoder
from multimodal_seg.encoders.diffraction import DiffractionCNNEncoder
from multimodal_seg.encoders.spectrum import SpectrumCNNEncoder
from multimodal_seg.errors import WeightsError

from .test_diffraction_encoders import chips as diffraction_chips
from .test_spectrum_encoders import eels_chips

ENCODERS: dict[str, type[ConvChipEncoder]] = {
    "spectrum-cnn": SpectrumCNNEncoder,
    "diffraction-cnn": DiffractionCNNEncoder,
}


@pytest.fixture(scope="module", params=list(ENCODERS))
def name(request) -> str:
    return request.param


def _cnn(name: str, **options) -> ConvChipEncoder:
    return ENCODERS[name](**{"weights": "random", "device": "cpu", **options})


@pytest.fixture(scope="module")
def stack(name) -> np.ndarray:
    """Chips of two phases: 6 chips of 3 x 3 spectra, or 4 chips of 2 x 2 patterns."""
    rng = np.random.default_rng(5)
    if name == "spectrum-cnn":
        return np.concatenate([eels_chips("A", 3, rng), eels_chips("B", 3, rng)])
    return np.concatenate([diffraction_chips(2, rng, kind="crystal"),
                           diffraction_chips(2, rng, kind="amorphous")])


def _perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A state dict of the same layout with seeded relative changes (a 'trained' net)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        value = value.clone()
        if key.endswith("running_var"):
            value.uniform_(0.5, 1.5, generator=gen)
        elif value.is_floating_point():
            value.mul_(1 + 0.2 * torch.randn(value.shape, generator=gen))
            value.add_(0.05 * torch.randn(value.shape, generator=gen))
        out[key] = value
    return out


@pytest.fixture(scope="module")
def cnn_file(name, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp(name) / "trained.pt"
    torch.save(_perturbed(_cnn(name).network.state_dict(), seed=1), path)
    return path


def test_needs_weights_named(name):
    with pytest.raises(WeightsError, match="random"):
        ENCODERS[name](device="cpu")


def test_random_is_seeded_shaped_and_marked(name, stack):
    first, second = _cnn(name), _cnn(name)
    e1, e2 = first.encode(stack), second.encode(stack)
    assert e1.shape == (len(stack), 64) and e1.dtype == np.float32 and np.isfinite(e1).all()
    np.testing.assert_array_equal(e1, e2)
    fp = first.fingerprint()
    json.dumps(fp)
    assert fp["name"] == name and fp["random_weights"] is True and fp["weights"] == "random"
    assert fp["weights_sha256"] is None
    assert first.kind == name.removesuffix("-cnn") and first.device.type == "cpu"
    assert _cnn(name, embedding_dim=8).encode(stack[:1]).shape == (1, 8)


def test_caller_random_stream_untouched(name):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _cnn(name)
    assert torch.equal(torch.rand(3), expected)


def test_pools_over_positions_and_batches(name, stack):
    chips = stack[:3]
    n, h, w = chips.shape[:3]
    pooled = _cnn(name, batch_size=5).encode(chips)
    one_position = chips.reshape(n * h * w, 1, 1, *chips.shape[3:])
    per_position = _cnn(name).encode(one_position).reshape(n, h * w, -1)
    np.testing.assert_allclose(pooled, per_position.mean(axis=1), rtol=1e-4,
                               atol=1e-5 * np.abs(pooled).max())


def test_is_dose_invariant(name, stack):
    enc = _cnn(name)
    emb = enc.encode(stack[:3])
    np.testing.assert_allclose(enc.encode(4.0 * stack[:3]), emb, rtol=1e-4,
                               atol=1e-5 * np.abs(emb).max())


def test_loads_a_state_dict_strictly(name, cnn_file, stack):
    saved = torch.load(cnn_file, weights_only=True)
    loaded, again = _cnn(name, weights=cnn_file), _cnn(name, weights=str(cnn_file))
    for key, value in loaded.network.state_dict().items():
        assert torch.equal(value, saved[key]), key
    emb = loaded.encode(stack)
    np.testing.assert_array_equal(emb, again.encode(stack))
    assert not np.allclose(emb, _cnn(name).encode(stack), rtol=0.05, atol=0)
    fp = loaded.fingerprint()
    assert fp["random_weights"] is False and fp["weights"] == "trained.pt"
    assert len(fp["weights_sha256"]) == 64


def test_mismatched_state_dict_is_a_weights_error(name, tmp_path):
    small = tmp_path / "dim8.pt"
    torch.save(_cnn(name, embedding_dim=8).network.state_dict(), small)
    with pytest.raises(WeightsError, match="wrong shapes"):
        _cnn(name, weights=small)
    state = _cnn(name).network.state_dict()
    dropped = tmp_path / "dropped.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("0.")}, dropped)
    with pytest.raises(WeightsError, match="missing keys"):
        _cnn(name, weights=dropped)
    extra = tmp_path / "extra.pt"
    torch.save({**state, "head.weight": torch.zeros(2)}, extra)
    with pytest.raises(WeightsError, match="unexpected keys"):
        _cnn(name, weights=extra)
    (other,) = set(ENCODERS) - {name}
    other_file = tmp_path / "other.pt"
    torch.save(_cnn(other).network.state_dict(), other_file)
    with pytest.raises(WeightsError, match="do not fit"):
        _cnn(name, weights=other_file)


def test_weights_file_problems(name, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        _cnn(name, weights=tmp_path / "nope.pt")
    with pytest.raises(WeightsError, match="is a folder"):
        _cnn(name, weights=tmp_path)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError):
        _cnn(name, weights=broken)


# ---------------------------------------------------------------- deterministic pooling


@pytest.mark.parametrize("channels, length", [(512, 256), (4096, 256), (768, 256), (1000, 256), (257, 256)])
def test_channel_bins_are_adaptive_average_pooling(channels, length):
    from multimodal_seg.encoders.binpool import channel_bins

    x = torch.from_numpy(np.random.default_rng(channels).gamma(0.5, 10.0, (16, channels)).astype(np.float32))
    pooled = torch.nn.functional.adaptive_avg_pool1d(x.unsqueeze(1), length)[:, 0]
    assert torch.equal(channel_bins(x, length), pooled)  # bitwise, equal bins or not


@pytest.mark.parametrize(("shape", "size"), [((2, 3, 37), 4), ((2, 3, 32), 8), ((2, 5, 9, 13), 4), ((1, 2, 7, 7), 1)])
def test_bin_average_is_adaptive_average_pooling_with_the_same_gradients(shape, size):
    from torch import nn

    from multimodal_seg.encoders.binpool import BinAverage

    ndim = len(shape) - 2
    reference = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}[ndim](size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.randn(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ours, theirs = BinAverage(size, ndim)(x), reference(y)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    weights = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(1))
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_convnets_train_with_deterministic_algorithms_on_cuda():
    # adaptive_avg_pool2d_backward_cuda has no deterministic implementation: `mmseg train`
    # (deterministic by default) failed on GPUs before the pooling became BinAverage
    from multimodal_seg.encoders.convnet import small_convnet

    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            torch.manual_seed(0)
            net = small_convnet(2, (5, 3, 3, 3), 4, 16).cuda()
            x = torch.randn(4, 1, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
            net(x).square().sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    finally:
        torch.use_deterministic_algorithms(False)
