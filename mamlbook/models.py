"""Models used in the book. Any ``nn.Module`` works with ``mamlbook.maml``; these are the paper's."""
from __future__ import annotations

import torch
from torch import nn


class SinusoidMLP(nn.Sequential):
    """The paper's regression network: 1-40-40-1 with ReLU (Finn et al. 2017, Section 5.1).

    Args:
        in_features: 1 for MAML; 3 for the oracle baseline, which also sees amplitude and phase.
        hidden: width of the two hidden layers (40 in the paper).
    """

    def __init__(self, in_features: int = 1, hidden: int = 40, out_features: int = 1):
        super().__init__(
            nn.Linear(in_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, out_features),
        )


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable parameters as a name → tensor dict (the θ that MAML meta-learns)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}
