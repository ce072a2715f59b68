"""Compute device selection and a description of it for provenance records."""

from __future__ import annotations

import contextlib
import platform
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError

#: Device kinds a user may ask for (``"cuda:1"`` picks one GPU).
SUPPORTED_DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(requested: str | torch.device = "auto") -> torch.device:
    """The torch device to run on.

    Parameters
    ----------
    requested
        ``"auto"`` (CUDA, else Apple MPS, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    An available :class:`torch.device`.

    Raises
    ------
    ParameterError
        The name is not a device, or the device is not available here.
    """
    text = str(requested).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ParameterError(
            f"{requested!r} is not a device name",
            fix=f"use one of {', '.join(SUPPORTED_DEVICES)}",
            where="device",
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        _check_cuda(device, requested)
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ParameterError(
                "device 'mps' was requested but Apple MPS is not available here",
                fix="use device='auto' or device='cpu'",
                where="device",
            )
        return device
    raise ParameterError(
        f"device type {device.type!r} is not supported",
        fix=f"use one of {', '.join(SUPPORTED_DEVICES)}",
        where="device",
    )


def _check_cuda(device: torch.device, requested: str | torch.device) -> None:
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
        raise ParameterError(
            f"device {str(requested)!r} was requested but no CUDA GPU is available "
            f"(torch {torch.__version__}, built with {build})",
            fix="use device='auto' or device='cpu', or install a CUDA build of torch "
            "on a machine with an NVIDIA GPU",
            where="device",
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ParameterError(
            f"device {str(requested)!r} was requested but only {count} CUDA GPU(s) exist",
            fix=f"use an index from 0 to {count - 1}, or device='cuda'",
            where="device",
        )


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision for inference on ``device``, or ``None`` for float32.

    CUDA uses bfloat16 where the GPU supports it (same range as float32, so no
    overflow in deep activations), else float16.  CPU and MPS stay in float32:
    CPU autocast is slow on most CPUs and would change the embeddings.
    """
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device) -> AbstractContextManager[Any]:
    """``torch.autocast`` on CUDA, a no-op context elsewhere."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(device: torch.device) -> torch.memory_format:
    """``channels_last`` on CUDA (faster convolutions with tensor cores) and on CPUs, else
    contiguous.

    On the CPU, oneDNN's convolutions run faster on channels-last tensors: measured here (2
    cores, eval mode, same run) ResNet50 on 32 chips of 128^2 px 1.55 -> 0.99 s, the
    ``diffraction-cnn`` network on 256 patterns of 64^2 px 0.47 -> 0.35 s.  MPS stays
    contiguous (not measured there).
    """
    return torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format


def batch_for(requested: Any, device: torch.device, *, cpu: int, accelerator: int,
              name: str = "batch_size") -> int:
    """Items per forward pass: ``requested`` if it is a whole number, else (``"auto"``) the
    encoder's measured best for ``device``'s kind.

    On CPUs smaller batches than a GPU needs run faster: measured here (2-core Xeon, eager,
    channels-last, ``encode`` alternated in one process, medians of 4-5) ResNet50 on 256
    chips of 128 px took 3.7-4.1 s in batches of 8 against 5.0-6.1 s in batches of 64 (0.60
    and 0.44 of the measured ``torch.mm`` peak; at 224 px 0.61 against 0.45), ``image-cnn``
    0.21 s per 1024 chips of 128 px in batches of 64 against 0.29 s in batches of 256, and
    ``diffraction-cnn`` 2.34 s per 961 chips of 4 x 4 patterns in batches of 64 against 2.66
    s in batches of 256 (``docs/design.md``, "Batches sized for the device"; since its
    preprocessing runs in torch, 128 beats both).  GPUs keep the large batches that fill them.

    Parameters
    ----------
    requested
        ``"auto"`` or an integer >= 1.
    device
        The device the network runs on.
    cpu, accelerator
        The encoder's batch on a CPU and on a GPU (CUDA or MPS).
    name
        The option's name, for the message.

    Raises
    ------
    ParameterError
        Neither ``"auto"`` nor an integer >= 1.
    """
    if isinstance(requested, str) and requested.strip().lower() == "auto":
        return cpu if device.type == "cpu" else accelerator
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 1:
        raise ParameterError(
            f"{name} must be 'auto' or an integer >= 1, not {requested!r}",
            fix=f"use {name}='auto' (the encoder's best for the device: {cpu} on a CPU, "
                f"{accelerator} on a GPU) or a whole number, smaller if the GPU runs out of memory",
            where=name,
        )
    return int(requested)


def describe_device(device: torch.device | str | None = None) -> dict[str, Any]:
    """JSON-able description of the compute device, for provenance.

    Parameters
    ----------
    device
        The device used (default: what ``pick_device("auto")`` chooses).

    Returns
    -------
    Dict with ``torch`` (version), ``device``, ``device_name``,
    ``cuda_available``, ``cuda_version``, ``mps_available``, ``threads``
    (CPU threads torch uses) and ``precision``.
    """
    dev = pick_device(device if device is not None else "auto")
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    elif dev.type == "mps":
        name = "Apple MPS"
    else:
        name = platform.processor() or platform.machine()
    dtype = amp_dtype(dev)
    return {
        "torch": torch.__version__,
        "device": str(dev),
        "device_name": name,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "mps_available": _mps_available(),
        "threads": torch.get_num_threads(),
        "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
    }
