"""``train_encoder()``: train an encoder self-supervised on unlabelled data, export a checkpoint.

Everything is checked before training starts (the config, the output path, the
data, the encoder and its initial weights, the network input shapes), so a bad
option never costs a training run.  Training uses Lightning's own machinery:
``ModelCheckpoint`` (best validation loss and ``last.ckpt`` for resuming),
``EarlyStopping``, ``CSVLogger``, the progress bar, and the ``Trainer``'s
accelerator, devices, strategy (DDP) and precision settings.  The exported file
(``out``) holds the best epoch's weights with their description
(:mod:`multimodal_seg.encoders.checkpoint`); Lightning's own files stay in the
work folder.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from ..encoders.base import Encoder
from ..encoders.checkpoint import CheckpointInfo, options_from_checkpoint, save_checkpoint
from ..encoders.registry import encoder_options, get_encoder
from ..encoders.runtime import NetworkRunner
from ..encoders.weights import find_weights
from ..errors import OutputError, ParameterError
from ..modalities.sources import modality_identity
from ..provenance import run_record, to_json, write_text_atomic
from .config import KINDS, TrainConfig, check_augment_kind, load_train_config
from .data import ChipDataModule, check_input_shapes, chip_sources, read_sources
from .module import SelfSupervisedModule

#: Encoder trained for each kind with ``encoder="auto"`` (images: resnet50 where MicroNet
#: weights are on this machine, see :func:`trainable_encoder`).
TRAINABLE_DEFAULTS = {"image": "image-cnn", "spectrum": "spectrum-cnn", "diffraction": "diffraction-cnn"}
#: What an encoder must offer to be trained (see :mod:`multimodal_seg.encoders.convnet`).
TRAINABLE_API = ("network", "signals", "prepare", "trainable_state", "architecture_options", "preprocessing")
#: Config sections that may change when a run is resumed (longer training, other hardware).
RESUMABLE_CHANGES = {"optim": ("max_epochs", "patience"), "trainer": None, "data": ("num_workers",)}


@dataclass
class TrainingResult:
    """What a training run produced.

    Attributes
    ----------
    checkpoint
        The exported encoder checkpoint (``out``).
    info
        Its description (encoder, options, preprocessing, training record).
    work_dir
        Lightning's checkpoints (``checkpoints/last.ckpt`` to resume) and CSV logs.
    history
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``.
    seconds
        Wall time of the training (this session's part when resumed).
    """

    checkpoint: Path
    info: CheckpointInfo
    work_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def trainable_encoder(kind: str, config: TrainConfig) -> tuple[Encoder, str]:
    """The encoder to train, built on the CPU with its initial weights; and why it was chosen.

    ``encoder.name="auto"``: ``spectrum-cnn`` or ``diffraction-cnn``; for images
    ``resnet50`` fine-tuned from MicroNet when its weights are on this machine (or
    when ``encoder.weights`` names ResNet50 weights), else ``image-cnn`` from scratch.
    An earlier checkpoint as ``encoder.weights`` continues its training, with its
    options.

    Raises
    ------
    ParameterError
        An encoder that has nothing to train, or of another kind.
    WeightsError
        Initial weights missing or unfit.
    """
    section = config.encoder
    name, options = options_from_checkpoint(section.weights, section.name, section.options)
    reason = f"{name} requested"
    if name == "auto":
        micronet = find_weights("micronet") if kind == "image" else None
        if kind == "image" and (micronet is not None or section.weights is not None):
            name, reason = "resnet50", "fine-tuning ResNet50 from " + (
                str(section.weights) if section.weights is not None else f"MicroNet weights ({micronet})")
        else:
            name = TRAINABLE_DEFAULTS[kind]
            reason = f"training {name} from " + ("scratch" if section.weights is None else str(section.weights))
            if kind == "image":
                reason += " (no MicroNet weights on this machine to fine-tune ResNet50 from)"
    trainable = ", ".join(sorted({*TRAINABLE_DEFAULTS.values(), "resnet50"}))
    if not {"weights", "device"} <= set(encoder_options(name)):
        raise ParameterError(f"encoder {name!r} has no network to train (it takes no weights)",
                             fix=f"train one of {trainable}", where="encoder")
    weights = section.weights if section.weights is not None else ("micronet" if name == "resnet50" else "random")
    encoder = get_encoder(name, **{**options, "weights": weights, "device": "cpu"})
    missing = [attr for attr in TRAINABLE_API if not hasattr(encoder, attr)]
    if missing:
        raise ParameterError(f"encoder {name!r} has no network to train (it lacks {', '.join(missing)})",
                             fix=f"train one of {trainable}", where="encoder")
    if encoder.kind != kind:
        raise ParameterError(f"encoder {name!r} embeds {encoder.kind} data, not {kind}",
                             fix=f"train a {kind} encoder ({TRAINABLE_DEFAULTS[kind]}) or pass --modality "
                                 f"{encoder.kind}", where="encoder")
    return encoder, reason


def _check_out(out: str | Path) -> Path:
    out = Path(out).expanduser()
    if out.is_dir():
        raise OutputError("the output path is a folder", fix="give a file path, e.g. encoder.ckpt", where=out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError("the output file's folder does not exist", fix=f"create {parent} first", where=out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {parent}", fix="choose a folder you can write to", where=out)
    return out


def _resumable(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys of the run description that differ and may not change on resume."""
    differ = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if key == "config":
            for section in sorted(set(a) | set(b)):
                allowed = RESUMABLE_CHANGES.get(section, ())
                if allowed is None or a.get(section) == b.get(section):
                    continue
                if isinstance(a.get(section), dict):
                    differ += [f"{section}.{k}" for k in sorted(set(a[section]) | set(b[section]))
                               if a[section].get(k) != b[section].get(k) and k not in allowed]
                else:
                    differ.append(section)
        elif a != b:
            differ.append(key)
    return differ


def _prepare_work_dir(work_dir: Path, run: dict[str, Any], resume: bool) -> Path | None:
    """Create the work folder or check it for a resumed run; returns ``last.ckpt`` to resume from."""
    record = work_dir / "run.json"
    last = work_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file() or not record.is_file():
            raise ParameterError("there is no earlier run to resume in the work folder",
                                 fix="train without --resume first (or point --work-dir at the run's folder)",
                                 where=work_dir)
        stored = json.loads(record.read_text())
        differ = _resumable(stored, run)
        if differ:
            raise ParameterError(
                f"the run in the work folder was trained with other settings or data: {', '.join(differ)}",
                fix="resume with the same data and config (only optim.max_epochs, optim.patience, "
                    "data.num_workers and the trainer section may change), or start a new run in "
                    "another --work-dir", where=work_dir)
        return last
    if work_dir.exists() and any(work_dir.iterdir()):
        raise ParameterError("the work folder holds an earlier training run",
                             fix="pass --resume (resume=True) to continue it, or remove it or choose "
                                 "another --work-dir", where=work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, to_json(run))
    return None


def read_history(work_dir: str | Path) -> list[dict[str, float]]:
    """Per epoch ``epoch``, ``train_loss`` and ``val_loss``, from the run's CSV logs.

    Every session of a run (the first and each resume) writes its own
    ``logs/version_N/metrics.csv``; a later session's values win for an epoch.
    """
    epochs: dict[int, dict[str, float]] = {}
    versions = sorted(Path(work_dir, "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[-1]))
    for version in versions:
        path = version / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                entry = epochs.setdefault(int(row["epoch"]), {"epoch": int(row["epoch"])})
                entry.update({k: float(row[k]) for k in ("train_loss", "val_loss") if row.get(k)})
    return [epochs[e] for e in sorted(epochs)]


@contextmanager
def _quiet_lightning(progress: bool) -> Iterator[None]:
    """Lightning's hardware and worker notices are not errors: keep them out of quiet runs."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        # each loader worker and DDP rank yields the batches __len__ counts (ChipStream shards)
        warnings.filterwarnings("ignore", message=".*IterableDataset. has .__len__. defined.*")
        # losses are logged per epoch, so the step-logging interval does not matter
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
        # a resumed run saves into the checkpoint folder it resumes from (checked in _prepare_work_dir)
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        if not progress:
            log.setLevel(logging.WARNING)
        try:
            yield
        finally:
            log.setLevel(level)


def train_encoder(
    data: Sequence[Any] | Any,
    *,
    modality: str,
    out: str | Path,
    config: TrainConfig | dict | str | Path | None = None,
    work_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    **options: Any,
) -> TrainingResult:
    """Train an encoder self-supervised (VICReg) on unlabelled data and write its checkpoint.

    Parameters
    ----------
    data
        One or several files (any format the ``modality`` reader takes), arrays,
        ``ModalityData``, ``(file, {reader options})`` or study folders (a study
        gives each of its modalities of this kind).
    modality
        ``"image"``, ``"spectrum"`` or ``"diffraction"``.
    out
        The checkpoint file to write (``encoder.ckpt``); use it with
        ``segment(..., weights=out)`` (images) or ``encoder_options={name: {"weights": out}}``.
    config
        A :class:`TrainConfig`, dict or YAML path (``configs/training/cpu.yaml``).
    work_dir
        Lightning's checkpoints and CSV logs (default: ``<out stem>-training`` beside ``out``).
    resume
        Continue the run in ``work_dir`` from its ``last.ckpt`` (same data and config;
        ``max_epochs`` may be raised).
    progress
        Lightning's progress bar and notices.
    options
        Config overrides by keyword (:data:`multimodal_seg.training.config.KEYWORDS`:
        ``encoder``, ``encoder_options``, ``weights``, ``max_epochs``, ``batch_size``, ``lr``,
        ``items_per_epoch``, ``chip_size``, ``seed`` ...).

    Returns
    -------
    TrainingResult

    Raises
    ------
    ParameterError, InputError, OutputError, WeightsError
        Before training starts, for everything that can be checked.
    """
    if modality not in KINDS:
        raise ParameterError(f"modality {modality!r} is not a kind of data an encoder can be trained on",
                             fix=f"use one of {', '.join(KINDS)}", where="modality")
    cfg = load_train_config(config, **options)
    check_augment_kind(cfg, modality)
    out = _check_out(out)
    work = Path(work_dir).expanduser() if work_dir is not None else out.with_name(f"{out.stem}-training")
    modalities = read_sources(data, modality)
    sources = chip_sources(modalities, cfg)
    encoder, reason = trainable_encoder(modality, cfg)
    check_input_shapes(sources, encoder)
    run = {"kind": modality, "encoder": encoder.name, "options": encoder.architecture_options(),
           "config": cfg.model_dump(mode="json"),
           "data": [modality_identity(m) for m in modalities]}
    run = json.loads(to_json(run))
    last = _prepare_work_dir(work, run, resume)

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # An encoder's network is shared by every encoder of the same key in this process
    # (encoders/runtime.py, inference only): training works on a private copy (one deepcopy,
    # so a ResNet50's trunk still shares its parameters with the whole model).
    owned = {name: getattr(encoder, name) for name in ("model", "network") if hasattr(encoder, name)}
    for name, copied in copy.deepcopy(owned).items():
        setattr(encoder, name, copied)
    # and it runs the copy: the runner built with the shared network would embed with the
    # untrained weights (eager: a compiled module is cached per key, and the copy has none)
    # (and unfolded: a copy with its batch norms folded would keep the weights of its making)
    encoder.runner = NetworkRunner(encoder.network, key=("trained", id(encoder.network)), compile=False,
                                   batch_size=encoder.runner.batch_size, fold=False)
    # encoders keep their network in eval mode; Lightning keeps the modes it finds
    module = SelfSupervisedModule(encoder.network.train(), encoder.dim, cfg)
    datamodule = ChipDataModule(sources, encoder, modality, cfg)
    on_train = module.monitored == "train_loss"  # checked when the training epoch's loss is known
    checkpoints = ModelCheckpoint(dirpath=work / "checkpoints", filename="best-{epoch}",
                                  monitor=module.monitored, mode="min", save_top_k=1, save_last=True,
                                  save_on_train_epoch_end=on_train)
    hw = cfg.trainer
    with _quiet_lightning(progress):
        trainer = L.Trainer(
            max_epochs=cfg.optim.max_epochs, accelerator=hw.accelerator, devices=hw.devices,
            num_nodes=hw.num_nodes, strategy=hw.strategy, precision=hw.precision,
            deterministic=hw.deterministic, log_every_n_steps=hw.log_every_n_steps,
            default_root_dir=work, logger=CSVLogger(work, name="logs"),
            callbacks=[checkpoints, EarlyStopping(monitor=module.monitored, mode="min",
                                                  patience=cfg.optim.patience,
                                                  check_on_train_epoch_end=on_train)],
            enable_progress_bar=progress, enable_model_summary=progress, num_sanity_val_steps=0,
            reload_dataloaders_every_n_epochs=1,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=last)
        seconds = time.perf_counter() - start
    best = checkpoints.best_model_path or checkpoints.last_model_path
    # our own file from this run (it holds Lightning's loop state, hence weights_only=False)
    state = torch.load(best, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    encoder.network.cpu().eval()
    history = read_history(work)
    best_epoch = int(state.get("epoch", 0))
    training = run_record(cfg.model_dump(mode="json"), {
        "lightning": metadata.version("lightning"),
        "reason": reason,
        "data": run["data"],
        "chip_sizes": [s.size for s in sources],
        "items_per_epoch": cfg.data.items_per_epoch,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "monitored": module.monitored,
        "best_loss": float(checkpoints.best_model_score) if checkpoints.best_model_score is not None else None,
        "history": history,
        "seconds": seconds,
        "initial_weights": getattr(encoder.weights, "name", None),
        "initial_weights_sha256": getattr(encoder.weights, "sha256", None),
        "device": str(trainer.strategy.root_device),
        "precision": hw.precision,
    })
    info = CheckpointInfo(encoder=encoder.name, kind=modality, options=encoder.architecture_options(),
                          preprocessing=encoder.preprocessing(),
                          signal_axes=[[a.to_dict() for a in m.axes[2:]] for m in modalities],
                          training=json.loads(to_json(training)))
    if trainer.is_global_zero:
        save_checkpoint(out, encoder.trainable_state(), info)
    return TrainingResult(out, info, work, history, seconds)
