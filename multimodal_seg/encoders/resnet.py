"""ResNet50 encoder: chips to globally pooled CNN features (MicroNet weights by default).

MicroNet weights (Stuckner et al. 2022) are a torchvision ResNet50 trained on
micrographs.  As in that work, grey chips are replicated to three channels and
normalised with ImageNet mean and std, even for MicroNet weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from tqdm.auto import tqdm

from .device import autocast_context, batch_for, memory_format, pick_device
from ..errors import InputError, ParameterError
from .base import Encoder
from .binpool import BinAverage
from .runtime import NetworkRunner, shared_network
from .checkpoint import CheckpointInfo, checkpoint_for
from .weights import ResolvedWeights, check_layout, load_state_dict, resolve_weights

#: Per-channel (R, G, B) mean and std of ImageNet, used by torchvision and MicroNet.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Embedding length for each stage that can be pooled.
LAYER_DIMS = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}

#: Seed for ``weights="random"``, so that random features are reproducible.
RANDOM_INIT_SEED = 0
#: Chips per forward pass with ``batch_size="auto"``: on a CPU (small batches run faster
#: there, :func:`~multimodal_seg.encoders.device.batch_for`) and on a GPU.
CPU_BATCH = 8
ACCELERATOR_BATCH = 64



def preprocess_chips(chips: np.ndarray | torch.Tensor, resize: int | None) -> torch.Tensor:
    """Grey chips to normalised 3-channel network input.

    Parameters
    ----------
    chips
        Shape ``(n, s, s)``, intensities in about ``[0, 1]``.
    resize
        Output edge length in pixels (bilinear, antialiased when shrinking), or
        ``None`` to keep ``s``.

    Returns
    -------
    Float32 tensor of shape ``(n, 3, r, r)`` on the chips' device: clipped to
    ``[0, 1]``, resized, the grey channel repeated as R, G, B, then
    ``(x - mean) / std`` with ImageNet statistics per channel.
    """
    x = torch.as_tensor(chips, dtype=torch.float32).clamp(0.0, 1.0).unsqueeze(1)
    if resize is not None and resize != x.shape[-1]:
        x = F.interpolate(
            x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True
        )
    x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _check_options(layer: str, resize: int | None) -> None:
    if layer not in LAYER_DIMS:
        raise ParameterError(
            f"layer {layer!r} is not a ResNet50 stage",
            fix=f"use one of {', '.join(LAYER_DIMS)} (layer4: 2048-D, layer3: 1024-D)",
            where="layer",
        )
    if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int) or resize < 1):
        raise ParameterError(
            f"resize must be a positive number of pixels or None, not {resize!r}",
            fix="use 224 (the training size of the weights) or None to keep the chip size",
            where="resize",
        )


def _check_layout(state: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Raise WeightsError unless ``state`` matches ``model`` key for key and shape for shape."""
    check_layout(
        state, model.state_dict(), path, what="torchvision's ResNet50",
        fix="use a torchvision ResNet50 state dict (keys conv1.weight, bn1.*, layer1-4.*, "
        "fc.*), such as the MicroNet files; other architectures or libraries' key names "
        "cannot be loaded",
    )


