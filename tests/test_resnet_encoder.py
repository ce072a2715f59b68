"""ResNet50 encoder, weights resolution and loading, and device selection (CPU only).

Weights are fabricated: torchvision ResNet50 state dicts with seeded
perturbations, saved under the MicroNet file name.  Nothing touches the network.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from multimodal_seg.encoders.device import (
    amp_dtype,
    autocast_context,
    describe_device,
    memory_format,
    pick_device,
)
from multimodal_seg.encoders import resolve_weights, weights_dir
from multimodal_seg.encoders.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet50Encoder, preprocess_chips
from multimodal_seg.encoders.weights import (
    KNOWN_WEIGHTS,
    file_sha256,
    find_weights,
    known_weights,
    load_state_dict,
)
from multimodal_seg.errors import InputError, ParameterError, WeightsError

MICRONET_FILE = "resnet50_pretrained_microscopynet_v1.1.pth.tar"
MICRONET_URL = (
    "https://nasa-public-data.s3.amazonaws.com/microscopy_segmentation_models/" + MICRONET_FILE
)


def _perturbed_resnet50_state(seed: int) -> dict[str, torch.Tensor]:
    """A ResNet50 state dict that differs from torchvision's default init (seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = torchvision.models.resnet50(weights=None).state_dict()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        value = value.clone()
        if value.is_floating_point():
            if key.endswith("running_var"):
                value.uniform_(0.5, 1.5, generator=gen)
            else:  # relative change keeps activations in a sane range
                value.mul_(1 + 0.1 * torch.randn(value.shape, generator=gen))
                value.add_(0.01 * torch.randn(value.shape, generator=gen))
        out[key] = value
    return out


@pytest.fixture(scope="module")
def state_a() -> dict[str, torch.Tensor]:
    return _perturbed_resnet50_state(1)


@pytest.fixture(scope="module")
def state_b() -> dict[str, torch.Tensor]:
    return _perturbed_resnet50_state(2)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty weights folder and torch hub folder, so the real caches never count."""
    folder = tmp_path / "weights"
    monkeypatch.setenv("MMSEG_WEIGHTS_DIR", str(folder))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return folder


@pytest.fixture(scope="module")
def saved_a(tmp_path_factory: pytest.TempPathFactory, state_a) -> Path:
    """``state_a`` saved once under the MicroNet file name (read-only for tests)."""
    path = tmp_path_factory.mktemp("micronet") / MICRONET_FILE
    torch.save(state_a, path)
    return path


@pytest.fixture
def micronet_file(saved_a: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The weights folder holds the MicroNet file (fabricated: ``state_a``)."""
    monkeypatch.setenv("MMSEG_WEIGHTS_DIR", str(saved_a.parent))
    return saved_a


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    return np.random.default_rng(0).random((5, 32, 32), dtype=np.float32)


def _encoder(weights, **options) -> ResNet50Encoder:
    options = {"resize": None, "device": "cpu", **options}
    return ResNet50Encoder(weights=weights, **options)


# ---------------------------------------------------------------- preprocessing


def test_preprocess_constant_chip_gives_imagenet_normalised_value():
    x = preprocess_chips(np.full((2, 16, 16), 0.5, dtype=np.float32), resize=24)
    assert x.shape == (2, 3, 24, 24) and x.dtype == torch.float32
    for c in range(3):
        expected = (0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(x[:, c], torch.full((2, 24, 24), expected), atol=1e-6)


def test_preprocess_clips_and_keeps_size_without_resize():
    chips = np.stack([np.full((8, 8), 2.0), np.full((8, 8), -1.0)]).astype(np.float32)
    x = preprocess_chips(chips, resize=None)
    assert x.shape == (2, 3, 8, 8)
    for c in range(3):
        assert torch.allclose(x[0, c], torch.tensor((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))
        assert torch.allclose(x[1, c], torch.tensor(-IMAGENET_MEAN[c] / IMAGENET_STD[c]))


# ---------------------------------------------------------------- loading


def test_micronet_file_loads_strictly(micronet_file, state_a, chips):
    enc = _encoder("micronet")
    conv1 = enc.network[0].weight
    assert torch.equal(conv1, state_a["conv1.weight"])
    bn = enc.network[-3][-1].bn3  # last block of layer4
    assert torch.equal(bn.running_var, state_a["layer4.2.bn3.running_var"])
    fp = enc.fingerprint()
    assert fp == {
        "name": "resnet50",
        "weights": "micronet",
        "weights_sha256": hashlib.sha256(micronet_file.read_bytes()).hexdigest(),
        "layer": "layer4",
        "resize": None,
        "batch_size": enc.batch_size,
        "device": "cpu",
        "version": 2,
    }
    emb = enc.encode(chips)
    assert emb.shape == (5, 2048) and emb.dtype == np.float32 and enc.dim == 2048
    assert np.isfinite(emb).all()


def test_wrapped_checkpoint_with_module_prefix_loads(micronet_file, tmp_path, state_a, chips):
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state_a.items()}, "epoch": 7}, ckpt)
    wrapped = _encoder(ckpt)
    plain = _encoder("micronet")
    assert torch.equal(wrapped.network[0].weight, state_a["conv1.weight"])
    assert wrapped.fingerprint()["weights"] == "ckpt.pth"
    np.testing.assert_array_equal(wrapped.encode(chips), plain.encode(chips))


