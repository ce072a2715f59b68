"""Self-supervised training of every modality's encoder on the user's own unlabelled data.

``train_encoder(files_or_studies, modality="spectrum", out="eels.ckpt")`` (CLI:
``mmseg train --modality spectrum DATA... --out eels.ckpt``) trains the modality's
trainable encoder (``image-cnn``, or ``resnet50`` fine-tuned from MicroNet where its
weights are present; ``spectrum-cnn``; ``diffraction-cnn``) with VICReg on pairs of
physics-respecting augmentations of chips streamed from the data, with Lightning
(checkpoints, resume, early stopping, CSV logs, progress bar, accelerators, DDP and
mixed precision from ``configs/training/``).  The checkpoint then embeds that kind
of data in any run: ``segment(image, weights="image.ckpt")`` or
``segment({...}, encoder_options={"eels": {"weights": "eels.ckpt"}})``.

Modules: :mod:`~.config` (validated settings), :mod:`~.augment` (augmentations per
kind), :mod:`~.objective` (VICReg and its projector), :mod:`~.data` (sources, the
streaming ``LightningDataModule``), :mod:`~.module` (the ``LightningModule``),
:mod:`~.train` (``train_encoder``).  Needs the ``train`` extra (``lightning``).
"""

from __future__ import annotations

try:
    import lightning  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    raise ImportError(
        "multimodal_seg.training needs Lightning: pip install 'multimodal-seg[train]' "
        "(or pip install lightning)") from exc

from .config import TrainConfig, load_train_config
from .train import TrainingResult, train_encoder, trainable_encoder

__all__ = ["TrainConfig", "TrainingResult", "load_train_config", "train_encoder", "trainable_encoder"]
