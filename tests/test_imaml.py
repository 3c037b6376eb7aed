"""iMAML (Rajeswaran et al. 2019): the implicit meta-gradient against exact ones, in float64.

Independent evidence: with the inner problem solved to convergence, the learner's conjugate-gradient
meta-gradient equals (I + H/λ)⁻¹ ∇L_q(φ*) with φ* found by Newton's method and H = ∇²L_s(φ*) formed
and inverted explicitly (``torch.func.hessian``, ``torch.linalg.solve``); on a quadratic inner problem
it equals the plain autograd gradient of θ ↦ L_q(φ*(θ)) through the closed-form solution, which uses
no implicit differentiation at all. The memory of its meta-gradient does not grow with the inner steps.
"""
import pytest
import torch
import torch.nn.functional as F
from cli_fixtures import assert_resumes_bit_identical, assert_stops_at_budget, omniglot, small_validation
from sinusoid_fixtures import flat
from torch import nn
from torch.func import functional_call, grad, hessian

from mamlbook.algorithms import make_algorithm
from mamlbook.algorithms.imaml import conjugate_gradient
from mamlbook.compare import SavedGraphPeak
from mamlbook.errors import OptionError

F64 = torch.float64
LAM = 2.0                                                 # [P]'s λ


def tanh_net_and_tasks(num_tasks=2, k=6, seed=0):
    """A 1-6-1 tanh network (19 parameters) and sine-like regression tasks, float64."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    x = torch.rand(num_tasks, 2 * k, 1, dtype=F64) * 4 - 2
    y = torch.sin(2 * x + torch.arange(num_tasks, dtype=F64)[:, None, None])
    return model, params, (x[:, :k], y[:, :k], x[:, k:], y[:, k:])


def meta_gradient(name, model, params, data, **options):
    """θ − θ_after for one outer step with plain SGD at lr 1: the meta-gradient the learner applied."""
    algo = make_algorithm(name, model, params, problem="regression", **options)
    before = flat([p.detach().clone() for p in params.values()])
    algo.outer_step(torch.optim.SGD(list(params.values()), lr=1.0), *data)
    return before - flat([p.detach() for p in params.values()])


def as_function(model, params):
    """loss(z, x, y): the model's MSE with its parameters given as one flat vector z."""
    shapes = [(n, p.shape, p.numel()) for n, p in params.items()]

    def loss(z, x, y):
        named, start = {}, 0
        for n, shape, size in shapes:
            named[n] = z[start:start + size].view(shape)
            start += size
        return F.mse_loss(functional_call(model, named, (x,)), y)
    return loss


def test_with_the_inner_problem_converged_the_meta_gradient_is_the_exact_implicit_gradient():
    model, params, data = tanh_net_and_tasks()
    mine = meta_gradient("imaml", model, params, data, inner_lr=0.1, inner_steps=500, lam=LAM, cg_steps=60)
    loss = as_function(model, params)
    theta = flat([p.detach() for p in tanh_net_and_tasks()[1].values()])
    expected = torch.zeros_like(theta)
    for xs, ys, xq, yq in zip(*data):
        def inner(z):                                           # L_s(φ) + (λ/2)‖φ − θ‖²
            return loss(z, xs, ys) + 0.5 * LAM * ((z - theta) ** 2).sum()
        phi = theta.clone()
        for _ in range(50):                                     # φ* by Newton's method
            if grad(inner)(phi).abs().max() < 1e-14:
                break
            phi = phi - torch.linalg.solve(hessian(inner)(phi), grad(inner)(phi))
        assert grad(inner)(phi).abs().max() < 1e-13
        h = hessian(lambda z: loss(z, xs, ys))(phi)             # H = ∇²L_s(φ*), 19 × 19
        eye = torch.eye(len(theta), dtype=F64)
        expected += torch.linalg.solve(eye + h / LAM, grad(lambda z: loss(z, xq, yq))(phi)) / 2
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(mine, expected, rtol=0, atol=1e-10)


def test_on_a_quadratic_inner_problem_it_is_the_autograd_gradient_through_the_closed_form_solution():
    # Linear regression: L_s(φ) = mean((X̃φ − y)²), X̃ = [x, 1]; φ*(θ) solves (2X̃ᵀX̃/K + λI)φ = 2X̃ᵀy/K + λθ.
    torch.manual_seed(1)
    model = nn.Linear(3, 1).double()
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    xs, xq = torch.randn(2, 5, 3, dtype=F64), torch.randn(2, 7, 3, dtype=F64)
    ys, yq = torch.randn(2, 5, 1, dtype=F64), torch.randn(2, 7, 1, dtype=F64)
    mine = meta_gradient("imaml", model, params, (xs, ys, xq, yq), inner_lr=0.1, inner_steps=1000, lam=LAM,
                         cg_steps=4)                            # 4 parameters: CG is exact in 4 steps
    theta = torch.cat([model.weight.detach().flatten(), model.bias.detach()]).requires_grad_()
    total = 0.0
    for i in range(2):
        xt = torch.cat([xs[i], torch.ones(5, 1, dtype=F64)], 1)
        phi = torch.linalg.solve(2 * xt.T @ xt / 5 + LAM * torch.eye(4, dtype=F64), 2 * xt.T @ ys[i] / 5
                                 + LAM * theta[:, None])
        total = total + F.mse_loss(torch.cat([xq[i], torch.ones(7, 1, dtype=F64)], 1) @ phi, yq[i]) / 2
    (expected,) = torch.autograd.grad(total, [theta])
    torch.testing.assert_close(mine, expected, rtol=0, atol=1e-12)