def test_model_wrapper_and_string_path(tmp_path, state_a):
    ckpt = tmp_path / "model_ckpt.pt"
    torch.save({"model": state_a, "optimizer": {"lr": torch.tensor(0.1)}}, ckpt)
    sd = load_state_dict(str(ckpt))
    assert set(sd) == set(state_a) and torch.equal(sd["fc.bias"], state_a["fc.bias"])


def test_embeddings_deterministic_and_depend_on_weights(micronet_file, tmp_path, state_b, chips):
    other = tmp_path / "other.pth"
    torch.save(state_b, other)
    first, second = _encoder("micronet"), _encoder("micronet")
    e1, e2 = first.encode(chips), second.encode(chips)
    np.testing.assert_array_equal(e1, e2)
    third = _encoder(other)
    assert not np.allclose(e1, third.encode(chips), atol=1e-3)
    assert first.fingerprint()["weights_sha256"] != third.fingerprint()["weights_sha256"]


def test_batches_do_not_change_embeddings(micronet_file, chips):
    whole = _encoder("micronet", batch_size=64).encode(chips)
    pieces = _encoder("micronet", batch_size=2).encode(chips)
    # CPU kernels differ with batch size (float rounding only); mixing up chips
    # between batches would give differences of the order of the values
    np.testing.assert_allclose(pieces, whole, rtol=1e-3, atol=1e-4 * np.abs(whole).max())
    assert not np.allclose(pieces[0], pieces[1], rtol=1e-2)


def test_layer3_gives_1024_features(micronet_file, chips):
    enc = _encoder("micronet", layer="layer3")
    assert enc.dim == 1024
    assert enc.encode(chips[:2]).shape == (2, 1024)
    assert enc.fingerprint()["layer"] == "layer3"


def test_resize_to_64_px(micronet_file, chips):
    emb = _encoder("micronet", resize=64).encode(chips[:2])
    assert emb.shape == (2, 2048) and np.isfinite(emb).all()


def test_empty_chip_stack(micronet_file):
    assert _encoder("micronet").encode(np.zeros((0, 32, 32), np.float32)).shape == (0, 2048)


def test_random_weights_are_seeded_and_marked(chips):
    rng_before = torch.random.get_rng_state()
    a, b = _encoder("random"), _encoder("random")
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # caller's RNG untouched
    np.testing.assert_array_equal(a.encode(chips[:2]), b.encode(chips[:2]))
    fp = a.fingerprint()
    assert fp["weights"] == "random" and fp["weights_sha256"] is None
    assert "random_init_seed" in fp


def test_random_is_never_the_silent_default(isolated_caches):
    with pytest.raises(WeightsError):
        _encoder(None)  # None means the default, MicroNet, which is absent here


# ---------------------------------------------------------------- weights errors


def test_missing_micronet_offline_says_what_to_put_where(isolated_caches):
    with pytest.raises(WeightsError) as info:
        resolve_weights("micronet")
    msg = str(info.value)
    assert MICRONET_FILE in msg
    assert str(isolated_caches) in msg
    assert MICRONET_URL in msg
    assert "allow_download=True" in msg and "--download-weights" in msg


def test_truncated_file_is_rejected(isolated_caches, saved_a):
    truncated = isolated_caches / MICRONET_FILE
    isolated_caches.mkdir()
    data = saved_a.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as info:
        _encoder("micronet")
    assert str(truncated) in str(info.value)


def test_garbage_and_non_state_dict_files_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(WeightsError, match="garbage.pth"):
        load_state_dict(garbage)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_state_dict(listing)


