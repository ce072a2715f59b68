"""Torch networks: one per process, compiled with an eager fallback that warns."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from multimodal_seg.encoders import get_encoder
from multimodal_seg.encoders.runtime import NetworkRunner, clear_networks
from multimodal_seg.errors import ParameterError
from multimodal_seg.metrics import adjusted_rand

#: A small spectrum convnet: quick to compile on a CPU.
SMALL = {"weights": "random", "length": 32, "embedding_dim": 8, "batch_size": 16}


def spectra(n: int = 6, seed: int = 0) -> np.ndarray:
    """``n`` chips of 2 x 2 positions of Poisson spectra, 48 channels, with an edge."""
    rng = np.random.default_rng(seed)
    expected = 50.0 * np.exp(-np.linspace(0, 3, 48)) + 20.0 * (np.arange(48) > 30)
    return rng.poisson(expected, size=(n, 2, 2, 48)).astype(np.float32)


def test_encoders_of_one_network_share_it_in_a_process():
    clear_networks()
    first, second = get_encoder("spectrum-cnn", **SMALL), get_encoder("spectrum-cnn", **SMALL)
    assert first.network is second.network  # built once
    other = get_encoder("spectrum-cnn", **{**SMALL, "embedding_dim": 4})
    assert other.network is not first.network  # other options, other network
    np.testing.assert_array_equal(first.encode(spectra()), second.encode(spectra()))


@pytest.mark.slow
def test_compiled_and_eager_embeddings_agree():
    chips = spectra(n=7)  # 28 positions: one full batch of 16 and a padded one
    eager = get_encoder("spectrum-cnn", **SMALL)
    compiled = get_encoder("spectrum-cnn", **SMALL, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would fail the test
        out = compiled.encode(chips)
    assert compiled.runner.fallback is None
    np.testing.assert_allclose(out, eager.encode(chips), rtol=1e-4, atol=1e-5)
    assert compiled.fingerprint()["compile"] is True and "compile" not in eager.fingerprint()


def test_a_failed_compilation_warns_and_runs_eagerly(monkeypatch):
    def broken_compile(module, **kwargs):
        def call(x):
            raise RuntimeError("inductor: no working C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    clear_networks()
    eager = get_encoder("spectrum-cnn", **SMALL)
    compiled = get_encoder("spectrum-cnn", **SMALL, compile=True)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no working C\\+\\+ compiler.*running eagerly"):
        out = compiled.encode(spectra())
    assert "no working C++ compiler" in compiled.runner.fallback
    np.testing.assert_array_equal(out, eager.encode(spectra()))
    clear_networks()


def test_compiled_runs_pad_short_batches_to_one_shape(monkeypatch):
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return x * 2

    # torch.compile stands aside: what reaches the compiled module is recorded
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)
    clear_networks()
    x = torch.arange(6.0).reshape(3, 2)
    compiled = NetworkRunner(Recorder(), key=("recorder",), compile=True, batch_size=8)
    torch.testing.assert_close(compiled(x), 2 * x)  # the padding is dropped
    eager = NetworkRunner(Recorder(), key=("recorder",), compile=False, batch_size=8)
    eager(x)
    assert seen == [(8, 2), (3, 2)]  # compiled: one shape; eager: as given
    clear_networks()


def test_compile_option_is_checked():
    from multimodal_seg.errors import ParameterError

    with pytest.raises(ParameterError, match="compile"):
        get_encoder("resnet50", weights="random", compile="yes")
    with pytest.raises(ParameterError, match="compile"):
        get_encoder("spectrum-cnn", **SMALL, compile="yes")


def test_auto_batches_are_the_encoders_best_for_the_device():
    # On CPUs small batches run faster (docs/design.md, "Batches sized for the device"):
    # "auto" picks each encoder's CPU batch there, its GPU batch on a GPU; a number is kept.
    from multimodal_seg.encoders.device import batch_for

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert batch_for("auto", cpu, cpu=8, accelerator=64) == 8
    assert batch_for("AUTO", gpu, cpu=8, accelerator=64) == 64
    assert batch_for(32, cpu, cpu=8, accelerator=64) == 32
    assert batch_for(np.int64(5), gpu, cpu=8, accelerator=64) == 5
    for bad in (0, -3, True, 2.5, "big", None):
        with pytest.raises(ParameterError) as info:
            batch_for(bad, cpu, cpu=8, accelerator=64)
        assert info.value.where == "batch_size" and "'auto'" in info.value.fix

    expected = {"resnet50": 8, "image-cnn": 64, "diffraction-cnn": 128, "spectrum-cnn": 256}
    for name, batch in expected.items():
        enc = get_encoder(name, weights="random", device="cpu")
        assert enc.batch_size == batch and enc.runner.batch_size == batch
        assert enc.fingerprint()["batch_size"] == batch  # the batch that ran, not "auto"
        assert get_encoder(name, weights="random", device="cpu", batch_size=16).batch_size == 16


def test_a_pipeline_run_records_the_batch_its_encoder_ran():
    import multimodal_seg as mms
    from multimodal_seg.synthetic.phantoms import haadf_phantom

    image = haadf_phantom((128, 128), seed=0).image
    options = {"name": "image-cnn", "weights": "random", "options": {"size": 16}}
    auto = mms.segment(image, config={"encoder": options}, progress=False)
    assert auto.provenance["encoders"]["image"]["batch_size"] == 64
    fixed = mms.segment(image, config={"encoder": {**options, "batch_size": 7}}, progress=False)
    assert fixed.provenance["encoders"]["image"]["batch_size"] == 7
    # the same embeddings to float rounding, so the same communities
    assert adjusted_rand(auto.pixel_labels, fixed.pixel_labels) == 1.0


def _trained_like(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``network`` with batch norms of a trained network's kind: running statistics and
    affine parameters away from the initial identity, so that folding them changes weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 2 * torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.4 * torch.rand(m.num_features, generator=g) - 0.2)
    return network.eval()


@pytest.mark.parametrize(("ndim", "shape"), [(1, (5, 1, 96)), (2, (3, 1, 32, 32))])
def test_folded_networks_compute_the_same_without_their_norms(ndim, shape):
    from multimodal_seg.encoders.convnet import small_convnet
    from multimodal_seg.encoders.runtime import folded

    torch.manual_seed(0)
    network = _trained_like(small_convnet(ndim, (5, 3, 3, 3), 4, 16))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    copy = folded(network)
    norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    assert not any(isinstance(m, norms) for m in copy.modules())  # every norm folded
    assert all(m.bias is not None for m in copy.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(copy(x), network(x), rtol=1e-5, atol=1e-5)
    # the network itself is untouched: weights files and training see its norms
    assert sum(isinstance(m, norms) for m in network.modules()) == 4
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize("length", [96, 100])  # pooled bins equal (96 -> 12 -> 4) or not (100 -> 13)
def test_height_one_copy_of_a_1d_convnet_computes_the_same(length):
    # the 1D convnet's inference copy runs 2D convolutions of height one on channels-last
    # tensors (faster on CPUs), to float rounding the function of the network with its norms
    from multimodal_seg.encoders.convnet import small_convnet
    from multimodal_seg.encoders.heightone import HeightOne, height_one
    from multimodal_seg.encoders.runtime import folded, inference_copy

    torch.manual_seed(0)
    network = _trained_like(small_convnet(1, (5, 3, 3, 3), 4, 16))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    copy = inference_copy(network)
    assert isinstance(copy, HeightOne)
    assert not any(isinstance(m, (torch.nn.Conv1d, torch.nn.BatchNorm1d)) for m in copy.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in copy.modules()) == 4
    x = torch.randn(6, 1, length, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(copy(x), network(x), rtol=1e-5, atol=1e-5)
    # the network keeps its 1D layers and norms (weights files, checkpoints and training use it)
    assert sum(isinstance(m, torch.nn.Conv1d) for m in network.modules()) == 4
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    # what it does not apply to comes back as it is: a network with its norms left (a live
    # network, still training), a 2D convnet, a module that is not a Sequential
    assert height_one(network) is network
    two_d = folded(_trained_like(small_convnet(2, (5, 3, 3, 3), 4, 16)))
    assert height_one(two_d) is two_d
    assert type(inference_copy(two_d)) is type(two_d)
    linear = torch.nn.Linear(3, 2)
    assert height_one(linear) is linear


def test_bin_average_pools_a_1d_signal_given_as_height_one():
    from multimodal_seg.encoders.binpool import BinAverage

    for length, size in ((64, 8), (37, 4)):
        x = torch.randn(2, 3, length, generator=torch.Generator().manual_seed(0))
        flat = BinAverage(size, 1)(x)
        tall = BinAverage(size, 1)(x.unsqueeze(-2).contiguous(memory_format=torch.channels_last))
        assert tall.shape == (2, 3, 1, size)
        torch.testing.assert_close(tall.squeeze(-2), flat, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(flat, torch.nn.AdaptiveAvgPool1d(size)(x), rtol=1e-6, atol=1e-6)


def test_encoders_run_their_folded_network_and_embed_as_the_network_does():
    # what encode() runs has no batch norm left, and embeds as the network with its
    # norms to float rounding; a runner asked not to fold (training) runs the network
    from multimodal_seg.encoders.runtime import folded

    clear_networks()
    enc = get_encoder("spectrum-cnn", **SMALL)
    _trained_like(enc.network)
    clear_networks()  # the runner's folded copy is made from the weights as they are now
    chips = spectra()
    out = enc.encode(chips)  # makes the copy
    executed = []
    hooks = [m.register_forward_hook(lambda m, i, o: executed.append(type(m).__name__))
             for m in enc.network.modules()]
    try:
        np.testing.assert_array_equal(enc.encode(chips), out)
        assert executed == []  # the copy ran, not the network
        reference = NetworkRunner(enc.network, key=("reference",), compile=False, batch_size=16, fold=False)
        items, per_chip = enc.signals(chips)
        with torch.inference_mode():
            plain = reference(enc.prepare(items)).numpy()
        assert "BatchNorm1d" in executed
        np.testing.assert_allclose(out, plain.reshape(len(chips), per_chip, -1).mean(axis=1), rtol=1e-4, atol=1e-5)
    finally:
        for h in hooks:
            h.remove()
    resnet = folded(get_encoder("resnet50", weights="random", resize=None).network)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in resnet.modules())
    clear_networks()
