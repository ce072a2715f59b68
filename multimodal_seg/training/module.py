"""The Lightning module: an encoder's network trained self-supervised through its heads."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch

from .config import TrainConfig
from .objective import byol_loss, ema_momentum, projector, vicreg_loss


class SelfSupervisedModule(L.LightningModule):
    """Trains ``network`` (``(b, ...) -> (b, embedding_dim)``) on pairs of views.

    ``objective.method="byol"``: a projector and a predictor on the network, and a
    target (network and projector) that follows them as a moving average, updated
    after every optimiser step; ``"vicreg"``: a projector and VICReg's loss
    (:mod:`multimodal_seg.training.objective`).  Logs ``train_loss`` and
    ``val_loss`` (and VICReg's terms) per epoch, optimises with AdamW and decays the
    learning rate on a cosine over ``optim.max_epochs``.
    ``network`` is trained in place: the encoder that owns it holds the trained
    weights afterwards; the heads and the target are discarded.

    Parameters
    ----------
    network
        The encoder's network.
    embedding_dim
        Its output length.
    config
        The training config (``objective`` and ``optim`` sections).
    """

    def __init__(self, network: torch.nn.Module, embedding_dim: int, config: TrainConfig) -> None:
        super().__init__()
        self.network = network
        self.objective, self.optim = config.objective, config.optim
        widths = list(self.objective.projector)
        self.projector = projector(embedding_dim, widths)
        if self.objective.method == "byol":
            self.predictor = projector(widths[-1], widths)
            self.target = torch.nn.ModuleDict({"network": copy.deepcopy(network),
                                               "projector": copy.deepcopy(self.projector)})
            self.target.requires_grad_(False)

    @property
    def monitored(self) -> str:
        """The loss early stopping and the best checkpoint follow: VICReg's validation loss; BYOL's
        training loss, since its validation loss is measured against a target that keeps moving."""
        return "val_loss" if self.objective.method == "vicreg" else "train_loss"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _loss(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z1, z2 = self.projector(self.network(x1)), self.projector(self.network(x2))
        obj = self.objective
        if obj.method == "vicreg":
            return vicreg_loss(z1, z2, invariance=obj.invariance, variance=obj.variance,
                               covariance=obj.covariance)
        with torch.no_grad():
            t1 = self.target["projector"](self.target["network"](x1))
            t2 = self.target["projector"](self.target["network"](x2))
        return byol_loss(self.predictor(z1), t2, self.predictor(z2), t1), {}

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x1, x2 = batch
        loss, terms = self._loss(x1, x2)
        n, sync = len(x1), stage != "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=n,
                 sync_dist=sync)
        for name, value in terms.items():
            self.log(f"{stage}_{name}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=sync)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.objective.method != "byol":
            return
        tau = ema_momentum(self.objective.momentum, self.global_step, self.trainer.estimated_stepping_batches)
        with torch.no_grad():
            for online, target in ((self.network, self.target["network"]),
                                   (self.projector, self.target["projector"])):
                for p, q in zip(online.parameters(), target.parameters(), strict=True):
                    q.mul_(tau).add_(p.detach(), alpha=1 - tau)
                for b, c in zip(online.buffers(), target.buffers(), strict=True):
                    c.copy_(b)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.optim.max_epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
