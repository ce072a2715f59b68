"""Training configuration: validated sections, from keywords or YAML (``configs/training/``).

Unknown keys and bad values are errors that name them, as for runs
(:mod:`multimodal_seg.config`).  A YAML file mirrors the sections::

    encoder:   {name: auto, options: {}, weights: null}
    data:      {chip_size: auto, items_per_epoch: 4096, val_items: 512, num_workers: 0}
    augment:   {spectrum: {max_shift: 2.0}}       # only the trained kind's section may be set
    objective: {method: vicreg, projector: [256, 128], invariance: 25, variance: 25, covariance: 1}
    optim:     {batch_size: 256, lr: 0.001, max_epochs: 20, patience: 5}
    trainer:   {accelerator: cpu, devices: 1, precision: 32-true}
    seed: 0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import explain, overridden, read_yaml
from ..errors import ParameterError

#: Kinds of data an encoder can be trained on.
KINDS = ("image", "spectrum", "diffraction")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _range(low: float, high: float) -> Any:
    return Field(default=(low, high))


class _Range(_Section):
    @field_validator("dose", check_fields=False)
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("must be (low, high) with 0 < low <= high")
        return value


class ImageAugment(_Range):
    """Augmentations of image chips (intensities in [0, 1]); see :mod:`multimodal_seg.training.augment`."""

    #: Random horizontal and vertical flips.
    flips: bool = True
    #: Random rotations by multiples of 90 degrees.
    rot90: bool = True
    #: The second view is the chip moved by up to this fraction of its edge along each axis
    #: (a real neighbouring chip: same material, its own noise).
    max_shift: float = Field(0.25, ge=0, le=1)
    #: Largest zoom factor (the zoom is drawn log-uniformly in [1 / max_scale, max_scale]).
    max_scale: float = Field(1.15, ge=1, le=2)
    #: Counts per unit intensity of the Poisson noise added (log-uniform in this range).
    dose: tuple[float, float] = _range(100.0, 1000.0)
    #: Largest contrast factor (log-uniform in [1 / contrast, contrast]).
    contrast: float = Field(1.2, ge=1, le=3)
    #: Largest brightness offset (intensity units).
    brightness: float = Field(0.05, ge=0, le=0.5)
    #: Largest peak-to-peak slow intensity gradient across the chip (intensity units).
    gradient: float = Field(0.05, ge=0, le=0.5)


class SpectrumAugment(_Range):
    """Augmentations of spectra (raw counts)."""

    #: The second view is the spectrum of a scan position up to this many positions away along
    #: each axis (same material, its own shot noise); 0: the same position.
    neighbour: int = Field(1, ge=0, le=16)
    #: Largest energy shift in channels (sub-channel, linear interpolation).
    max_shift: float = Field(2.0, ge=0, le=64)
    #: Counts are scaled by a factor drawn log-uniformly in this range, then Poisson-resampled.
    dose: tuple[float, float] = _range(0.25, 1.0)
    #: Largest change of the log-slope across the energy window (thickness changes the
    #: background's slope): counts times ``exp(-t (u - 1/2))``, ``u`` in [0, 1] along the window.
    tilt: float = Field(0.3, ge=0, le=5)


class DiffractionAugment(_Range):
    """Augmentations of diffraction patterns (raw counts)."""

    #: The second view is the pattern of a scan position up to this many positions away along
    #: each axis (same material, its own shot noise); 0: the same position.
    neighbour: int = Field(1, ge=0, le=16)
    #: Largest rotation in degrees.  Small by default: a grain's orientation is signal, and
    #: invariance to all rotations (180) merges grains of one phase.
    max_rotation: float = Field(5.0, ge=0, le=180)
    #: Largest shift of the pattern (descan, beam centring error), in detector pixels.
    max_shift: float = Field(2.0, ge=0, le=64)
    #: Counts are scaled by a factor drawn log-uniformly in this range, then Poisson-resampled.
    dose: tuple[float, float] = _range(0.25, 1.0)


class AugmentConfig(_Section):
    """Augmentations per data kind; only the trained kind's section may be set."""

    image: ImageAugment = Field(default_factory=ImageAugment)
    spectrum: SpectrumAugment = Field(default_factory=SpectrumAugment)
    diffraction: DiffractionAugment = Field(default_factory=DiffractionAugment)


class EncoderSection(_Section):
    """The network to train.  ``name="auto"``: ``image-cnn`` for images (``resnet50``, fine-tuned,
    where MicroNet weights are on this machine), ``spectrum-cnn``, ``diffraction-cnn``."""

    name: str = "auto"
    #: The encoder's options (architecture and preprocessing: e.g. ``{"length": 256}``).
    options: dict[str, Any] = Field(default_factory=dict)
    #: Initial weights: ``None`` (random for the convnets; MicroNet for ``resnet50``), a known
    #: name, a state dict or an earlier checkpoint (training continues from it).
    weights: str | None = None


class DataSection(_Section):
    """How chips are cut and streamed."""

    #: Chip edge in pixels (int) or a length (``"2 nm"``); ``auto``: the rule segment() uses.
    chip_size: int | str = "auto"
    stride: int | str | None = None
    #: Items (image chips, or spectra / patterns) per training epoch.
    items_per_epoch: int = Field(4096, ge=1)
    #: Items held out for the validation loss (VICReg's early stopping and best checkpoint).
    val_items: int = Field(512, ge=2)
    #: Raw chip data read at once (then shuffled), in MiB.
    block_mib: float = Field(64.0, gt=0)
    #: DataLoader worker processes (0: the training process reads and augments).
    num_workers: int = Field(0, ge=0)

    @field_validator("chip_size", "stride")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive number of pixels")
        return value


