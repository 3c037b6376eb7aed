"""Models used in the book. Any ``nn.Module`` works with ``mamlbook.maml``; these are the paper's.

Chapters 1–2's MLP.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["SinusoidMLP", "params_of"]


class SinusoidMLP(nn.Sequential):
    """The paper's regression network: 1-40-40-1 with ReLU (Finn et al. 2017, Section 5.1).

    Initialisation: PyTorch's default (Kaiming-uniform) unless ``init="official"``, which
    uses what cbfinn/maml's ``construct_fc_weights`` does: weights from a normal with
    std 0.01 truncated at two standard deviations, biases zero.

    Args:
        in_features: 1 for MAML; 3 for the oracle baseline, which also sees amplitude and phase.
        hidden: width of the two hidden layers (40 in the paper).
        init: "pytorch" (default) or "official".
    """

    def __init__(self, in_features: int = 1, hidden: int = 40, out_features: int = 1,
                 init: str = "pytorch"):
        super().__init__(
            nn.Linear(in_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, out_features),
        )
        if init == "official":
            for layer in self:
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, std=0.01, a=-0.02, b=0.02)
                    nn.init.zeros_(layer.bias)
        elif init != "pytorch":
            raise ValueError(f"init must be 'pytorch' or 'official', got {init!r}")


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable parameters as a name → tensor dict (the θ that MAML meta-learns)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}
