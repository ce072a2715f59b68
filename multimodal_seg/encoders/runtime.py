"""How the torch encoders run their network: one copy per process, eager or compiled.

* :func:`shared_network`: a process-wide cache of built networks, keyed by everything
  that identifies one (architecture, options, weights hash, device).  An encoder built
  again in the same process (every specimen of a batch on one Dask worker, the
  refinement stage) reuses the network instead of loading its weights again, so each
  worker builds each encoder once.
* :func:`folded`: an inference copy of a network with every batch norm folded into
  the convolution before it (one convolution with a bias instead of a convolution and
  a normalisation pass over its output): the same function to float rounding, and on a
  2-core CPU the 4D-STEM convnet's network runs in 0.54 of the time, ResNet50 in 0.90.
  :func:`inference_copy` also runs a 1D convnet's convolutions as 2D ones of height one
  on channels-last tensors (:mod:`multimodal_seg.encoders.heightone`): the spectrum
  convnet's network in 0.3-0.5 of the time on a 2-core CPU.
* :class:`NetworkRunner`: calls a network on one batch, eagerly or through
  ``torch.compile`` (inductor), folded for inference by default.  Compiled batches have
  one fixed shape (the last, short batch is padded with zeros and its padding dropped),
  so a run compiles once per chip shape; the compiled module is cached per process like
  the network, and inductor's
  on-disk caches (its FX graph cache and kernel cache, under ``TORCHINDUCTOR_CACHE_DIR``,
  by default in the temporary folder) make a new process's compilation a cache hit.
  When compilation fails (no C++ compiler, an operator inductor cannot lower), the
  runner warns (``RuntimeWarning``, recorded with the run's provenance by
  :func:`multimodal_seg.segment`) and runs eagerly from then on, never silently.

Compiled and eager networks agree to float rounding, not bit for bit: an encoder puts
its ``compile`` option in its fingerprint.  Folded and unfolded networks agree to float
rounding too; the encoders' fingerprints count folding in their version.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Hashable
from typing import Any

_LOCK = threading.Lock()
_NETWORKS: dict[Hashable, Any] = {}
_COMPILED: dict[Hashable, Any] = {}
_INFERENCE: dict[Hashable, Any] = {}
#: Keys whose compiled module has run once (compilation happens on the first call).
_WARM: set[Hashable] = set()


def shared_network(key: Hashable, build: Callable[[], Any]) -> Any:
    """The network for ``key`` in this process, built by ``build()`` the first time.

    The network must be in eval mode and not modified by its users (inference only).
    """
    with _LOCK:
        network = _NETWORKS.get(key)
        if network is None:
            network = _NETWORKS[key] = build()
        return network


def clear_networks() -> None:
    """Forget every cached network and compiled module (tests, and freeing memory)."""
    with _LOCK:
        _NETWORKS.clear()
        _COMPILED.clear()
        _INFERENCE.clear()
        _WARM.clear()


def folded(network: Any) -> Any:
    """An eval-mode copy of ``network`` with each batch norm folded into the convolution
    registered right before it in the same module (``torch.nn.utils.fuse_conv_bn_eval``;
    the norm becomes an identity), which is how torchvision's ResNets and
    :func:`~multimodal_seg.encoders.convnet.small_convnet` order them.  The network itself
    is left as it is: its state dict, which weights files and training use, keeps its norms.

    For inference only: the folded weights are the network's of this moment.
    """
    import copy

    from torch import nn
    from torch.nn.utils import fuse_conv_bn_eval

    convs, norms = (nn.Conv1d, nn.Conv2d, nn.Conv3d), (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    copied = copy.deepcopy(network).eval()
    for parent in copied.modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = parent._modules[first], parent._modules[second]
            if isinstance(conv, convs) and isinstance(norm, norms) and norm.track_running_stats:
                parent._modules[first] = fuse_conv_bn_eval(conv, norm)
                parent._modules[second] = nn.Identity()
    return copied


def inference_copy(network: Any) -> Any:
    """What a runner runs for inference: :func:`folded` ``network``, with its 1D
    convolutions run as 2D ones of height one where the network's device runs convolutions
    on channels-last tensors (CPUs and CUDA: :func:`multimodal_seg.encoders.heightone.height_one`).
    The same function as ``network`` to float rounding."""
    import torch

    from .device import memory_format
    from .heightone import height_one

    copy = folded(network)
    parameter = next(copy.parameters(), None)
    if parameter is not None and memory_format(parameter.device) == torch.channels_last:
        copy = height_one(copy)
    return copy


class NetworkRunner:
    """Runs a network on batches of at most ``batch_size`` items.

    Parameters
    ----------
    network
        A ``torch.nn.Module`` in eval mode.
    key
        What identifies the network (the :func:`shared_network` key).
    compile
        Run through ``torch.compile`` (falls back to eager with a warning if that fails).
    batch_size
        Items per call; compiled calls are padded to it.
    fold
        Run a copy with the batch norms folded into the convolutions (:func:`inference_copy`,
        made once per process and ``key``).  Off for a network whose weights still change
        (training), whose copy would fall behind.
    """

    def __init__(self, network: Any, *, key: Hashable, compile: bool, batch_size: int,
                 fold: bool = True) -> None:
        self.network = network
        self.key = key
        self.compile = bool(compile)
        self.batch_size = int(batch_size)
        self.fold = bool(fold)
        #: Why compilation was given up, when it was (``None`` while it works or is off).
        self.fallback: str | None = None

    def _eager(self) -> Any:
        """The network run eagerly: its inference copy (made once per process and key), or itself."""
        if not self.fold:
            return self.network
        with _LOCK:
            module = _INFERENCE.get(self.key)
            if module is None:
                module = _INFERENCE[self.key] = inference_copy(self.network)
            return module

    def _compiled(self) -> Any:
        import torch

        eager = self._eager()
        with _LOCK:
            key = (self.key, self.fold)
            module = _COMPILED.get(key)
            if module is None:
                module = _COMPILED[key] = torch.compile(eager, dynamic=False)
            return module

    def __call__(self, x: Any) -> Any:
        """``network(x)`` for a batch ``x`` of at most ``batch_size`` items."""
        if not self.compile or self.fallback is not None:
            return self._eager()(x)
        import torch

        n = int(x.shape[0])
        if n < self.batch_size:  # one shape for every batch: one compilation
            x = torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
        module = self._compiled()
        shape_key = (self.key, self.fold, tuple(x.shape), x.dtype, str(x.device))
        try:
            if shape_key in _WARM:
                return module(x)[:n]
            with _LOCK:  # the first call compiles: once, not in every thread at once
                out = module(x)[:n]
                _WARM.add(shape_key)
                return out
        except Exception as exc:  # noqa: BLE001 - inductor raises many kinds of errors
            self.fallback = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"torch.compile failed for {self.key[0] if isinstance(self.key, tuple) else self.key} "
                          f"({self.fallback}); running eagerly instead (embeddings agree with compiled ones "
                          "to float rounding)", RuntimeWarning, stacklevel=2)
            return self._eager()(x[:n])