class ObjectiveSection(_Section):
    """The self-supervised objective (:mod:`multimodal_seg.training.objective`) and its heads."""

    #: ``vicreg`` or ``byol`` (a moving-average target, no spreading term); see
    #: docs/training.md for how they compared.
    method: Literal["vicreg", "byol"] = "vicreg"
    #: Widths of the projector's layers (linear, batch norm, ReLU between them); BYOL's
    #: predictor has the same widths.
    projector: list[int] = Field(default_factory=lambda: [256, 128], min_length=1)
    #: BYOL: the target's momentum at the start (it rises to 1 on a cosine).
    momentum: float = Field(0.99, ge=0, lt=1)
    #: VICReg: weight of the invariance term (mean squared distance of the two views' projections).
    invariance: float = Field(25.0, ge=0)
    #: VICReg: weight of the variance term (hinge on each projection dimension's standard deviation).
    variance: float = Field(25.0, ge=0)
    #: VICReg: weight of the covariance term (off-diagonal covariance of the projections).
    covariance: float = Field(1.0, ge=0)


class OptimSection(_Section):
    """Optimiser and schedule: AdamW, cosine decay of the learning rate over ``max_epochs``."""

    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_epochs: int = Field(20, ge=1)
    #: Early stopping: epochs without a lower validation loss before training stops.
    patience: int = Field(5, ge=1)


class TrainerSection(_Section):
    """Lightning ``Trainer`` settings for the hardware (see ``configs/training/hpc.yaml``)."""

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    #: ``32-true`` on CPUs (bf16 matrix products are slower than float32 on these CPUs);
    #: ``bf16-mixed`` on GPUs that support it.
    precision: str = "32-true"
    #: Deterministic algorithms: the same data, config and seed give the same weights.
    deterministic: bool | Literal["warn"] = True
    log_every_n_steps: int = Field(10, ge=1)


class TrainConfig(_Section):
    """Everything a training run depends on, besides the data and the modality kind."""

    encoder: EncoderSection = Field(default_factory=EncoderSection)
    data: DataSection = Field(default_factory=DataSection)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _projector_positive(self) -> TrainConfig:
        if any(width < 1 for width in self.objective.projector):
            raise ValueError("objective.projector widths must be positive")
        return self


#: train_encoder() keyword -> (section, field) in TrainConfig.
KEYWORDS: dict[str, tuple[str | None, str]] = {
    "encoder": ("encoder", "name"),
    "encoder_options": ("encoder", "options"),
    "weights": ("encoder", "weights"),
    "chip_size": ("data", "chip_size"),
    "items_per_epoch": ("data", "items_per_epoch"),
    "val_items": ("data", "val_items"),
    "num_workers": ("data", "num_workers"),
    "batch_size": ("optim", "batch_size"),
    "lr": ("optim", "lr"),
    "max_epochs": ("optim", "max_epochs"),
    "patience": ("optim", "patience"),
    "accelerator": ("trainer", "accelerator"),
    "devices": ("trainer", "devices"),
    "precision": ("trainer", "precision"),
    "seed": (None, "seed"),
}


#: How training-config errors name the configuration and where its keys are listed.
WHAT, LISTED = "training configuration", "docs/training.md and configs/training/cpu.yaml"


def load_train_config(source: TrainConfig | dict | str | Path | None = None, **keywords: Any) -> TrainConfig:
    """A validated training config from a model, dict, YAML file or defaults, with keyword overrides.

    Parameters
    ----------
    source
        A :class:`TrainConfig`, a dict of sections, the path of a YAML file, or ``None``.
    keywords
        Overrides by :data:`KEYWORDS` name; ``None`` keeps the config's value.

    Raises
    ------
    ParameterError
        Missing or unreadable file, unknown keys or keywords, bad values.
    """
    where = "training config"
    data: Any = {}
    if isinstance(source, TrainConfig):
        data = source.model_dump()
    elif isinstance(source, (str, Path)):
        where, data = str(source), read_yaml(source, layout="configs/training/cpu.yaml")
    elif isinstance(source, dict):
        data = source
    elif source is not None:
        raise ParameterError(f"config must be a TrainConfig, a dict or a YAML path, not {type(source).__name__}",
                             fix="pass e.g. config='configs/training/cpu.yaml'", where="config")
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, where, what=WHAT, listed=LISTED) from None
    return overridden(TrainConfig, config.model_dump(), KEYWORDS, keywords, what=WHAT, listed=LISTED)


def check_augment_kind(config: TrainConfig, kind: str) -> None:
    """Refuse augmentation settings (sections changed from their defaults) for a kind other
    than the trained one: they would be ignored.

    Raises
    ------
    ParameterError
        ``augment.<other kind>`` differs from its defaults.
    """
    defaults = AugmentConfig()
    others = [k for k in KINDS if k != kind and getattr(config.augment, k) != getattr(defaults, k)]
    if others:
        raise ParameterError(
            f"augment settings are given for {', '.join(others)}, but this run trains a {kind} encoder, "
            "so they would be ignored",
            fix=f"set augment.{kind} instead, or drop augment.{others[0]}", where="augment")