def test_wrong_architecture_names_offending_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError) as info:
        _encoder(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "layer1.0.conv3.weight" in msg  # missing: resnet18 blocks have no conv3
    assert "layer1.0.conv1.weight (64, 64, 3, 3) (expected (64, 64, 1, 1))" in msg


def test_unknown_weights_name_lists_known_names():
    with pytest.raises(WeightsError) as info:
        resolve_weights("micronett")
    msg = str(info.value)
    for name in ("micronet", "micronet-v1.0", "imagenet-micronet", "imagenet-micronet-v1.0", "imagenet"):
        assert name in msg


def test_nonexistent_local_path(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(str(tmp_path / "nope.pth"))


# ---------------------------------------------------------------- download


def test_download_only_when_allowed_and_atomic(isolated_caches, monkeypatch, state_a, tmp_path):
    source = tmp_path / "served.pth"
    torch.save(state_a, source)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst)))
        assert not (isolated_caches / MICRONET_FILE).exists()  # final name appears only at the end
        Path(dst).write_bytes(source.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(WeightsError):
        resolve_weights("micronet")
    assert calls == []

    resolved = resolve_weights("micronet", allow_download=True, progress=False)
    assert [url for url, _ in calls] == [MICRONET_URL]
    tmp_dst = calls[0][1]
    assert tmp_dst.parent == isolated_caches and tmp_dst.name != MICRONET_FILE
    assert resolved.path == isolated_caches / MICRONET_FILE
    assert resolved.sha256 == file_sha256(source)
    assert sorted(p.name for p in isolated_caches.iterdir()) == [MICRONET_FILE]

    # now cached: no second download
    resolve_weights("micronet", allow_download=True)
    assert len(calls) == 1


def test_failed_download_leaves_nothing(isolated_caches, monkeypatch):
    def failing_download(url, dst, hash_prefix=None, progress=True):
        Path(dst).write_bytes(b"partial")
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    with pytest.raises(WeightsError, match="Network is unreachable") as info:
        resolve_weights("micronet-v1.0", allow_download=True, progress=False)
    assert "resnet50_pretrained_microscopynet_v1.0.pth.tar" in str(info.value)
    assert list(isolated_caches.iterdir()) == []


# ---------------------------------------------------------------- finding


def test_weights_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MMSEG_WEIGHTS_DIR", str(tmp_path / "w"))
    assert weights_dir() == tmp_path / "w"
    monkeypatch.delenv("MMSEG_WEIGHTS_DIR")
    assert weights_dir().parts[-2:] == ("multimodal_seg", "weights")


def test_known_weights_table():
    assert list(KNOWN_WEIGHTS) == list(known_weights())
    table = known_weights()
    assert table["micronet"].file_name == MICRONET_FILE and table["micronet"].url == MICRONET_URL
    assert table["micronet"].licence == "MIT"
    imagenet = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    assert table["imagenet"].url == imagenet.url
    assert table["imagenet"].file_name == imagenet.url.rsplit("/", 1)[-1]


def test_imagenet_found_in_torch_hub_cache(tmp_path):
    assert find_weights("imagenet") is None
    name = known_weights()["imagenet"].file_name
    hub_file = tmp_path / "hub" / "checkpoints" / name
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(b"not loaded here")
    assert find_weights("imagenet") == hub_file
    resolved = resolve_weights("imagenet")
    assert resolved.path == hub_file and resolved.name == "imagenet"


def test_find_weights_in_weights_dir(micronet_file):
    assert find_weights("micronet") == micronet_file
    assert find_weights("micronet-v1.0") is None


# ---------------------------------------------------------------- options, input, device


@pytest.mark.parametrize(
    "options",
    [{"layer": "layer5"}, {"resize": 0}, {"resize": 22.5}, {"batch_size": 0}, {"device": "gpu"}],
)
def test_bad_options(options):
    with pytest.raises(ParameterError):
        ResNet50Encoder(weights="random", **options)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 8, 9), np.float32),
        np.zeros((8, 8), np.float32),
        np.zeros((2, 8, 8), np.uint8),
        np.full((1, 8, 8), np.nan, np.float32),
    ],
)
def test_bad_chips(bad):
    enc = _encoder("random", layer="layer1")
    with pytest.raises(InputError):
        enc.encode(bad)


def test_cpu_path_uses_float32_without_autocast():
    cpu = pick_device("cpu")
    assert cpu == torch.device("cpu")
    assert amp_dtype(cpu) is None
    # channels-last on CPUs too (oneDNN's convolutions are faster so), with the same results
    assert memory_format(cpu) == torch.channels_last
    from multimodal_seg.encoders.convnet import small_convnet

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = small_convnet(2, kernels=(5, 3, 3, 3), pooled=4, embedding_dim=8).eval()
        x = torch.rand(4, 1, 32, 32)
    with torch.inference_mode():
        plain = net(x)
        last = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(last, plain, rtol=1e-5, atol=1e-5)
    with autocast_context(cpu):
        assert not torch.is_autocast_enabled("cpu")
    info = describe_device("cpu")
    assert info["device"] == "cpu" and info["precision"] == "float32"
    assert {"torch", "device_name", "cuda_available", "threads"} <= set(info)


def test_auto_device_is_available():
    assert pick_device("auto").type in {"cuda", "mps", "cpu"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_a_parameter_error():
    with pytest.raises(ParameterError, match="device='cpu'"):
        pick_device("cuda")
