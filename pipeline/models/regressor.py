"""Architecture embedding -> standardised accuracy."""
from __future__ import annotations

import torch
from torch import nn


class Regressor(nn.Module):
    def __init__(self, dim_in: int, hidden: int, layers: int, dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = []
        d = dim_in
        for _ in range(layers):
            blocks += [nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout)]
            d = hidden
        blocks.append(nn.Linear(d, 1))
        self.mlp = nn.Sequential(*blocks)

    def freeze_output_bias(self) -> None:
        """Fix the output bias at 0 (for losses that ignore a common shift of the predictions)."""
        bias = self.mlp[-1].bias
        with torch.no_grad():
            bias.zero_()
        bias.requires_grad_(False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h).squeeze(-1)
