"""Meta-test evaluation: confidence intervals and adaptation curves."""
import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from mamlbook.evaluate import adaptation_curve, mean_ci95, summarize
from mamlbook.models import SinusoidMLP
from mamlbook.sinusoid import eval_tasks


def test_ci95_is_1_96_population_std_over_sqrt_n_by_hand():
    mean, ci = mean_ci95(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    # mean 2.5; population variance ((1.5²+0.5²)·2)/4 = 1.25; 1.96·√1.25/√4
    assert mean == 2.5
    assert math.isclose(ci, 1.96 * math.sqrt(1.25) / 2.0, rel_tol=1e-12)


def test_summarize_reports_one_mean_and_ci_per_step():
    per_task = torch.tensor([[4.0, 2.0], [2.0, 2.0]])
    r = summarize(per_task)
    assert r.steps == [0, 1] and r.mean == [3.0, 2.0]
    assert math.isclose(r.ci95[0], 1.96 * 1.0 / math.sqrt(2), rel_tol=1e-12) and r.ci95[1] == 0.0


def setup():
    torch.manual_seed(0)
    model = SinusoidMLP().double()
    b = eval_tasks(10, num_tasks=6, seed=5).to(dtype=torch.float64)
    return model, dict(model.named_parameters()), b


def test_step_zero_is_the_unadapted_query_loss():
    model, params, b = setup()
    curve = adaptation_curve(model, params, b.x_support, b.y_support, b.x_query, b.y_query,
                             inner_lr=0.01, max_steps=2)
    with torch.no_grad():
        direct = ((model(b.x_query) - b.y_query) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(curve[:, 0], direct, rtol=1e-12, atol=0)


def test_one_step_matches_a_hand_written_sgd_step():
    model, params, b = setup()
    curve = adaptation_curve(model, params, b.x_support, b.y_support, b.x_query, b.y_query,
                             inner_lr=0.01, max_steps=1)
    for i in range(6):
        loss = F.mse_loss(model(b.x_support[i]), b.y_support[i])
        grads = torch.autograd.grad(loss, list(params.values()))
        adapted = {k: v - 0.01 * g for (k, v), g in zip(params.items(), grads)}
        q = F.mse_loss(functional_call(model, adapted, (b.x_query[i],)), b.y_query[i])
        torch.testing.assert_close(curve[i, 1], q.detach(), rtol=1e-12, atol=1e-14)


def test_batched_and_looped_curves_agree():
    model, params, b = setup()
    args = (model, params, b.x_support, b.y_support, b.x_query, b.y_query)
    batched = adaptation_curve(*args, inner_lr=0.01, max_steps=3, batched=True)
    looped = adaptation_curve(*args, inner_lr=0.01, max_steps=3, batched=False)
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-14)


def test_evaluation_does_not_change_the_models_parameters():
    model, params, b = setup()
    before = {k: v.clone() for k, v in params.items()}
    adaptation_curve(model, params, b.x_support, b.y_support, b.x_query, b.y_query,
                     inner_lr=0.01, max_steps=3)
    assert all(torch.equal(before[k], params[k]) for k in params)


def test_summarize_also_reports_the_median_per_step():
    r = summarize(torch.tensor([[1.0, 0.5], [2.0, 0.5], [30.0, 1e9]]))
    assert r.median == [2.0, 0.5]
