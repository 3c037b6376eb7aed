"""The joint-training baselines run through the one loop: train.pretrain (all tasks of a meta-batch at once)
and train.train_through_tasks (the seed article's loop: one task after another)."""
import math

import torch
import torch.nn.functional as F

from mamlbook.models import SinusoidMLP
from mamlbook.sinusoid import SinusoidConfig, task_stream
from mamlbook.tasks import sample_sinusoid_tasks
from mamlbook.train import as_batch, pretrain, train_through_tasks


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


def test_the_seed_articles_loop_is_one_adam_on_one_task_after_another():
    torch.manual_seed(0)
    model, by_hand = SinusoidMLP(), SinusoidMLP()
    by_hand.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(2)
    history = train_through_tasks(model, lambda: as_batch(sample_sinusoid_tasks(1, 5, generator=gen)), 4,
                                  lr=1e-2, steps_per_task=3, progress=False)
    gen, adam, last = torch.Generator().manual_seed(2), torch.optim.Adam(by_hand.parameters(), lr=1e-2), []
    for _ in range(4):
        task = sample_sinusoid_tasks(1, 5, generator=gen)               # one task: (1, 5, 1) support
        for _ in range(3):
            loss = F.mse_loss(by_hand(task.x_support[0]), task.y_support[0])
            adam.zero_grad()
            loss.backward()
            adam.step()
        last.append(loss.item())
    assert history.loss == last and history.iteration == [1, 2, 3, 4]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), by_hand.parameters()))
