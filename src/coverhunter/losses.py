"""Training losses: focal classification through a BN-neck, batch-hard triplet, center loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LossConfig

_EPS = torch.finfo(torch.float64).eps  # the original adds float64 machine epsilon to p


def focal_loss(logits: Tensor, labels: Tensor, gamma: float = 2.0) -> Tensor:
    """mean over the batch of (1 - p_y)^gamma * -log(p_y), with p = softmax(logits) + eps.

    Parameters
    ----------
    logits : Tensor, shape (B, n_classes)
    labels : Tensor, shape (B,), int64
    """
    p = torch.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1) + _EPS
    return ((1 - p) ** gamma * -torch.log(p)).mean()


def pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances (B, B) of the rows of x; exact zeros guarded before the sqrt."""
    sq = (x * x).sum(1)
    d2 = (sq[:, None] - 2 * x @ x.T + sq[None, :]).clamp(min=0)
    zero = (d2 == 0).to(d2.dtype)
    return torch.sqrt(d2 + zero * 1e-16) * (1 - zero)


def hard_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss on un-normalised embeddings.

    For each anchor: the farthest same-label item and the nearest other-label item;
    loss = mean(relu(d_pos - d_neg + margin)). Anchors with no positive count d_pos = 0.
    """
    d = pairwise_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    d_pos = (d * (same & ~eye)).max(1).values
    d_neg = (d + same * d.max(1, keepdim=True).values).min(1).values
    return F.relu(d_pos - d_neg + margin).mean()


class CenterLoss(nn.Module):
    """Mean squared distance of each embedding to its class centre (centres are learned)."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(n_classes, dim))

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return ((x - self.centers[labels]) ** 2).sum(1).clamp(1e-12, 1e12).mean()


@dataclass
class LossOutput:
    """The weighted total and its parts (floats for logging)."""

    total: Tensor
    ce: float
    triplet: float
    center: float
    logits: Tensor
    # what another objective logs instead of ce and triplet (name -> float)
    extra: dict = field(default_factory=dict)


class CoverLoss(nn.Module):
    """BN-neck + classifier + weighted focal, triplet and center losses.

    The neck's bias is frozen at zero, as in the original. ``forward`` takes the
    encoder's embeddings (B, E) and work labels (B,).
    """

    def __init__(self, cfg: LossConfig, embed_dim: int, n_classes: int):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"the classifier needs at least one class, got {n_classes}")
        self.cfg = cfg
        self.neck = nn.BatchNorm1d(embed_dim)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(embed_dim, n_classes, bias=False)
        self.center = CenterLoss(n_classes, embed_dim) if cfg.center_weight > 0 else None

    def forward(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        c = self.cfg
        logits = self.classifier(self.neck(embeddings))
        ce = focal_loss(logits, labels, c.focal_gamma)
        total = c.ce_weight * ce
        tri = hard_triplet_loss(embeddings, labels, c.triplet_margin)
        if c.triplet_weight > 0:
            total = total + c.triplet_weight * tri
        cen = self.center(embeddings, labels) if self.center is not None else None
        if cen is not None:
            total = total + c.center_weight * cen
        return LossOutput(total, ce.item(), tri.item(), cen.item() if cen is not None else 0.0, logits)