def test_first_order_drops_the_inverse_the_meta_gradient_is_the_query_gradient_at_the_solution():
    model, params, data = tanh_net_and_tasks()
    mine = meta_gradient("imaml", model, params, data, inner_lr=0.05, inner_steps=300, lam=LAM,
                         first_order=True)
    loss = as_function(model, params)
    theta = flat([p.detach() for p in tanh_net_and_tasks()[1].values()])
    expected = torch.zeros_like(theta)
    for xs, ys, xq, yq in zip(*data):
        phi = theta.clone()
        for _ in range(300):                                    # the same gradient descent, by hand
            phi = phi - 0.05 * (grad(lambda z: loss(z, xs, ys))(phi) + LAM * (phi - theta))
        expected += grad(lambda z: loss(z, xq, yq))(phi) / 2
    torch.testing.assert_close(mine, expected, rtol=0, atol=1e-12)


def test_conjugate_gradient_solves_a_symmetric_positive_definite_system():
    torch.manual_seed(0)
    a = torch.randn(6, 6, dtype=F64)
    a = a @ a.T + torch.eye(6, dtype=F64)
    b = torch.randn(6, dtype=F64)
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, b, 20), torch.linalg.solve(a, b),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["imaml", "maml"])
def test_the_memory_of_the_meta_gradient_does_not_grow_with_the_inner_steps_for_imaml_only(name):
    # Tensors autograd saves for backward, at their peak during one outer step (compare.SavedGraphPeak).
    peaks = []
    for steps in (2, 20):
        model, params, data = tanh_net_and_tasks()
        algo = make_algorithm(name, model, params, problem="regression", inner_lr=0.05, inner_steps=steps)
        with SavedGraphPeak() as graph:
            algo.outer_step(torch.optim.SGD(list(params.values()), lr=0.0), *data)
        peaks.append(graph.peak)
    assert (peaks[0] == peaks[1]) == (name == "imaml"), peaks


def test_meta_test_adaptation_solves_the_regularised_inner_problem():
    model, params, (xs, ys, xq, yq) = tanh_net_and_tasks()
    algo = make_algorithm("imaml", model, params, problem="regression", inner_lr=0.05, inner_steps=4, lam=LAM)
    adapted = algo.adapt(xs[0], ys[0], steps=3)
    phi = {n: p.detach().clone() for n, p in params.items()}
    for _ in range(3):                                          # φ ← φ − α(∇L_s(φ) + λ(φ − θ)), by hand
        named = {n: p.requires_grad_() for n, p in phi.items()}
        loss = F.mse_loss(functional_call(model, named, (xs[0],)), ys[0])
        g = torch.autograd.grad(loss, list(named.values()))
        phi = {n: (p - 0.05 * (gi + LAM * (p - params[n]))).detach() for (n, p), gi in zip(named.items(), g)}
    for n in phi:
        torch.testing.assert_close(adapted.params[n], phi[n], rtol=0, atol=1e-14)


@pytest.mark.parametrize("option", [{"amp": True}, {"compile": True}, {"batched": True}, {"lam": 0.0}],
                         ids=lambda o: next(iter(o)))
def test_options_it_cannot_honour_are_refused(option):
    model, params, _ = tanh_net_and_tasks()
    with pytest.raises(OptionError, match="imaml|iMAML"):
        make_algorithm("imaml", model, params, problem="regression", inner_lr=0.05, **option)


# ----------------------------------------------------------------------------- the command line

def test_imaml_trains_on_omniglot_through_the_command_line_and_resumes_bit_identical(fake_omniglot, tmp_path,
                                                                                     monkeypatch):
    small_validation(monkeypatch, val_tasks=4)
    flags = [*omniglot(fake_omniglot), "--algorithm", "imaml", "--inner-steps", "2", "--iterations", "2",
             "--val-every", "1", "--checkpoint-every", "1"]
    whole, _ = assert_resumes_bit_identical(tmp_path, monkeypatch, *flags)
    # Rajeswaran et al.'s Omniglot settings, recorded with the run (the flag's 2 inner steps aside).
    recorded = whole["learner"]
    assert (recorded["lam"], recorded["cg_steps"], recorded["inner_lr"]) == (2.0, 5, 0.1)
    assert (whole["learner"]["inner_steps"], whole["learner"]["test_steps"]) == (2, 16)


def test_imaml_stops_at_its_time_budget(fake_omniglot, tmp_path, monkeypatch):
    small_validation(monkeypatch, val_tasks=2)
    assert_stops_at_budget(tmp_path, *omniglot(fake_omniglot), "--algorithm", "imaml", "--inner-steps", "2",
                           budget="0.5")
