"""ProjectionHead: an MLP from the backbones' features to the embedding space."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear, plus a linear skip; not normalised here.

    Args:
        in_dim: width of the concatenated backbone outputs.
        hidden_dim: hidden width.
        out_dim: embedding dimension.
        dropout: dropout rate on the hidden layer.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.config = {"in_dim": in_dim, "hidden_dim": hidden_dim, "out_dim": out_dim,
                       "dropout": dropout}
        self.out_dim = out_dim
        self.norm = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, out_dim))
        self.skip = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.mlp(x) + self.skip(x)  # (B, out_dim)