def _build_resnet50(weights: ResolvedWeights) -> nn.Module:
    """torchvision ResNet50 with ``weights`` loaded strictly (or seeded random init)."""
    if weights.path is None:
        # fork_rng: seed the init without disturbing the caller's random stream
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return torchvision.models.resnet50(weights=None)
    # Built on the meta device: the random init would be overwritten anyway, and
    # assign=True adopts the loaded tensors instead of copying them (saves ~1 s).
    with torch.device("meta"):
        model = torchvision.models.resnet50(weights=None)
    state = load_state_dict(weights.path)
    _check_layout(state, model, weights.path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # fp16 files
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _trunk(model: nn.Module, layer: str) -> nn.Sequential:
    """Stem and stages up to ``layer``, then global average pooling: ``(n, 3, h, w) -> (n, C)``."""
    stages = list(LAYER_DIMS)[: list(LAYER_DIMS).index(layer) + 1]
    return nn.Sequential(
        model.conv1, model.bn1, model.relu, model.maxpool,
        *(getattr(model, s) for s in stages),
        BinAverage(1, 2), nn.Flatten(),  # global average pooling, deterministic on CUDA too
    )


def _as_chips(chips: np.ndarray) -> np.ndarray:
    arr = np.asarray(chips)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise InputError(
            f"chips must have shape (n, size, size), got {arr.shape}",
            fix="pass a stack of square grey chips (see multimodal_seg.chips.grid)",
            where="chips",
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(
            f"chips must be floating point scaled to about [0, 1], got dtype {arr.dtype}",
            fix="scale the image to [0, 1] and convert to float32 before cutting chips",
            where="chips",
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if np.isnan(arr).any():
        raise InputError(
            "chips contain NaN values",
            fix="fill or mask NaN pixels before encoding",
            where="chips",
        )
    return arr


class ResNet50Encoder(Encoder):
    """Globally average-pooled ResNet50 features of each chip.

    Parameters
    ----------
    weights
        Known weights name (``"micronet"``, ``"micronet-v1.0"``,
        ``"imagenet-micronet"``, ``"imagenet-micronet-v1.0"``, ``"imagenet"``),
        path of a local state dict, or ``"random"`` (seeded random init, a
        baseline).  ``None`` means the default, ``"micronet"``.
    allow_download
        Download known weights that are not on this machine.
    resize
        Chips are resized to ``resize`` x ``resize`` pixels before the network
        (224: the weights' training size); ``None`` keeps the chip size.
    batch_size
        Chips per forward pass: ``"auto"`` (default) is 8 on a CPU, where small batches
        run faster (:func:`~multimodal_seg.encoders.device.batch_for`), 64 on a GPU.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    layer
        Stage whose output is pooled: ``"layer4"`` (2048-D) or ``"layer3"``
        (1024-D, mid-level features, often better for texture); ``"layer1"``,
        ``"layer2"`` also work.
    compile
        Run the trunk through ``torch.compile`` (:mod:`multimodal_seg.encoders.runtime`:
        compiled once per process and chip size, inductor's on-disk cache across
        processes; eager, with a warning, if compilation fails).  Off: eager.
    progress
        Show a progress bar over chips.

    Attributes
    ----------
    weights
        The resolved weights (:class:`~multimodal_seg.encoders.weights.ResolvedWeights`).
    checkpoint
        The description of a checkpoint trained by :mod:`multimodal_seg.training`
        (``None`` for other weights); it must name ``resnet50`` with this ``layer``
        and ``resize``.
    device
        The torch device inference runs on.
    network
        Stem, stages up to ``layer`` and global average pooling, in eval mode.
    model
        The whole torchvision ResNet50 whose modules :attr:`network` shares (what a
        weights file holds, :meth:`trainable_state`).

    Raises
    ------
    WeightsError
        Weights missing, unreadable or not a torchvision ResNet50 layout.
    ParameterError
        Bad option or unavailable device.
    """

    name = "resnet50"
    batch_dependent = True
    uses_all_cores = True

    def __init__(
        self,
        *,
        weights: str | Path | None = "micronet",
        allow_download: bool = False,
        resize: int | None = 224,
        batch_size: int | str = "auto",
        device: str = "auto",
        layer: str = "layer4",
        compile: bool = False,
        progress: bool = False,
    ) -> None:
        _check_options(layer, resize)
        if not isinstance(compile, bool):
            raise ParameterError(f"compile must be true or false, not {compile!r}",
                                 fix="use compile=True (torch.compile) or False (eager)", where="compile")
        self.layer = layer
        self.resize = resize
        self.progress = progress
        self.compile = compile
        self.device = pick_device(device)
        self.batch_size = batch_for(batch_size, self.device, cpu=CPU_BATCH, accelerator=ACCELERATOR_BATCH)
        self.weights = resolve_weights(weights, allow_download=allow_download, progress=progress)
        #: The checkpoint's description when the weights file is a trained checkpoint.
        self.checkpoint: CheckpointInfo | None = checkpoint_for(self, self.weights.path)
        self._memory_format = memory_format(self.device)
        key = (self.name, self.weights.name, self.weights.sha256, layer, str(self.device))

        def build() -> tuple[nn.Module, nn.Module]:
            model = _build_resnet50(self.weights)  # the trunk shares its parameters
            return model, _trunk(model, layer).eval().to(self.device, memory_format=self._memory_format)

        # built once per process (a batch's worker); training works on its own copy
        self.model, self.network = shared_network(key, build)
        self.runner = NetworkRunner(self.network, key=key, compile=compile, batch_size=self.batch_size)

    @property
    def dim(self) -> int:
        return LAYER_DIMS[self.layer]

    def architecture_options(self) -> dict[str, Any]:
        """The options a trained checkpoint must share: the stage pooled and the input size."""
        return {"layer": self.layer, "resize": self.resize}

    def preprocessing(self) -> str:
        """The input preprocessing in words (recorded in trained checkpoints)."""
        size = "kept at the chip size" if self.resize is None else f"resized to {self.resize} px"
        return (f"each chip: intensities in [0, 1] clipped, {size}, grey repeated as R, G, B, "
                "normalised with ImageNet mean and std")

    def signals(self, chips: np.ndarray) -> tuple[np.ndarray, int]:
        """Image chips ``(n, size, size)`` are the items themselves (one per chip)."""
        return _as_chips(chips), 1

    def prepare(self, items: np.ndarray) -> torch.Tensor:
        """Chips ``(n, s, s)`` in [0, 1] -> network input on :attr:`device` (:func:`preprocess_chips`)."""
        batch = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32)).to(self.device)
        return preprocess_chips(batch, self.resize).contiguous(memory_format=self._memory_format)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The whole ResNet50's state dict (torchvision key names, as MicroNet files hold it)."""
        return self.model.state_dict()

    def encode(self, chips: np.ndarray) -> np.ndarray:
        """Embed chips.

        Parameters
        ----------
        chips
            Shape ``(n, size, size)``, float, intensities in about ``[0, 1]``
            (values outside are clipped).

        Returns
        -------
        Float32 array of shape ``(n, dim)``.
        """
        arr = _as_chips(chips)
        out = np.empty((len(arr), self.dim), dtype=np.float32)
        with torch.inference_mode(), tqdm(
            total=len(arr), unit="chip", desc=self.name, disable=not self.progress
        ) as bar:
            for start in range(0, len(arr), self.batch_size):
                # preprocessing stays float32; autocast (CUDA only) covers the network
                x = self.prepare(arr[start : start + self.batch_size])
                with autocast_context(self.device):
                    features = self.runner(x)
                out[start : start + len(x)] = features.float().cpu().numpy()
                bar.update(len(x))
        return out

    def fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {
            "name": self.name,
            "weights": self.weights.name,
            "weights_sha256": self.weights.sha256,
            "layer": self.layer,
            "resize": self.resize,
            "batch_size": self.batch_size,
            "device": self.device.type,
            "version": 2,  # 2: batch norms folded into the convolutions (runtime.folded)
        }
        if self.weights.is_random:
            fp["random_init_seed"] = RANDOM_INIT_SEED
        if self.compile:  # compiled and eager agree to float rounding; eager fingerprints stay as they were
            fp["compile"] = True
        return fp
