"""The float64 set-up shared by the meta-gradient tests: the paper's MLP and a few sinusoid tasks."""
import torch

from mamlbook.models import SinusoidMLP
from mamlbook.tasks import sample_sinusoid_tasks


def float64_setup(num_tasks=3, k_shot=5, seed=0, hidden=40):
    """(model, θ as leaf tensors, (x_support, y_support, x_query, y_query)), all float64."""
    torch.manual_seed(seed)
    model = SinusoidMLP(hidden=hidden).double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    b = sample_sinusoid_tasks(num_tasks, k_shot, generator=torch.Generator().manual_seed(seed))
    b = b.to(dtype=torch.float64)
    return model, params, (b.x_support, b.y_support, b.x_query, b.y_query)


def flat(grads):
    """Concatenate a sequence of tensors into one vector."""
    return torch.cat([g.reshape(-1) for g in grads])
