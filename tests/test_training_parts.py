"""The parts of self-supervised training, each on its own (no training run here).

Configs (shipped files valid, keys named in errors, settings for another kind
refused), the augmentations (what physics each keeps: counts, positions, ranges;
the same generator seed gives the same views), the objectives (their values in
the cases they are built for: agreeing views, collapse), and the streamed data
(neighbour pairs, reads that never take a whole modality, studies as sources).
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from multimodal_seg.errors import InputError, ParameterError  # noqa: E402
from multimodal_seg.modalities.base import Axis, ModalityData  # noqa: E402
from multimodal_seg.training.augment import augment_images, augment_pair, augment_patterns, augment_spectra  # noqa: E402
from multimodal_seg.training.config import (  # noqa: E402
    DiffractionAugment, ImageAugment, SpectrumAugment, TrainConfig, check_augment_kind, load_train_config)
from multimodal_seg.training.data import ChipStream, ValidationBatches, ViewBatches, chip_sources, read_sources  # noqa: E402
from multimodal_seg.training.objective import byol_loss, ema_momentum, vicreg_loss  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "training"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_training_configs_are_valid(name):
    assert isinstance(load_train_config(CONFIGS / name), TrainConfig)


def test_cpu_config_writes_out_the_defaults():
    assert load_train_config(CONFIGS / "cpu.yaml") == TrainConfig()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ParameterError, match="unknown key 'optim.epochs'"):
        load_train_config({"optim": {"epochs": 3}})
    with pytest.raises(ParameterError, match="augment.spectrum.dose"):
        load_train_config({"augment": {"spectrum": {"dose": [0.5, 0.2]}}})
    with pytest.raises(ParameterError, match="unknown option 'epochs'"):
        load_train_config(None, epochs=3)
    with pytest.raises(ParameterError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")
    path = tmp_path / "t.yaml"
    path.write_text("optim: {max_epochs: 3}\nseed: 4\n")
    cfg = load_train_config(path, batch_size=32)
    assert (cfg.optim.max_epochs, cfg.optim.batch_size, cfg.seed) == (3, 32, 4)


def test_augment_settings_for_another_kind_are_refused():
    cfg = load_train_config({"augment": {"diffraction": {"max_rotation": 30}}})
    check_augment_kind(cfg, "diffraction")
    with pytest.raises(ParameterError, match="ignored"):
        check_augment_kind(cfg, "spectrum")


# ---------------------------------------------------------------- augmentations


def _edge_spectra(n: int = 64, channels: int = 200, onset: int = 100) -> torch.Tensor:
    """Counts: a power-law background and a sharp edge at channel ``onset``."""
    e = torch.arange(channels, dtype=torch.float32) + 50
    shape = 2000 * (e / 50) ** -3 + 300 * (torch.arange(channels) >= onset)
    return shape.expand(n, channels).clone()


def test_spectrum_views_move_the_edge_by_at_most_max_shift():
    spectra = _edge_spectra()
    opts = SpectrumAugment(max_shift=2.0, tilt=0.0, dose=(1000.0, 1000.0))  # dose high: little noise
    view = augment_spectra(spectra, opts, _gen()) / 1000.0
    jump = (view[:, 102:] .mean(dim=1) - view[:, 60:98].mean(dim=1))
    assert (jump > 200).all()  # the edge is still there
    # the edge onset (half height between the channels around it) lies within 2 channels of 100
    step = view[:, 95:106] - view[:, 94:105]
    onset = 95 + step.argmax(dim=1)
    assert ((onset >= 98) & (onset <= 102)).all()
    assert len(set(onset.tolist())) > 1  # it does move


def test_spectrum_views_are_counts_with_the_dose_and_tilt_asked_for():
    spectra = _edge_spectra(n=400)
    opts = SpectrumAugment(max_shift=0.0, tilt=0.0, dose=(0.25, 0.25))
    view = augment_spectra(spectra, opts, _gen(1))
    assert torch.equal(view, view.round()) and (view >= 0).all()  # Poisson counts
    ratio = view.sum() / spectra.sum()
    assert abs(float(ratio) - 0.25) < 0.005
    tilted = augment_spectra(spectra, SpectrumAugment(max_shift=0.0, tilt=1.0, dose=(1e4, 1e4)), _gen(2)) / 1e4
    slope = torch.log(tilted[:, -20:].mean(1) / tilted[:, :20].mean(1)) - torch.log(
        spectra[:, -20:].mean(1) / spectra[:, :20].mean(1))
    assert slope.abs().max() <= 1.0 + 0.05 and slope.abs().max() > 0.5


def _patterns(n: int = 16, q: int = 32) -> torch.Tensor:
    """A direct beam at the middle and two Bragg spots along +-x."""
    yy, xx = torch.meshgrid(torch.arange(q, dtype=torch.float32), torch.arange(q, dtype=torch.float32),
                            indexing="ij")
    c = (q - 1) / 2
    disc = lambda y, x, a: a * torch.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0)  # noqa: E731
    p = disc(c, c, 1000) + disc(c, c + 9, 200) + disc(c, c - 9, 200)
    return p.expand(n, q, q).clone()


def _centre(p: torch.Tensor) -> torch.Tensor:
    q = p.shape[-1]
    grid = torch.arange(q, dtype=torch.float32)
    w = p.sum(dim=(1, 2))
    return torch.stack([(p.sum(2) * grid).sum(1) / w, (p.sum(1) * grid).sum(1) / w], dim=1)


def test_pattern_views_shift_and_rotate_within_the_limits():
    p = _patterns()
    shifted = augment_patterns(p, DiffractionAugment(max_rotation=0.0, max_shift=2.0, dose=(50.0, 50.0)),
                               _gen()) / 50.0
    moved = (_centre(shifted) - _centre(p)).abs()
    assert moved.max() <= 2.0 + 0.1 and moved.max() > 0.5
    rotated = augment_patterns(p, DiffractionAugment(max_rotation=20.0, max_shift=0.0, dose=(50.0, 50.0)),
                               _gen(1)) / 50.0
    q, c = p.shape[-1], (p.shape[-1] - 1) / 2
    # the spots stay on their ring (radius 9 px) and turn by at most 20 degrees
    yy, xx = torch.meshgrid(torch.arange(q) - c, torch.arange(q) - c, indexing="ij")
    ring = ((yy ** 2 + xx ** 2).sqrt() - 9).abs() < 2
    right = ring & (xx > 0)
    angle = torch.rad2deg(torch.atan2((rotated * right * yy).sum((1, 2)), (rotated * right * xx).sum((1, 2))))
    assert angle.abs().max() <= 20 + 1 and angle.abs().max() > 3
    assert torch.allclose((rotated * ring).sum((1, 2)), (p * ring).sum((1, 2)), rtol=0.1)


def test_image_views_stay_in_range_and_keep_the_grey_levels():
    rng = np.random.default_rng(0)
    chips = torch.from_numpy(rng.uniform(0.2, 0.8, (8, 32, 32)).astype(np.float32))
    opts = ImageAugment()
    view = augment_images(chips, opts, _gen())
    assert view.shape == chips.shape and float(view.min()) >= 0 and float(view.max()) <= 1
    # flips and quarter turns only: the same pixels, rearranged (noise off: huge dose)
    plain = ImageAugment(max_scale=1.0, contrast=1.0, brightness=0.0, gradient=0.0, dose=(1e7, 1e7))
    turned = augment_images(chips, plain, _gen(1))
    # (Poisson noise at 1e7 counts per unit intensity: sd 2e-4)
    np.testing.assert_allclose(np.sort(turned.numpy().reshape(8, -1)), np.sort(chips.numpy().reshape(8, -1)),
                               atol=2e-3)
    assert not torch.allclose(turned, chips, atol=2e-3)


def test_views_are_seeded():
    items = _edge_spectra(8).numpy()
    a = augment_pair(items, items, "spectrum", SpectrumAugment(), _gen(5))
    b = augment_pair(items, items, "spectrum", SpectrumAugment(), _gen(5))
    c = augment_pair(items, items, "spectrum", SpectrumAugment(), _gen(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], a[1])


# ---------------------------------------------------------------- objectives


def test_vicreg_terms():
    rng = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(512, 16, generator=rng)
    loss, terms = vicreg_loss(z, z.clone())
    assert float(terms["invariance"]) == 0.0 and float(terms["variance"]) == 0.0  # sd 2 > 1
    assert float(terms["covariance"]) < 2.0  # independent dimensions (sampling noise only)
    collapsed = torch.ones(512, 16)
    _, terms = vicreg_loss(collapsed, collapsed)
    assert abs(float(terms["variance"]) - 1.0) < 0.02  # every dimension at the hinge
    line = torch.randn(512, 1, generator=rng).expand(512, 16) * 3
    _, terms = vicreg_loss(line, line)
    assert float(terms["covariance"]) > 100  # all dimensions one direction


def test_byol_loss_and_momentum():
    rng = torch.Generator().manual_seed(0)
    p = torch.randn(64, 8, generator=rng)
    assert float(byol_loss(p, 2 * p, p, p)) < 1e-6
    assert abs(float(byol_loss(p, -p, p, -p)) - 4.0) < 1e-5
    assert ema_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert ema_momentum(0.99, 100, 100) == pytest.approx(1.0)
    assert 0.99 < ema_momentum(0.99, 50, 100) < 1.0


# ---------------------------------------------------------------- streamed data


class _Recorder:
    """An array that records every block read from it (what Dask asks for)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.reads = data, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        block = self.data[key]
        self.reads.append(block.size)
        return block


