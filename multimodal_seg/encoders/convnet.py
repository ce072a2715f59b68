"""The trainable convnet encoders' shared machinery (``spectrum-cnn``, ``diffraction-cnn``, ``image-cnn``).

All are small convnets (:func:`small_convnet`): over each scan position's signal,
averaged over the chip's positions (spectra, patterns), or over the chip itself
(images).  No published weights exist for them: random features are used only
when asked for (:func:`resolve_trainable_weights`), a state dict or a checkpoint
trained by :mod:`multimodal_seg.training` is loaded strictly (a checkpoint is
also checked against the encoder's options and, through :meth:`set_signal_axes`,
the modality's calibration: :mod:`multimodal_seg.encoders.checkpoint`), and
inference runs in batches on the chosen device (:class:`ConvChipEncoder`).

What training needs from an encoder is public here: :attr:`network`,
:meth:`~ConvChipEncoder.signals` (chips -> the items the network sees one at a
time), :meth:`~ConvChipEncoder.prepare` (raw items -> network input),
:meth:`~ConvChipEncoder.architecture_options`, :meth:`~ConvChipEncoder.preprocessing`
and :meth:`~ConvChipEncoder.trainable_state`.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, WeightsError
from .base import Encoder
from .checkpoint import CheckpointInfo, check_signal_axes, checkpoint_for
from .options import check_bool, check_int
from .positions import as_chips, mean_over_positions, position_signals
from .weights import RANDOM, ResolvedWeights, check_layout, file_sha256, load_state_dict

#: Seed of the random initialisation (``weights="random"``).
RANDOM_INIT_SEED = 0

#: Output channels and strides of the four convolution blocks of :func:`small_convnet`.
BLOCK_CHANNELS = (16, 32, 64, 64)
BLOCK_STRIDES = (2, 2, 2, 1)


def resolve_trainable_weights(spec: str | Path | None, encoder: str) -> ResolvedWeights:
    """Weights of a trainable encoder that has no published weights (yet).

    Parameters
    ----------
    spec
        ``"random"`` (seeded random initialisation) or the path of a local state
        dict.  ``None`` is refused: random features must be asked for explicitly.
    encoder
        Encoder name, for messages.

    Raises
    ------
    WeightsError
        ``spec`` is ``None`` or not an existing file.
    """
    if spec is None:
        raise WeightsError(
            f"encoder {encoder!r} has no trained weights yet, and random features are "
            "used only when asked for",
            fix=f"pass weights='{RANDOM}' for a seeded random-initialisation baseline, or "
            f"the path of a state dict trained for {encoder!r}; for a weight-free encoder "
            "use 'spectrum-pca' or 'diffraction-profiles'",
            where="weights",
        )
    if isinstance(spec, str) and spec.strip().lower() == RANDOM:
        return ResolvedWeights(RANDOM, None, None, "random initialisation (no trained weights)")
    if not isinstance(spec, (str, Path)):
        raise ParameterError(
            f"weights must be {RANDOM!r} or a file path, not {type(spec).__name__}",
            fix=f"pass weights='{RANDOM}' or the path of a state dict",
            where="weights",
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise WeightsError(
            f"weights file {what}",
            fix=f"give the path of a state dict saved with torch.save(encoder.network."
            f"state_dict(), path) for {encoder!r}, or weights='{RANDOM}'",
            where=path,
        )
    return ResolvedWeights(path.name, path, file_sha256(path), f"local file {path.resolve()}")


def small_convnet(signal_ndim: int, kernels: tuple[int, int, int, int], pooled: int,
                  embedding_dim: int, channels: tuple[int, int, int, int] = BLOCK_CHANNELS) -> Any:
    """Small convnet over one-channel signals: ``(b, 1, *signal) -> (b, embedding_dim)``.

    Four conv blocks (convolution without bias, batch norm, ReLU; ``channels``,
    16, 32, 64, 64 by default; the first three with stride 2, which is cheaper on
    CPUs than max pooling), adaptive average pooling to ``pooled`` positions along each signal
    axis, so that the embedding keeps coarse positions in the signal, and a
    linear layer.

    Parameters
    ----------
    signal_ndim
        1 (spectra) or 2 (diffraction patterns).
    kernels
        Kernel size of each conv block.
    pooled
        Positions per signal axis after the adaptive average pooling.
    embedding_dim
        Output length.
    channels
        Output channels of the four blocks.
    """
    from torch import nn

    from .binpool import BinAverage

    conv, norm = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d)}[signal_ndim]
    layers: list[nn.Module] = []
    c_in = 1
    for c_out, k, stride in zip(channels, kernels, BLOCK_STRIDES, strict=True):
        layers += [
            conv(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
            norm(c_out),
            nn.ReLU(inplace=True),
        ]
        c_in = c_out
    return nn.Sequential(
        *layers,
        BinAverage(pooled, signal_ndim),  # adaptive average pooling, deterministic on CUDA too
        nn.Flatten(),
        nn.Linear(c_in * pooled**signal_ndim, embedding_dim),
    )


class ConvChipEncoder(Encoder):
    """Shared machinery of the trainable convnet encoders.

    Subclasses build :attr:`network` (a ``torch.nn.Module`` mapping a batch of
    preprocessed signals to ``(batch, dim)``), set :attr:`kind` (the chip
    layout, :data:`~multimodal_seg.encoders.positions.CHIP_AXES`) and say how a
    batch of signals (one spectrum or one pattern per scan position) is
    preprocessed.  Embeddings are the mean over the chip's positions (image
    encoders: the chip is the one item, :meth:`signals`).

    No published weights exist: ``weights="random"`` gives a seeded random
    initialisation (a baseline; the fingerprint says ``random_weights: true``), a
    file path loads a state dict of :attr:`network` strictly.  A checkpoint written
    by :mod:`multimodal_seg.training` is such a file; it must also name this
    encoder and its options (:func:`~multimodal_seg.encoders.checkpoint.check_checkpoint`),
    and :meth:`set_signal_axes` checks the modality's calibration against the
    training data's.  Its SHA-256 is in the fingerprint, as for any weights file.

    Options every subclass takes (through :meth:`_setup`):

    Parameters
    ----------
    weights
        ``"random"``, the path of a state dict saved with
        ``torch.save(encoder.network.state_dict(), path)``, or of a checkpoint
        written by ``mmseg train``.  Required.
    embedding_dim
        Length of the embedding (the last linear layer's output).
    batch_size
        Signals (scan positions, or chips of an image) per forward pass: ``"auto"``
        (default) is the encoder's :attr:`cpu_batch` on a CPU, where smaller batches run
        faster (:func:`~multimodal_seg.encoders.device.batch_for`), and its
        :attr:`accelerator_batch` on a GPU.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    compile
        Run the network through ``torch.compile`` (:mod:`multimodal_seg.encoders.runtime`:
        compiled once per process, inductor's on-disk cache across processes; eager,
        with a warning, if compilation fails).  Off: eager.
    progress
        Show a progress bar over chips.

    Raises
    ------
    WeightsError
        No weights named, file missing or unreadable, not this network's layout, or a
        checkpoint of another encoder or other options.
    ParameterError
        Bad option or unavailable device.
    """

    #: Human-readable architecture name for weights errors.
    architecture: str = ""
    #: Whether the network's input is 2D (patterns, images): it then runs channels-last on CUDA.
    two_dimensional: bool = False
    batch_dependent = True
    uses_all_cores = True
    #: Spectra and patterns: a chip's embedding is the mean of its positions' features, so
    #: the pipeline encodes each scan position once (:mod:`multimodal_seg.encoders.pooling`).
    pools_positions = True
    #: Items per forward pass with ``batch_size="auto"`` on a CPU and on a GPU.
    cpu_batch: int = 64
    accelerator_batch: int = 256

    def _setup(
        self, *, weights: Any, embedding_dim: int, batch_size: int | str, device: str, progress: bool,
        compile: bool = False,
    ) -> None:
        import torch

        from .device import batch_for, pick_device
        from .runtime import NetworkRunner, shared_network

        self.embedding_dim = check_int(embedding_dim, "embedding_dim", minimum=1, example="64")
        self.progress = check_bool(progress, "progress")
        self.compile = check_bool(compile, "compile")
        self.device = pick_device(device)
        self.batch_size = batch_for(batch_size, self.device, cpu=self.cpu_batch, accelerator=self.accelerator_batch)
        self.weights = resolve_trainable_weights(weights, self.name)
        #: The checkpoint's description when the weights file is a trained checkpoint.
        self.checkpoint: CheckpointInfo | None = checkpoint_for(self, self.weights.path)
        from .device import memory_format

        #: Memory format of the network and its input (channels-last for 2D inputs on CUDA and CPUs).
        self.memory_format = memory_format(self.device) if self.two_dimensional else torch.contiguous_format
        key = (self.name, tuple(sorted(self.architecture_options().items())), self.weights.name,
               self.weights.sha256, str(self.device))
        self.network = shared_network(key, self._load_network)  # built once per process
        self.runner = NetworkRunner(self.network, key=key, compile=self.compile, batch_size=self.batch_size)

    def _load_network(self) -> Any:
        """The network with its weights (or the seeded random init), in eval mode on the device."""
        import torch

        # the seeded init also fixes parameters a loaded state dict overwrites anyway;
        # fork_rng keeps the caller's random stream untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            network = self._build_network()
        if self.weights.path is not None:
            state = load_state_dict(self.weights.path)
            check_layout(
                state, network.state_dict(), self.weights.path, what=f"the {self.architecture}",
                fix="load a state dict saved from this encoder's network with the same options "
                "(embedding_dim and the architecture options must match those used in training)",
            )
            state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            network.load_state_dict(state, strict=True)
        return network.eval().to(self.device, memory_format=self.memory_format)

    @abstractmethod
    def _build_network(self) -> Any:
        """The ``torch.nn.Module`` for the current options (random init)."""

    @abstractmethod
    def prepare(self, items: np.ndarray) -> Any:
        """A batch of raw items (numpy, as :meth:`signals` gives them) -> network input
        tensor on :attr:`device`."""

    @abstractmethod
    def preprocessing(self) -> str:
        """The input preprocessing, in words (recorded in trained checkpoints)."""

    def architecture_options(self) -> dict[str, Any]:
        """Options that change the network or its input (besides weights); a checkpoint
        must have been trained with the same."""
        return {"embedding_dim": self.embedding_dim}

    def signals(self, chips: np.ndarray) -> tuple[np.ndarray, int]:
        """Chips -> the items the network embeds one at a time, and items per chip.

        Spectra and patterns: ``(n, h, w, *signal)`` -> ``(n * h * w, *signal)`` float32
        and ``h * w`` (a chip's items are consecutive).

        Raises
        ------
        InputError
            Not a chip stack of this encoder's kind (:func:`~multimodal_seg.encoders.positions.as_chips`).
        """
        return position_signals(as_chips(chips, self.kind))

    def trainable_state(self) -> dict[str, Any]:
        """The weights as a weights file for this encoder holds them (:attr:`network`'s state dict)."""
        return self.network.state_dict()

    def set_signal_axes(self, axes: Any) -> None:
        """With a trained checkpoint: check the modality's signal axes against the training data's.

        Raises
        ------
        WeightsError
            The calibration differs from every training modality's
            (:func:`~multimodal_seg.encoders.checkpoint.check_signal_axes`).
        """
        if self.checkpoint is not None and self.weights.path is not None:
            check_signal_axes(self.checkpoint, axes, path=self.weights.path)

    @property
    def dim(self) -> int:
        return self.embedding_dim

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.weights.name,
            "weights_sha256": self.weights.sha256,
            "random_weights": self.weights.is_random,
            "batch_size": self.batch_size,
            "device": self.device.type,
            **self.architecture_options(),
            **({"compile": True} if self.compile else {}),  # eager fingerprints stay as they were
            # 2: batch norms folded into the convolutions (runtime.folded); 3: 1D convolutions
            # run as 2D ones of height one (heightone.py)
            "version": 3,
        }

    def encode(self, chips: np.ndarray) -> np.ndarray:
        """Embed chips: ``(n, h, w, ...)`` raw counts -> ``(n, dim)`` float32, the mean of
        each chip's items' features (:meth:`position_features`)."""
        items, per_chip = self.signals(chips)
        return mean_over_positions(self.position_features(items, per_item=1 / per_chip), per_chip)

    def position_features(self, signals: np.ndarray, *, per_item: float = 0.0) -> np.ndarray:
        """Features of single items ``(m, *signal)`` (spectra, patterns, or image chips) ->
        ``(m, dim)`` float32, computed :attr:`batch_size` items at a time from the first.

        ``per_item``: chips the progress bar counts per item (``encode``: one over the items
        per chip; 0 when the pipeline shows its own bar)."""
        import torch
        from tqdm.auto import tqdm

        from .device import autocast_context

        features = np.empty((len(signals), self.dim), dtype=np.float32)
        with torch.inference_mode(), tqdm(
            total=round(len(signals) * per_item), unit="chip", desc=self.name,
            disable=not self.progress or not per_item,
        ) as bar:
            for start in range(0, len(signals), self.batch_size):
                x = self.prepare(signals[start : start + self.batch_size])
                with autocast_context(self.device):
                    out = self.runner(x)
                features[start : start + len(x)] = out.float().cpu().numpy()
                bar.update(round((start + len(x)) * per_item) - round(start * per_item))
        return features
