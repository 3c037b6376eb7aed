"""Truncated backpropagation through the inner loop: its two ends are MAML and first-order MAML, exactly.

Independent evidence besides the two ends: with 2 inner steps truncated to the last one, the
meta-gradient is (I − αH(φ₁)) ∇L_q(φ₂), φ₁ = θ − α∇L_s(θ), with the Hessian H formed explicitly by
``torch.func.hessian`` (float64); and the memory of the meta-gradient grows with k, not with the steps.
"""
import pytest
import torch
import torch.nn.functional as F
from cli_fixtures import assert_resumes_bit_identical, assert_stops_at_budget, omniglot, small_validation
from sinusoid_fixtures import flat, float64_setup
from torch.func import functional_call, grad, hessian

from mamlbook.algorithms import make_algorithm
from mamlbook.compare import SavedGraphPeak
from mamlbook.errors import OptionError

ALPHA = 0.01


def meta_gradient(name, steps=3, batched=False, **options):
    """The meta-gradient one outer step applied (plain SGD at lr 1 on θ), float64 sinusoid MLP, 3 tasks."""
    model, params, data = float64_setup(hidden=10)
    algo = make_algorithm(name, model, params, problem="regression", inner_lr=ALPHA, inner_steps=steps,
                          batched=batched, **options)
    before = flat([p.detach().clone() for p in params.values()])
    algo.outer_step(torch.optim.SGD(list(params.values()), lr=1.0), *data)
    return before - flat([p.detach() for p in params.values()])


@pytest.mark.parametrize("batched", [False, True], ids=["looped", "vmap"])
def test_truncation_to_all_steps_is_second_order_maml_exactly(batched):
    full = meta_gradient("truncated", backprop_steps=3, batched=batched)
    assert torch.equal(full, meta_gradient("maml", batched=batched))
    assert not torch.equal(full, meta_gradient("fomaml", batched=batched))   # the second order matters here


@pytest.mark.parametrize("batched", [False, True], ids=["looped", "vmap"])
def test_truncation_to_no_steps_is_first_order_maml_exactly(batched):
    assert torch.equal(meta_gradient("truncated", backprop_steps=0, batched=batched),
                       meta_gradient("fomaml", batched=batched))


def test_first_order_means_truncation_to_no_steps():
    assert torch.equal(meta_gradient("truncated", backprop_steps=2, first_order=True),
                       meta_gradient("truncated", backprop_steps=0))


def test_more_steps_than_there_are_is_all_of_them():
    assert torch.equal(meta_gradient("truncated", backprop_steps=7), meta_gradient("maml"))


def test_truncation_to_the_last_of_two_steps_is_one_explicit_hessian_factor():
    model, params, (xs, ys, xq, yq) = float64_setup(hidden=10)
    mine = meta_gradient("truncated", steps=2, backprop_steps=1)
    shapes = [(n, p.shape, p.numel()) for n, p in params.items()]

    def loss(z, x, y):                                              # MSE with θ as one flat vector
        named, start = {}, 0
        for n, shape, size in shapes:
            named[n] = z[start:start + size].view(shape)
            start += size
        return F.mse_loss(functional_call(model, named, (x,)), y)
    theta = flat([p.detach() for p in params.values()])
    expected = torch.zeros_like(theta)
    for i in range(xs.shape[0]):
        phi1 = theta - ALPHA * grad(loss)(theta, xs[i], ys[i])
        phi2 = phi1 - ALPHA * grad(loss)(phi1, xs[i], ys[i])
        h1 = hessian(loss)(phi1, xs[i], ys[i])                     # H(φ₁), (P, P)
        expected += (torch.eye(len(theta), dtype=torch.float64) - ALPHA * h1) @ grad(loss)(phi2, xq[i], yq[i])
    expected /= xs.shape[0]
    torch.testing.assert_close(mine, expected, rtol=0, atol=1e-14)
    assert not torch.allclose(mine, meta_gradient("maml", steps=2), rtol=0, atol=1e-10)   # it is not MAML's


@pytest.mark.parametrize("name,grows", [("truncated", False), ("maml", True)])
def test_the_graph_memory_grows_with_the_differentiated_steps_not_the_inner_steps(name, grows):
    peaks = []
    for steps in (2, 8):
        model, params, data = float64_setup(hidden=10)
        options = {"backprop_steps": 1} if name == "truncated" else {}
        algo = make_algorithm(name, model, params, problem="regression", inner_lr=ALPHA, inner_steps=steps,
                              batched=False, **options)
        with SavedGraphPeak() as graph:
            algo.outer_step(torch.optim.SGD(list(params.values()), lr=0.0), *data)
        peaks.append(graph.peak)
    assert (peaks[1] > peaks[0]) == grows, peaks


@pytest.mark.parametrize("option", [{"amp": True}, {"compile": True}, {"backprop_steps": -1}],
                         ids=lambda o: next(iter(o)))
def test_options_it_cannot_honour_are_refused(option):
    model, params, _ = float64_setup(hidden=10)
    with pytest.raises(OptionError, match="truncated"):
        make_algorithm("truncated", model, params, problem="regression", inner_lr=ALPHA, **option)


# ----------------------------------------------------------------------------- the command line

def test_truncated_trains_on_omniglot_through_the_command_line_and_resumes_bit_identical(
        fake_omniglot, tmp_path, monkeypatch):
    small_validation(monkeypatch, val_tasks=4)
    flags = [*omniglot(fake_omniglot), "--algorithm", "truncated", "--iterations", "2", "--val-every", "1",
             "--checkpoint-every", "1"]
    whole, _ = assert_resumes_bit_identical(tmp_path, monkeypatch, *flags)
    assert (whole["learner"]["inner_steps"], whole["learner"]["backprop_steps"]) == (5, 1)


def test_truncated_stops_at_its_time_budget(fake_omniglot, tmp_path, monkeypatch):
    small_validation(monkeypatch, val_tasks=2)
    assert_stops_at_budget(tmp_path, *omniglot(fake_omniglot), "--algorithm", "truncated", budget="0.5")
