"""Self-supervised training end to end, on small CPU runs over the built-in phantoms.

A run's loss falls; its checkpoint loads through the encoders' weights path
(same embeddings, its SHA-256 in the fingerprint) and carries the options, the
preprocessing and the training record; a checkpoint that does not fit (another
kind, other options, another calibration) fails with a message that says so; a
run resumes from Lightning's last checkpoint and refuses to resume on other
data; ``segment()`` and the CLI use a checkpoint; and training improves how well
the encoder separates a phantom's regions, on a phantom it did not see.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from multimodal_seg.encoders import get_encoder, load_encoder  # noqa: E402
from multimodal_seg.encoders.checkpoint import read_checkpoint_info  # noqa: E402
from multimodal_seg.encoders.weights import file_sha256  # noqa: E402
from multimodal_seg.errors import OutputError, ParameterError, WeightsError  # noqa: E402
from multimodal_seg.modalities.base import Axis, ModalityData  # noqa: E402
from multimodal_seg.synthetic.multimodal import multimodal_phantom  # noqa: E402
from multimodal_seg.training import train_encoder  # noqa: E402

#: A tiny run: a few seconds on 2 CPU cores.
TINY = {"max_epochs": 3, "items_per_epoch": 256, "batch_size": 64, "val_items": 64,
        "encoder_options": {"embedding_dim": 16, "length": 128}}


@pytest.fixture(scope="module")
def phantom():
    return multimodal_phantom((16, 16), seed=1, pattern_size=16)


@pytest.fixture(scope="module")
def eels(phantom) -> ModalityData:
    return phantom.modalities()["eels"]


@pytest.fixture(scope="module")
def trained(eels, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "eels.ckpt"
    return train_encoder([eels], modality="spectrum", out=out, progress=False, **TINY)


def _chips(modality: ModalityData) -> np.ndarray:
    data = np.asarray(modality.data, dtype=np.float32)
    return data.reshape(data.shape[0] * data.shape[1], 1, 1, *data.shape[2:])


def test_loss_falls_and_the_run_is_recorded(trained):
    history = trained.history
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]
    info = trained.info
    assert info.encoder == "spectrum-cnn" and info.kind == "spectrum"
    assert info.options == {"length": 128, "embedding_dim": 16, "log": True}
    assert "128 channels" in info.preprocessing
    assert info.signal_axes[0][0]["units"] == "eV" and info.signal_axes[0][0]["size"] == 512
    record = info.training
    assert record["config"]["seed"] == 0 and record["config"]["optim"]["max_epochs"] == 3
    assert record["versions"]["torch"] and record["lightning"] and record["seconds"] > 0
    assert record["data"][0]["axes"] and record["best_epoch"] in (0, 1, 2)
    assert (trained.work_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = next((trained.work_dir / "logs").rglob("metrics.csv")).read_text()
    assert "train_loss" in metrics and "val_loss" in metrics


def test_training_leaves_the_processes_shared_random_network_alone(eels, tmp_path):
    # Encoders of one key share one network per process (encoders/runtime.py); training the
    # random-weights encoder must not change what the next random-weights encoder embeds.
    options = {"weights": "random", "length": 128, "embedding_dim": 16, "device": "cpu"}
    chips = _chips(eels)[:20]
    before = get_encoder("spectrum-cnn", **options).encode(chips)
    train_encoder([eels], modality="spectrum", out=tmp_path / "x.ckpt", progress=False,
                  **{**TINY, "max_epochs": 1})
    np.testing.assert_array_equal(get_encoder("spectrum-cnn", **options).encode(chips), before)


def test_the_trained_encoder_embeds_with_its_trained_network(eels, tmp_path, monkeypatch):
    # Training swaps a private copy of the shared network into the encoder; its runner must
    # run that copy, or the encoder would go on embedding with the untrained weights.
    from multimodal_seg.training import train as train_module

    built = []
    original = train_module.trainable_encoder

    def keep(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(train_module, "trainable_encoder", keep)
    result = train_encoder([eels], modality="spectrum", out=tmp_path / "x.ckpt", progress=False,
                           **{**TINY, "max_epochs": 1})
    encoder = built[0][0]
    assert encoder.runner.network is encoder.network
    chips = _chips(eels)[:20]
    reloaded = load_encoder(result.checkpoint, device="cpu")
    np.testing.assert_allclose(encoder.encode(chips), reloaded.encode(chips), rtol=1e-5, atol=1e-6)


def test_checkpoint_round_trips_through_the_weights_path(trained, eels):
    path = trained.checkpoint
    enc = get_encoder("spectrum-cnn", weights=str(path), length=128, embedding_dim=16, device="cpu")
    assert load_encoder(path, device="cpu").fingerprint() == enc.fingerprint()
    state = torch.load(path, weights_only=True)["state_dict"]
    for key, value in enc.network.state_dict().items():
        assert torch.equal(value, state[key]), key
    fp = enc.fingerprint()
    assert fp["weights_sha256"] == file_sha256(path) and fp["random_weights"] is False
    chips = _chips(eels)[:20]
    random = get_encoder("spectrum-cnn", weights="random", length=128, embedding_dim=16, device="cpu")
    assert not np.allclose(enc.encode(chips), random.encode(chips), rtol=0.05)
    enc.set_signal_axes(eels.axes[2:])  # the calibration it was trained on


def test_a_checkpoint_that_does_not_fit_fails_clearly(trained, eels):
    path = trained.checkpoint
    with pytest.raises(WeightsError, match="trained on spectrum data"):
        get_encoder("diffraction-cnn", weights=path, device="cpu")
    with pytest.raises(WeightsError, match=r"length=128 \(here 256\)"):
        get_encoder("spectrum-cnn", weights=path, embedding_dim=16, device="cpu")
    with pytest.raises(WeightsError, match=r"length=128 \(here 64\)"):
        load_encoder(path, length=64)
    enc = get_encoder("spectrum-cnn", weights=path, length=128, embedding_dim=16, device="cpu")
    other = Axis("energy", 512, 10.0, 0.0, "eV")  # an EDS range, not this EELS window
    with pytest.raises(WeightsError, match="other energies"):
        enc.set_signal_axes([other])


def test_segment_uses_a_checkpoint_and_fingerprints_it(trained, phantom):
    from multimodal_seg import segment

    mods = phantom.modalities()
    seg = segment({"eels": mods["eels"]}, weights=str(trained.checkpoint), progress=False, consensus=0)
    fp = seg.provenance["encoders"]["eels"]
    assert fp["name"] == "spectrum-cnn" and fp["weights_sha256"] == file_sha256(trained.checkpoint)
    assert fp["length"] == 128  # the checkpoint's options, not the encoder's defaults
    assert "trained checkpoint" in seg.provenance["encoder_choice"]
    same = segment({"eels": mods["eels"]}, encoder_options={"eels": {"weights": str(trained.checkpoint)}},
                   progress=False, consensus=0)
    np.testing.assert_array_equal(same.scan_labels["eels"], seg.scan_labels["eels"])
    with pytest.raises(ParameterError, match="no modalities here can use it"):
        segment({"diffraction": mods["diffraction"]}, weights=str(trained.checkpoint), progress=False)
    with pytest.raises(ParameterError, match="given twice"):
        segment({"eels": mods["eels"]}, weights=str(trained.checkpoint),
                encoder_options={"eels": {"weights": str(trained.checkpoint)}}, progress=False)


def test_resume_continues_and_checks_the_run(eels, tmp_path):
    out = tmp_path / "eels.ckpt"
    first = train_encoder([eels], modality="spectrum", out=out, progress=False, **{**TINY, "max_epochs": 2})
    with pytest.raises(ParameterError, match="earlier training run"):
        train_encoder([eels], modality="spectrum", out=out, progress=False, **TINY)
    with pytest.raises(ParameterError, match="other settings or data: optim.lr"):
        train_encoder([eels], modality="spectrum", out=out, progress=False, resume=True, lr=0.01, **TINY)
    more = train_encoder([eels], modality="spectrum", out=out, progress=False, resume=True, **TINY)
    assert [h["epoch"] for h in more.history] == [0, 1, 2]
    assert more.history[:2] == first.history
    assert json.loads((tmp_path / "eels-training" / "run.json").read_text())["kind"] == "spectrum"


def test_same_data_config_and_seed_give_the_same_weights(eels, trained, tmp_path):
    again = train_encoder([eels], modality="spectrum", out=tmp_path / "again.ckpt", progress=False, **TINY)
    assert again.history == trained.history
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (again.checkpoint, trained.checkpoint))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_requests_fail_before_training(eels, tmp_path):
    with pytest.raises(ParameterError, match="not a kind of data"):
        train_encoder([eels], modality="eels", out=tmp_path / "x.ckpt")
    with pytest.raises(ParameterError, match="has no network to train"):
        train_encoder([eels], modality="spectrum", out=tmp_path / "x.ckpt", encoder="spectrum-pca")
    with pytest.raises(ParameterError, match="embeds diffraction data"):
        train_encoder([eels], modality="spectrum", out=tmp_path / "x.ckpt", encoder="diffraction-cnn")
    with pytest.raises(OutputError, match="is a folder"):
        train_encoder([eels], modality="spectrum", out=tmp_path)
    with pytest.raises(ParameterError, match="ignored"):
        train_encoder([eels], modality="spectrum", out=tmp_path / "x.ckpt",
                      config={"augment": {"image": {"flips": False}}})
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_trains_on_a_study_and_reports(tmp_path, eels):
    from typer.testing import CliRunner

    from multimodal_seg import stages
    from multimodal_seg.cli import app
    from multimodal_seg.pipeline.study import Study

    stages.add_modalities(Study.open(tmp_path / "run" / "study.zarr"), {"eels": eels})
    out = tmp_path / "si.ckpt"
    result = CliRunner().invoke(app, ["train", str(tmp_path / "run"), "--modality", "spectrum", "--out",
                                      str(out), "--epochs", "1", "--items-per-epoch", "128",
                                      "--batch-size", "64", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "checkpoint written" in result.output and read_checkpoint_info(out).encoder == "spectrum-cnn"
    bad = CliRunner().invoke(app, ["train", str(tmp_path / "run"), "--modality", "eels", "--out", str(out)])
    assert bad.exit_code == 2 and "not a kind of data" in bad.output


def _purity(embeddings: np.ndarray, truth: np.ndarray, k: int = 15) -> float:
    """Fraction of each chip's k nearest neighbours (cosine, after the graph stage's
    standardisation and PCA) that share its true region."""
    from multimodal_seg.graphs.knn import cosine_neighbours, reduce_features

    reduced = reduce_features(embeddings, n_pcs=30)
    _, idx = cosine_neighbours(reduced, reduced, k + 1)
    return float((truth[idx[:, 1:]] == truth[:, None]).mean())


def test_training_separates_an_unseen_phantom_better_than_random_weights(tmp_path):
    """EELS of one phantom specimen trains ``spectrum-cnn``; on another specimen (another seed)
    its embeddings separate the regions better than the same network untrained.  Measured
    on 2 cores: kNN purity 0.57 untrained, 0.69-0.71 trained (4 epochs, a few seconds)."""
    train_ph = multimodal_phantom((24, 24), seed=1, pattern_size=16)
    test_ph = multimodal_phantom((24, 24), seed=2, pattern_size=16)
    options = {"embedding_dim": 16, "length": 128}
    result = train_encoder([train_ph.modalities()["eels"]], modality="spectrum", out=tmp_path / "eels.ckpt",
                           progress=False, max_epochs=4, items_per_epoch=512, batch_size=128, val_items=128,
                           encoder_options=options)
    chips, truth = _chips(test_ph.modalities()["eels"]), test_ph.truth.ravel()
    untrained = _purity(get_encoder("spectrum-cnn", weights="random", device="cpu", **options).encode(chips), truth)
    trained = _purity(load_encoder(result.checkpoint, device="cpu").encode(chips), truth)
    assert trained >= untrained + 0.05, (untrained, trained)


def test_images_train_image_cnn_or_fine_tune_resnet50_where_micronet_is_found(tmp_path, small_phantom):
    """Without MicroNet weights the image encoder trained is ``image-cnn``; with the file in the
    weights folder (here a state dict of the same layout standing in for it: the real one
    cannot be downloaded here) ResNet50 is fine-tuned from it, and the checkpoint embeds
    images through ``segment(weights=...)`` with the options it was trained with."""
    import torchvision

    from multimodal_seg import segment
    from multimodal_seg.encoders.weights import weights_dir, weights_info
    from multimodal_seg.training import load_train_config, trainable_encoder

    encoder, reason = trainable_encoder("image", load_train_config())
    assert encoder.name == "image-cnn" and "no MicroNet weights" in reason
    folder = weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet50().state_dict(), folder / weights_info("micronet").file_name)
    result = train_encoder([small_phantom.image], modality="image", out=tmp_path / "resnet.ckpt", progress=False,
                           max_epochs=1, items_per_epoch=16, batch_size=8, val_items=8,
                           encoder_options={"resize": 32, "layer": "layer2"})
    info = result.info
    assert info.encoder == "resnet50" and info.options == {"layer": "layer2", "resize": 32}
    assert "MicroNet" in info.training["reason"] and info.training["initial_weights"] == "micronet"
    seg = segment(small_phantom.image, weights=str(result.checkpoint), progress=False, consensus=0)
    fp = seg.provenance["encoders"]["image"]
    assert (fp["name"], fp["layer"], fp["resize"]) == ("resnet50", "layer2", 32)
    assert fp["weights_sha256"] == file_sha256(result.checkpoint)
    with pytest.raises(WeightsError, match="layer='layer2'"):
        get_encoder("resnet50", weights=str(result.checkpoint), resize=32, device="cpu")


def test_the_training_guides_example_runs(tmp_path, capsys):
    """docs/training.md trains spectrum-cnn on one phantom and segments another; it must run as written."""
    import re

    guide = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    section = guide[guide.index("### Example"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"out": tmp_path}
    exec(compile(code, "training.md (example)", "exec"), namespace)
    seg, result = namespace["seg"], namespace["result"]
    assert seg.provenance["encoders"]["eels"]["weights_sha256"] == file_sha256(result.checkpoint)
    assert "spectrum-cnn" in capsys.readouterr().out
