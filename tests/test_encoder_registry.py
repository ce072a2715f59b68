"""Encoder registry, entry-point plugins and the choice made by ``encoder="auto"``."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest

from multimodal_seg.encoders import (
    Encoder,
    available_encoders,
    get_encoder,
    register_encoder,
    registry,
    resolve_auto,
)
from multimodal_seg.encoders.registry import encoder_options
from multimodal_seg.errors import ParameterError

MICRONET_FILE = "resnet50_pretrained_microscopynet_v1.1.pth.tar"


class DummyEncoder(Encoder):
    name = "dummy"

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = scale

    @property
    def dim(self) -> int:
        return 2

    def encode(self, chips: np.ndarray) -> np.ndarray:
        means = chips.mean(axis=(1, 2)) * self.scale
        return np.stack([means, chips.std(axis=(1, 2))], axis=1).astype(np.float32)

    def fingerprint(self) -> dict:
        return {"name": self.name, "scale": self.scale}


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Private registry state per test, no installed plugins, empty weights folder."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_broken_plugins", {})
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: importlib.metadata.EntryPoints(()))
    monkeypatch.setenv("MMSEG_WEIGHTS_DIR", str(tmp_path / "weights"))


def test_builtins_are_listed():
    names = available_encoders()
    assert {"resnet50", "fourier"} <= set(names)
    assert names == sorted(names)


def test_register_and_get():
    register_encoder("dummy", DummyEncoder)
    enc = get_encoder("dummy", scale=2.0)
    assert isinstance(enc, DummyEncoder) and enc.scale == 2.0
    assert "dummy" in available_encoders()
    out = enc.encode(np.full((3, 4, 4), 0.5, np.float32))
    assert out.shape == (3, 2) and np.allclose(out[:, 0], 1.0)


def test_register_as_decorator_and_case_insensitive():
    @register_encoder("Decorated")
    class Decorated(DummyEncoder):
        name = "decorated"

    assert isinstance(get_encoder("decorated"), Decorated)
    assert isinstance(get_encoder("DECORATED"), Decorated)


def test_name_clash_needs_replace():
    register_encoder("dummy", DummyEncoder)
    register_encoder("dummy", DummyEncoder)  # same factory again: harmless

    class Other(DummyEncoder):
        pass

    with pytest.raises(ParameterError, match="already registered"):
        register_encoder("dummy", Other)
    register_encoder("dummy", Other, replace=True)
    assert type(get_encoder("dummy")) is Other


def test_non_callable_factory_rejected():
    with pytest.raises(ParameterError, match="not callable"):
        register_encoder("bad", 42)


def test_unknown_name_lists_available():
    with pytest.raises(ParameterError) as info:
        get_encoder("resnet5")
    msg = str(info.value)
    assert "resnet5" in msg and "resnet50" in msg and "fourier" in msg


def test_unknown_option_names_it_and_the_accepted_ones():
    register_encoder("dummy", DummyEncoder)
    with pytest.raises(ParameterError) as info:
        get_encoder("dummy", scael=3)
    msg = str(info.value)
    assert "scael" in msg and "scale" in msg


def test_unknown_resnet_option_fails_before_building_the_model():
    with pytest.raises(ParameterError) as info:
        get_encoder("resnet50", weight="micronet")
    msg = str(info.value)
    assert "'weight'" in msg
    for option in ("weights", "allow_download", "resize", "batch_size", "device", "layer"):
        assert option in msg


def test_encoder_options_lists_constructor_keywords():
    register_encoder("dummy", DummyEncoder)
    assert encoder_options("dummy") == ["scale"]
    assert {"weights", "allow_download", "resize", "batch_size", "device", "layer"} <= set(
        encoder_options("resnet50")
    )
    with pytest.raises(ParameterError):
        encoder_options("nope")


def test_kwargs_factory_type_error_becomes_parameter_error():
    def factory(**options):
        return DummyEncoder(**options)

    register_encoder("kw", factory)
    assert isinstance(get_encoder("kw", scale=3.0), DummyEncoder)
    with pytest.raises(ParameterError, match="colour"):
        get_encoder("kw", colour="red")


def test_factory_must_return_an_encoder():
    register_encoder("notenc", lambda: object())
    with pytest.raises(ParameterError, match="not an Encoder"):
        get_encoder("notenc")


def test_builtin_that_cannot_be_imported_is_a_parameter_error(monkeypatch):
    registry._registry["ghost"] = "multimodal_seg.encoders.no_such_module:Ghost"
    with pytest.raises(ParameterError, match="could not be imported"):
        get_encoder("ghost")


def test_resnet50_via_registry():
    from multimodal_seg.encoders.resnet import ResNet50Encoder

    enc = get_encoder("resnet50", weights="random", resize=None, device="cpu", layer="layer2")
    assert isinstance(enc, ResNet50Encoder) and enc.dim == 512


# ---------------------------------------------------------------- plugins

PLUGIN_SOURCE = '''
import numpy as np
from multimodal_seg.encoders import Encoder

class PluginEncoder(Encoder):
    name = "plug"
    def __init__(self, *, k: int = 3):
        self.k = k
    @property
    def dim(self):
        return self.k
    def encode(self, chips):
        return np.zeros((len(chips), self.k), np.float32)
    def fingerprint(self):
        return {"name": self.name, "k": self.k}
'''


def test_entry_point_plugins_are_discovered_lazily(monkeypatch, tmp_path):
    (tmp_path / "mmseg_fake_plugin.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mmseg_fake_plugin", raising=False)
    group = registry.ENTRY_POINT_GROUP
    eps = [
        importlib.metadata.EntryPoint("plug", "mmseg_fake_plugin:PluginEncoder", group),
        importlib.metadata.EntryPoint("brokenplug", "mmseg_no_such_plugin:Encoder", group),
        importlib.metadata.EntryPoint("resnet50", "mmseg_fake_plugin:PluginEncoder", group),
    ]
    calls = []

    def fake_entry_points(**kw):
        calls.append(kw)
        return [ep for ep in eps if ep.group == kw.get("group")]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    register_encoder("dummy", DummyEncoder)
    assert calls == []  # registering does not scan plugins

    with pytest.warns(UserWarning) as record:
        names = available_encoders()
    messages = " ".join(str(w.message) for w in record)
    assert "brokenplug" in messages  # broken plugin named, not a crash
    assert "resnet50" in messages  # clash with a built-in is reported, built-in kept
    assert "plug" in names and "brokenplug" not in names
    assert calls == [{"group": group}]

    enc = get_encoder("plug", k=5)
    assert enc.dim == 5 and enc.encode(np.zeros((2, 4, 4), np.float32)).shape == (2, 5)
    assert len(calls) == 1  # scanned once
    assert registry._registry["resnet50"] != registry._registry["plug"]

    with pytest.raises(ParameterError, match="failed to load"):
        get_encoder("brokenplug")


# ---------------------------------------------------------------- auto


def test_auto_without_weights_uses_fourier(tmp_path):
    name, options, reason = resolve_auto()
    assert (name, options) == ("fourier", {})
    assert str(tmp_path / "weights") in reason and MICRONET_FILE in reason


def test_auto_with_micronet_file_uses_resnet(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / MICRONET_FILE).write_bytes(b"placeholder")  # presence is what counts here
    name, options, reason = resolve_auto()
    assert (name, options) == ("resnet50", {"weights": "micronet"})
    assert str(folder / MICRONET_FILE) in reason


def test_auto_with_user_weights_uses_resnet(tmp_path):
    weights = tmp_path / "mine.pth"
    name, options, _ = resolve_auto(weights=weights)
    assert name == "resnet50" and options == {"weights": weights}


def test_run_device_and_batch_reach_every_torch_encoder_and_are_never_ignored():
    """``device`` and ``batch_size`` reach a spectrum modality's torch encoder, not only the
    image's; a device asked for where no encoder uses torch is said to be unused, not dropped
    silently (not refused: one batch config serves specimens with and without torch encoders)."""
    import warnings

    from multimodal_seg.config import EncoderConfig
    from multimodal_seg.encoders.choice import choose_encoders
    from multimodal_seg.synthetic.multimodal import multimodal_phantom

    phantom = multimodal_phantom((16, 16), seed=0, pattern_size=16)
    modalities = {name: m for name, m in phantom.modalities().items() if name in ("haadf", "eels")}
    chosen = choose_encoders(EncoderConfig(name="fourier", device="cpu", batch_size=16,
                                           options={"eels": {"weights": "random"}}),
                             modalities, {"eels": "spectrum-cnn"})
    eels = chosen["eels"][0]
    assert eels.device.type == "cpu" and eels.batch_size == 16
    with pytest.warns(UserWarning, match="device 'cuda' is for torch encoders, and none here uses one "
                                         r"\(fourier for haadf, spectrum-pca for eels\): not used"):
        choose_encoders(EncoderConfig(name="fourier", device="cuda"), modalities)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_encoders(EncoderConfig(name="fourier"), modalities)  # device "auto": nothing asked
