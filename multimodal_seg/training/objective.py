"""The self-supervised objectives: VICReg and BYOL, and the heads they act on.

Both need no negative pairs, so they work with the small batches a 2-core CPU
can afford (SimCLR's contrastive loss wants thousands of negatives).

VICReg (Bardes, Ponce and LeCun, ICLR 2022) trains one network; its three terms
are explicit and logged separately: the two views' projections should agree
(invariance), every projection dimension should vary across the batch (variance:
no collapse to one point), and the dimensions should be decorrelated (covariance:
no collapse to a line).

BYOL (Grill et al., NeurIPS 2020) predicts, from one view, a slowly moving
average (EMA) of the network's projection of the other view; collapse is avoided
by the predictor and the moving target, with no term that spreads the
embeddings.  That matters for the data here: one specimen holds a few materials,
and a loss that demands unit variance in hundreds of projection dimensions can
only get it by encoding noise within a material (VICReg split the homogeneous
phase of the EELS phantom into several communities of noise).
"""

from __future__ import annotations

from typing import Any

#: Floor added to the variance before its square root (VICReg's epsilon).
VARIANCE_EPS = 1e-4


def projector(in_dim: int, widths: list[int]) -> Any:
    """The expander VICReg's loss acts on: ``in_dim -> widths[0] -> ... -> widths[-1]``.

    Linear layers with batch norm and ReLU between them, the last one plain (as in
    VICReg).  Discarded after training: the encoder's own output is the embedding.
    """
    from torch import nn

    layers: list[nn.Module] = []
    dims = [in_dim, *widths]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 1:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def vicreg_loss(z1: Any, z2: Any, *, invariance: float = 25.0, variance: float = 25.0,
                covariance: float = 1.0) -> tuple[Any, dict[str, Any]]:
    """VICReg loss of two batches of projections ``(b, d)`` of the same items.

    Returns
    -------
    The weighted loss (a scalar tensor) and its three unweighted terms by name
    (``invariance``, ``variance``, ``covariance``).
    """
    import torch
    import torch.nn.functional as F

    b, d = z1.shape
    inv = F.mse_loss(z1, z2)
    z1 = z1 - z1.mean(dim=0)
    z2 = z2 - z2.mean(dim=0)
    std1 = torch.sqrt(z1.var(dim=0) + VARIANCE_EPS)
    std2 = torch.sqrt(z2.var(dim=0) + VARIANCE_EPS)
    var = 0.5 * (F.relu(1 - std1).mean() + F.relu(1 - std2).mean())
    off = ~torch.eye(d, dtype=torch.bool, device=z1.device)
    cov1 = (z1.T @ z1) / (b - 1)
    cov2 = (z2.T @ z2) / (b - 1)
    cov = cov1[off].pow(2).sum() / d + cov2[off].pow(2).sum() / d
    loss = invariance * inv + variance * var + covariance * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}


def byol_loss(p1: Any, t2: Any, p2: Any, t1: Any) -> Any:
    """BYOL's symmetric loss: ``2 - 2 cos`` between each view's prediction and the other's target.

    ``p1, p2``: predictions ``(b, d)`` of the online branch; ``t1, t2``: target projections
    (no gradient).  0 when they point the same way, at most 4.
    """
    import torch.nn.functional as F

    def one(p: Any, t: Any) -> Any:
        return (2 - 2 * F.cosine_similarity(p, t.detach(), dim=-1)).mean()

    return 0.5 * (one(p1, t2) + one(p2, t1))


def ema_momentum(base: float, step: int, total: int) -> float:
    """BYOL's target momentum at ``step`` of ``total``: from ``base`` up to 1 on a cosine."""
    import math

    progress = min(max(step / max(total, 1), 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2