class _Flatten:
    """An encoder stand-in: spectra as items, prepared as they are (what ViewBatches needs)."""

    kind = "spectrum"

    def signals(self, chips):
        return chips.reshape(-1, chips.shape[-1]).astype(np.float32), chips.shape[1] * chips.shape[2]

    def prepare(self, items):
        return torch.from_numpy(np.ascontiguousarray(items))


def _spectrum_modality(rows: int = 40, cols: int = 30, channels: int = 64):
    """A spectrum image whose counts encode the scan position: channel 0 = row, channel 1 = col."""
    data = np.zeros((rows, cols, channels), dtype=np.float32)
    data[..., 0] = np.arange(rows)[:, None] * 100
    data[..., 1] = np.arange(cols)[None, :] * 100
    data[..., 2:] = 1000
    recorder = _Recorder(data)
    axes = [Axis("y", rows), Axis("x", cols), Axis("energy", channels, 1.0, 100.0, "eV")]
    return ModalityData("eels", "spectrum", da.from_array(recorder, chunks=(8, 8, channels)), axes,
                        "<test>"), recorder


def test_pairs_are_neighbours_and_reads_stay_small():
    modality, recorder = _spectrum_modality()
    cfg = load_train_config(None, items_per_epoch=300, batch_size=50, chip_size=1)
    sources = chip_sources([modality], cfg)
    views = ViewBatches(_Flatten(), "spectrum", SpectrumAugment(neighbour=2, max_shift=0, tilt=0,
                                                                dose=(1e3, 1e3)))
    stream = ChipStream(sources, views, cfg, epoch=0)
    batches = list(stream)
    assert len(batches) == len(stream) == 6
    for a, b in batches:
        assert a.shape == b.shape == (50, 64)
        rows = (a[:, 0] / 1e5).round(), (b[:, 0] / 1e5).round()
        cols = (a[:, 1] / 1e5).round(), (b[:, 1] / 1e5).round()
        dr, dc = (rows[0] - rows[1]).abs(), (cols[0] - cols[1]).abs()
        assert (dr <= 2).all() and (dc <= 2).all() and ((dr + dc) > 0).all()
    whole = modality.data.size
    assert max(recorder.reads) <= 8 * 8 * 64 < whole / 10  # chunk by chunk, never the modality
    again = [a for a, _ in ChipStream(sources, views, cfg, epoch=0)]
    other = [a for a, _ in ChipStream(sources, views, cfg, epoch=1)]
    assert all(torch.equal(x, y) for x, y in zip(again, [a for a, _ in batches], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(other, again, strict=True))
    val = ValidationBatches(sources, views, load_train_config(None, val_items=60, batch_size=50, chip_size=1))
    first, second = list(val), list(val)
    assert len(first) == 1 and torch.equal(first[0][0], second[0][0])  # fixed augmentations


def test_studies_and_files_as_sources(tmp_path, small_phantom):
    from multimodal_seg import stages
    from multimodal_seg.pipeline.study import Study

    study = Study.open(tmp_path / "run" / "study.zarr")
    stages.add_modalities(study, {"haadf": small_phantom.image})
    found = read_sources([tmp_path / "run"], "image")
    assert [m.name for m in found] == ["haadf"] and found[0].data.shape == small_phantom.image.shape
    with pytest.raises(InputError, match="no spectrum modality"):
        read_sources([tmp_path / "run" / "study.zarr"], "spectrum")
    with pytest.raises(InputError):
        read_sources([tmp_path / "missing.tif"], "image")
    with pytest.raises(ParameterError, match="no training data"):
        read_sources([], "image")
