"""iMAML — implicit MAML (Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019, arXiv:1909.04630), chapter 10.

The inner problem is a proximally regularised fit that stays near θ (Eq. 4 of the paper):

    φ*_i(θ) = argmin_φ  L_support_i(φ) + (λ/2) ‖φ − θ‖²

solved here by ``inner_steps`` steps of gradient descent from φ = θ at step α:
φ ← φ − α (∇L_s(φ) + λ (φ − θ)). At the optimum ∇L_s(φ*) + λ(φ* − θ) = 0, and the implicit function
theorem gives dφ*/dθ = (I + H/λ)⁻¹ with H = ∇²L_s(φ*) — whatever path the inner optimiser took.
The meta-gradient of task i is therefore

    g_i = (I + H_i/λ)⁻¹ ∇L_query_i(φ*_i),                       θ ← Adam(θ, (1/T) Σ_i g_i)

computed without ever forming H: ``cg_steps`` iterations of conjugate gradient on (I + H/λ) x = ∇L_q,
each needing one Hessian-vector product (double backward through one support-loss graph at φ*).
The inner steps keep no graph at all, so memory does not grow with ``inner_steps`` (chapter 10
measures it). ``first_order=True`` drops the inverse, g_i = ∇L_q(φ*_i) (the official code does the
same when ``cg_steps ≤ 1``). Meta-test adaptation solves the same regularised inner problem with
``test_steps`` steps.

Settings. [P] = the paper, Table 2's caption (Omniglot): "iMAML with gradient descent (GD) uses 16 and
25 steps for 5-way and 20-way tasks respectively ... λ = 2.0 for regularization, and 5 CG steps to
compute the task meta-gradient"; meta-parameters updated with Adam. [C] = aravindr93/imaml_dev at
29d3fcf, examples/README.md, 5-way 1-shot: ``--inner_lr 1e-1 --outer_lr 1e-3 --n_steps 16
--task_mb_size 32 --lam 2.0 --cg_steps 5``, mean cross-entropy (``nn.CrossEntropyLoss``), so α = 0.1
here too. [C] differs from [P]'s equations in ways this module does not copy: its inner loop runs the
16 steps on L_s alone and then takes one SGD step on the proximal term (``learn_task``, then
``regularization_loss``); its CG operator is (1 + 1)·v + Hv/(λ + 10) (``matrix_evaluator`` with
``cg_damping`` 1.0 and ``lam_damping`` 10.0); its Adam has ε = 1e-3; and its meta-test
(``measure_accuracy.py``) adapts with λ = 0. The sinusoid settings are this book's (see
:data:`mamlbook.compare.SETTINGS`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..errors import OptionError
from ..maml import LossFn, Params, grads_of
from .base import Algorithm

__all__ = ["proximal_adapt", "hessian_vector_product", "conjugate_gradient", "implicit_meta_gradient",
           "IMAML"]


def proximal_adapt(model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, *,
                   lam: float, inner_lr: float, inner_steps: int, loss_fn: LossFn) -> Params:
    """φ* ≈ argmin L_s(φ) + (λ/2)‖φ − θ‖² by ``inner_steps`` gradient steps from θ; no graph is kept."""
    theta = {k: v.detach() for k, v in params.items()}
    phi = dict(theta)
    for _ in range(inner_steps):
        phi = {k: v.detach().requires_grad_() for k, v in phi.items()}
        with torch.enable_grad():
            loss = loss_fn(functional_call(model, phi, (x_support,)), y_support)
            grads = grads_of(loss, phi, create_graph=False)
        phi = {k: (p - inner_lr * (g + lam * (p - theta[k]))).detach()          # ∇ of L_s + (λ/2)‖φ − θ‖²
               for (k, p), g in zip(phi.items(), grads)}
    return phi


def hessian_vector_product(model: nn.Module, phi: Params, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn):
    """A function v ↦ ∇²L(φ) v for flat vectors v, sharing one gradient graph of L at φ between calls."""
    phi = {k: v.detach().requires_grad_() for k, v in phi.items()}
    with torch.enable_grad():
        grad = grads_of(loss_fn(functional_call(model, phi, (x,)), y), phi, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            dot = sum((g * u).sum() for g, u in zip(grad, _split(v, grad)) if g.requires_grad)
            if not torch.is_tensor(dot) or not dot.requires_grad:      # a loss linear in φ: H = 0
                return torch.zeros_like(v)
            hv = torch.autograd.grad(dot, list(phi.values()), retain_graph=True, allow_unused=True)
        return _flat([torch.zeros_like(p) if h is None else h for p, h in zip(phi.values(), hv)])
    return hvp


def conjugate_gradient(matvec, b: torch.Tensor, steps: int, rtol: float = 1e-12) -> torch.Tensor:
    """x ≈ A⁻¹ b by ``steps`` iterations of conjugate gradient from x = 0 (A symmetric; ``matvec`` is v ↦ Av).

    Stops early once the residual is below ``rtol``·‖b‖ (CG is then exact up to rounding).
    """
    x, r, p = torch.zeros_like(b), b.clone(), b.clone()
    rs = r @ r
    stop = (rtol * b.norm()) ** 2
    for _ in range(steps):
        if rs <= stop:
            break
        ap = matvec(p)
        alpha = rs / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rs_next = r @ r
        p, rs = r + (rs_next / rs) * p, rs_next
    return x


def implicit_meta_gradient(model: nn.Module, phi: Params, x_support: torch.Tensor, y_support: torch.Tensor,
                           x_query: torch.Tensor, y_query: torch.Tensor, *, lam: float, cg_steps: int,
                           loss_fn: LossFn, first_order: bool = False) -> tuple[list, torch.Tensor]:
    """(g = (I + H/λ)⁻¹ ∇L_q(φ*), shaped like φ; L_q(φ*)), H = ∇²L_s(φ*); ``first_order``: g = ∇L_q(φ*)."""
    phi = {k: v.detach().requires_grad_() for k, v in phi.items()}
    with torch.enable_grad():
        query_loss = loss_fn(functional_call(model, phi, (x_query,)), y_query)
        grad_q = grads_of(query_loss, phi, create_graph=False)
    if first_order:
        return grad_q, query_loss.detach()
    hvp = hessian_vector_product(model, phi, x_support, y_support, loss_fn)
    x = conjugate_gradient(lambda v: v + hvp(v) / lam, _flat(grad_q), cg_steps)
    return _split(x, grad_q), query_loss.detach()


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _split(vector: torch.Tensor, like) -> list[torch.Tensor]:
    return [chunk.view_as(t) for chunk, t in zip(vector.split([t.numel() for t in like]), like)]


class IMAML(Algorithm):
    """iMAML with gradient descent in the inner loop ([P]'s "iMAML, GD"): ``lam`` (λ) and ``cg_steps``."""

    name = "imaml"
    supports = frozenset({"first_order", "grad_clip", "tf32"})
    fixed_path = "per-task-loop"

    refusals = {"batched": "iMAML solves one task's inner problem and CG system at a time",
                "adapt_bn": "its implicit meta-gradient (I + H/λ)⁻¹∇L_q treats every parameter as adapted"}

    def __init__(self, model: nn.Module, params: Params | None = None, *, lam: float = 2.0, cg_steps: int = 5,
                 **kw):
        super().__init__(model, params, **kw)
        if not lam > 0 or cg_steps < 1:
            raise OptionError(f"imaml needs lam (λ) > 0 and cg_steps ≥ 1, got {lam}, {cg_steps}")
        self.lam, self.cg_steps = lam, cg_steps

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, lam={self.lam}, cg_steps={self.cg_steps})"

    def options(self) -> dict:
        return {**super().options(), "lam": self.lam, "cg_steps": self.cg_steps}

    def _backward(self, x_s, y_s, x_q, y_q, iteration):
        """Accumulate (1/T) Σ_i g_i into θ's ``.grad``, one task at a time; return the mean query loss."""
        num_tasks, total = x_s.shape[0], 0.0
        params = list(self.params.values())
        for i in range(num_tasks):
            phi = proximal_adapt(self.model, self.params, x_s[i], y_s[i], lam=self.lam,
                                 inner_lr=self.inner_lr, inner_steps=self.inner_steps, loss_fn=self.loss_fn)
            grads, loss = implicit_meta_gradient(self.model, phi, x_s[i], y_s[i], x_q[i], y_q[i],
                                                 lam=self.lam, cg_steps=self.cg_steps, loss_fn=self.loss_fn,
                                                 first_order=self.first_order)
            for p, g in zip(params, grads):
                p.grad = g / num_tasks if p.grad is None else p.grad + g / num_tasks
            total = total + loss / num_tasks
        return total

    def _adapt(self, theta, x_s, y_s, steps, inner_lr):
        return proximal_adapt(self.model, theta, x_s, y_s, lam=self.lam, inner_lr=inner_lr, inner_steps=steps,
                              loss_fn=self.loss_fn)
