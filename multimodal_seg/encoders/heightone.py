"""1D convnets run as 2D ones of height one on channels-last tensors, for inference.

oneDNN runs 2D convolutions on channels-last tensors much faster than 1D ones.  Measured
on a 2-core AMD EPYC (eval mode, batch norms folded, alternated in one process): the
spectrum convnet's network on 256 spectra of 512 channels took 8.1-8.5 ms as 2D
convolutions of height one against 18.5-25.8 ms as 1D ones, 0.75 of the measured
``torch.mm`` peak against 0.34 (docs/design.md, "1D convnets run as 2D ones of height
one").  The copy computes the same function to float rounding; the network itself, whose
state dict weights files, checkpoints and training use, keeps its 1D layers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .binpool import BinAverage


class HeightOne(nn.Module):
    """``front`` (2D layers of height one, channels-last) then ``rest`` (from the flatten
    on): takes ``(n, c, L)`` like the 1D network it was made from."""

    def __init__(self, front: nn.Sequential, rest: nn.Sequential) -> None:
        super().__init__()
        self.front = front.to(memory_format=torch.channels_last)
        self.rest = rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.front(x.unsqueeze(-2).contiguous(memory_format=torch.channels_last)))


def _as_2d(conv: nn.Conv1d) -> nn.Conv2d:
    """The 2D convolution of height one computing what ``conv`` does."""
    out = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                    padding=(0, conv.padding[0]), dilation=(1, conv.dilation[0]), groups=conv.groups,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        out.weight.copy_(conv.weight.unsqueeze(-2))
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out.to(conv.weight.device)


def height_one(network: nn.Module) -> nn.Module:
    """An inference copy of a 1D convnet that runs as 2D layers of height one
    (:class:`HeightOne`), or ``network`` itself where that does not apply.

    It applies to an ``nn.Sequential`` whose modules before its ``nn.Flatten`` are 1D
    convolutions (at least one), identities (folded batch norms), ReLUs and 1D
    :class:`~multimodal_seg.encoders.binpool.BinAverage`: the 1D
    :func:`~multimodal_seg.encoders.convnet.small_convnet` with its norms folded
    (:func:`multimodal_seg.encoders.runtime.folded`).  2D convnets, ResNet50 and a network
    with a batch norm left or a layer this does not know come back as they are.
    """
    if not isinstance(network, nn.Sequential):
        return network
    modules = list(copy.deepcopy(network))
    flatten = next((i for i, m in enumerate(modules) if isinstance(m, nn.Flatten)), None)
    if flatten is None:
        return network
    front = modules[:flatten]
    known = all(isinstance(m, (nn.Conv1d, nn.Identity, nn.ReLU)) or (isinstance(m, BinAverage) and m.ndim == 1)
                for m in front)
    if not known or not any(isinstance(m, nn.Conv1d) for m in front):
        return network
    layers = [_as_2d(m) if isinstance(m, nn.Conv1d) else m for m in front]
    return HeightOne(nn.Sequential(*layers), nn.Sequential(*modules[flatten:])).eval()
