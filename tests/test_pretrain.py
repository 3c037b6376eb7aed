"""The pretrained baseline (train.pretrain) runs through the one loop and is plain joint training."""
import math

import torch
import torch.nn.functional as F

from mamlbook.models import SinusoidMLP
from mamlbook.sinusoid import SinusoidConfig, task_stream
from mamlbook.train import pretrain


def test_pretrain_is_adam_on_every_support_point_of_the_meta_batch_at_once():
    torch.manual_seed(0)
    model, by_hand = SinusoidMLP(), SinusoidMLP()
    by_hand.load_state_dict(model.state_dict())
    history = pretrain(model, task_stream(SinusoidConfig(), torch.Generator().manual_seed(1)), iterations=20,
                       lr=3e-3, progress=False)
    stream, losses = task_stream(SinusoidConfig(), torch.Generator().manual_seed(1)), []
    adam = torch.optim.Adam(by_hand.parameters(), lr=3e-3, fused=True)
    for _ in range(20):
        x_s, y_s, _, _ = stream()                                     # (25, 10, 1) each; queries unused
        loss = F.mse_loss(by_hand(x_s.reshape(-1, 1)), y_s.reshape(-1, 1))
        adam.zero_grad()
        loss.backward()
        adam.step()
        losses.append(loss.item())
    assert history.loss == losses and history.iteration == list(range(1, 21))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), by_hand.parameters()))


def test_pretraining_on_the_paper_sinusoids_learns_the_mean_task():
    # Phase in [0, π] and A ~ U[0.1, 5]: E[A·sin(x − φ)] = −(2·E[A]/π)·cos x with E[A] = 2.55 (chapter 1).
    torch.manual_seed(0)
    model = SinusoidMLP()
    pretrain(model, task_stream(SinusoidConfig(), torch.Generator().manual_seed(0)), iterations=3000,
             progress=False)
    x = torch.linspace(-5, 5, 101)[:, None]
    with torch.no_grad():
        err = (model(x) + 2 * 2.55 / math.pi * torch.cos(x)).abs()
    assert err.mean() < 0.15 and err.max() < 0.5
