"""Identity loss: L1 between ArcFace embeddings of the restored and the HQ face (GFPGAN's choice).

The ArcFace-ResNet18 (`mmrface.models.arcface`) is only built from a file the user supplies
(`loss.identity_weights`); without one the loss is off and the run log says so. A weight > 0 with
no file, or a file that does not exist, is a UserError: a missing optional file never silently
changes what is trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrface.errors import UserError


class IdentityLoss(nn.Module):
    """forward(out, target) -> mean |emb(out) - emb(target)|; `embedder` maps grey 128² to vectors.

    The embedder is frozen and kept in eval mode (its batch norms use their running statistics).
    """

    def __init__(self, embedder: nn.Module):
        super().__init__()
        self.embedder = embedder.eval()
        for p in self.embedder.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "IdentityLoss":
        return super().train(False)

    def forward(self, out: Tensor, target: Tensor) -> Tensor:
        from mmrface.models.arcface import grey_128

        e_out = self.embedder(grey_128(out))
        with torch.no_grad():
            e_tgt = self.embedder(grey_128(target))
        return F.l1_loss(e_out, e_tgt)


def check_identity_config(weight: float, weights_path: str | None) -> str:
    """Validate the identity settings; returns the status line of the run log (or raises UserError)."""
    if weight < 0:
        raise UserError(f"loss.identity must be >= 0, got {weight}")
    if weight == 0:
        why = "loss.identity = 0" + ("" if weights_path else " and no loss.identity_weights")
        return f"identity: off ({why})"
    if not weights_path:
        raise UserError(f"loss.identity = {weight} needs loss.identity_weights (an ArcFace-ResNet18 file, "
                        "e.g. arcface_resnet18.pth); set loss.identity=0 to train without it")
    if not Path(weights_path).expanduser().is_file():
        raise UserError(f"loss.identity_weights: file not found: {weights_path} "
                        "(set loss.identity=0 to train without the identity loss)")
    return f"identity: {weight:g} (ArcFace from {weights_path})"


def build_identity_loss(weight: float, weights_path: str | None) -> IdentityLoss | None:
    """The identity loss, or None when it is off (see `check_identity_config`)."""
    check_identity_config(weight, weights_path)
    if weight == 0:
        return None
    from mmrface.models.arcface import load_arcface

    return IdentityLoss(load_arcface(str(Path(weights_path).expanduser())))
