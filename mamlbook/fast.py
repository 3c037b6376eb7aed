"""The fast path for MLP regression (the paper's sinusoids): a hand-written meta-gradient, fused with Adam.

For a plain ReLU MLP (``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU``, ending in a Linear) with
the MSE loss, the whole second-order MAML meta-gradient is written out with batched matrix
products, no autograd tape: per task i and inner step j,

    forward:   z_l = h_l W_lᵀ + b_l,  h_{l+1} = relu(z_l)            (T, N, ·) for all T tasks at once
    backward:  d_L = 2(out − y)/(N·D),  ∇W_l = d_lᵀ h_l,  ∇b_l = Σ_n d_l,  d_{l−1} = (d_l W_l) ⊙ [z_{l−1} > 0]
    inner:     θ_{j+1} = θ_j − α ∇L_support(θ_j)                  (per-task weights (T, out, in) after step 0)
    outer:     v_n = ∇_{θ_n} L_query;  v_j = v_{j+1} − α H_j v_{j+1}  (second order: H_j v by forward-mode
               differentiation of the backward pass above, Pearlmutter's R-op);  ∇θ = Σ_i v_0,i

(ReLU's second derivative is zero almost everywhere, as in autograd). :func:`mlp_meta_grad` is the
plain-PyTorch function; :class:`FusedMLPStep` puts it, the meta-gradient clip and the Adam update (on
the optimizer's own state) into **one** ``torch.compile``-d graph: a training step is then a single call
into a few fused C++ loops and matrix products, instead of the ~200 small ATen operations the same step
runs eagerly (199 for the paper's second-order sinusoid step, counted by a ``TorchDispatchMode``). On the
paper's sinusoid run this makes mamlbook faster than the JAX idiom on a 2-core CPU at low load only
(docs/benchmarks.md, the whole-process race: 0.81–0.85× JAX's wall time at load ≤ 2.6, 1.18× at load
3–4.5); measurements, the tests (``tests/test_fast_paths.py``) and the on-disk compile cache
(:func:`use_cache_dir`): docs/benchmarks.md.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["mlp_layers", "mlp_meta_grad", "use_cache_dir", "cache_dir", "FusedMLPStep", "fused_mlp_step"]


def mlp_layers(model: nn.Module) -> list[tuple[str, str]] | None:
    """[(weight name, bias name)] per Linear if ``model`` is Linear → ReLU → … → Linear, else None."""
    mods = list(model) if isinstance(model, nn.Sequential) else []
    if len(mods) % 2 != 1 or any(type(m) is not (nn.ReLU if i % 2 else nn.Linear) or (i % 2 == 0 and m.bias is None)
                                 for i, m in enumerate(mods)):
        return None
    return [(f"{i}.weight", f"{i}.bias") for i in range(0, len(mods), 2)]


# ------------------------------------------------------------------ the hand-written meta-gradient
# Weights are (out, in), shared by all tasks, or (T, out, in), one per task; activations (T, N, ·).
# A layer with in = 1 or out = 1 (the sinusoid MLP's first and last) is done with broadcasts and
# sums, which the compiler fuses with their neighbours, instead of a tiny matrix product each.
def _wt(w):
    """Wᵀ, batched or not."""
    return w.t() if w.dim() == 2 else w.transpose(1, 2)


def _times_wt(h, w):
    """h Wᵀ: (T, N, in) → (T, N, out)."""
    if w.shape[-1] == 1:                                      # in = 1: an outer product
        return h * _wt(w)
    if w.shape[-2] == 1:                                      # out = 1: a dot product per row
        return (h * w).sum(-1, keepdim=True)
    return torch.matmul(h, w.t()) if w.dim() == 2 else torch.bmm(h, w.transpose(1, 2))


def _linear(h, w, b):
    """h Wᵀ + b."""
    return _times_wt(h, w) + (b if b.dim() == 1 else b.unsqueeze(1))


def _times_w(d, w):
    """d W: (T, N, out) → (T, N, in), back through a layer's input."""
    if w.shape[-2] == 1:                                      # out = 1
        return d * w
    if w.shape[-1] == 1:                                      # in = 1
        return (d * _wt(w)).sum(-1, keepdim=True)
    return torch.matmul(d, w) if w.dim() == 2 else torch.bmm(d, w)


def _outer(d, h):
    """Σ_n d_nᵀ h_n per task: (T, N, out), (T, N, in) → (T, out, in), a weight's gradient."""
    if d.shape[-1] == 1 or h.shape[-1] == 1:
        return (d.unsqueeze(3) * h.unsqueeze(2)).sum(1)
    return torch.bmm(d.transpose(1, 2), h)


def _forward(ws, bs, x):
    """Inputs of every layer (hs[l]; hs[-1] is the output) and pre-activations zs[l]."""
    hs, zs = [x], []
    last = len(ws) - 1
    for l, (w, b) in enumerate(zip(ws, bs)):
        z = _linear(hs[-1], w, b)
        zs.append(z)
        hs.append(torch.relu(z) if l < last else z)
    return hs, zs


def _backward(ws, hs, zs, d):
    """Per-task gradients (T, out, in), (T, out) of the loss whose d(loss)/d(output) is ``d``; and d_l."""
    n = len(ws)
    gws, gbs, ds = [None] * n, [None] * n, [None] * n
    for l in reversed(range(n)):
        ds[l] = d
        gws[l] = _outer(d, hs[l])                            # (T, out, in)
        gbs[l] = d.sum(1)                                    # (T, out)
        if l > 0:
            d = _times_w(d, ws[l]) * (zs[l - 1] > 0)         # (T, N, in)
    return gws, gbs, ds


def _hvp(ws, hs, zs, ds, vws, vbs, scale):
    """H·v of the support loss at θ = (ws, bs), per task, for v = (vws, vbs) (T, ·): forward-mode over
    :func:`_backward` (``scale`` = d(loss)/d(output) per unit residual, 2/(N·D) for the MSE)."""
    n = len(ws)
    hdots = [None]                                           # tangent of each layer's input; x has none
    for l in range(n):
        zdot = _linear(hs[l], vws[l], vbs[l])
        if hdots[l] is not None:
            zdot = zdot + _times_wt(hdots[l], ws[l])
        hdots.append(zdot * (zs[l] > 0) if l < n - 1 else zdot)
    ddot = hdots[n] * scale                                  # tangent of d_L = scale · (out − y)
    hws, hbs = [None] * n, [None] * n
    for l in reversed(range(n)):
        hw = _outer(ddot, hs[l])
        if hdots[l] is not None:
            hw = hw + _outer(ds[l], hdots[l])
        hws[l], hbs[l] = hw, ddot.sum(1)
        if l > 0:
            ddot = (_times_w(ddot, ws[l]) + _times_w(ds[l], vws[l])) * (zs[l - 1] > 0)
    return hws, hbs


def mlp_meta_grad(ws: list[torch.Tensor], bs: list[torch.Tensor], x_s: torch.Tensor, y_s: torch.Tensor,
                  x_q: torch.Tensor, y_q: torch.Tensor, *, inner_lr: float, inner_steps: int = 1,
                  first_order: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """MAML's meta-gradient for a ReLU MLP and the MSE loss, by hand: (∇W per layer, ∇b per layer, loss).

    ``ws[l]`` (out, in) and ``bs[l]`` (out,) are θ; inputs are (T, K|Q, in), targets (T, K|Q, out).
    The loss is (1/T) Σ_i MSE_query_i(θ'_i), exactly :func:`mamlbook.maml.meta_loss` with ``F.mse_loss``.
    """
    scale = 2.0 / (x_s.shape[1] * y_s.shape[2])              # d MSE / d output, per residual
    w, b, caches = list(ws), list(bs), []
    for _ in range(inner_steps):
        hs, zs = _forward(w, b, x_s)
        gws, gbs, ds = _backward(w, hs, zs, (hs[-1] - y_s) * scale)
        caches.append((w, hs, zs, ds))
        w = [wi - inner_lr * g for wi, g in zip(w, gws)]     # (T, out, in) from here on
        b = [bi - inner_lr * g for bi, g in zip(b, gbs)]
    hs, zs = _forward(w, b, x_q)
    r = hs[-1] - y_q                                          # (T, Q, out)
    loss = (r * r).mean()                                     # equal task sizes: the mean of task means
    vws, vbs, _ = _backward(w, hs, zs, r * (2.0 / r.numel()))
    if not first_order:
        for w_j, hs_j, zs_j, ds_j in reversed(caches):
            hws, hbs = _hvp(w_j, hs_j, zs_j, ds_j, vws, vbs, scale)
            vws = [v - inner_lr * h for v, h in zip(vws, hws)]
            vbs = [v - inner_lr * h for v, h in zip(vbs, hbs)]
    return [v.sum(0) for v in vws], [v.sum(0) for v in vbs], loss


# ------------------------------------------------------------------ the compile cache
def cache_dir() -> Path:
    """Where mamlbook keeps compiled graphs: ``$XDG_CACHE_HOME/mamlbook/inductor`` (~/.cache/...)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "mamlbook" / "inductor"


def use_cache_dir() -> str:
    """Point Inductor's on-disk caches at :func:`cache_dir` unless ``TORCHINDUCTOR_CACHE_DIR`` is set."""
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        with contextlib.suppress(OSError):                     # read-only home: PyTorch's default (/tmp)
            cache_dir().mkdir(parents=True, exist_ok=True)
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir())
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")


def can_compile(device: torch.device) -> bool:
    """torch.compile needs a C++ compiler on a CPU (Inductor builds C++ kernels); CUDA uses Triton."""
    return device.type == "cuda" or shutil.which(os.environ.get("CXX", "c++")) is not None \
        or shutil.which("cc") is not None


# ------------------------------------------------------------------ one compiled training step
def _flat_step(theta, exp_avg, exp_avg_sq, steps, x_s, y_s, x_q, y_q, *, layout, inner_lr, inner_steps,
               first_order, grad_clip, lr, beta1, beta2, eps):
    """θ and Adam's state as flat buffers (``layout``: (offset, shape) of W₀, b₀, W₁, …): one training step."""
    tensors = [theta[o:o + math.prod(shape)].view(shape) for o, shape in layout]
    gws, gbs, loss = mlp_meta_grad(tensors[0::2], tensors[1::2], x_s, y_s, x_q, y_q, inner_lr=inner_lr,
                                   inner_steps=inner_steps, first_order=first_order)
    g = torch.cat([t.reshape(-1) for pair in zip(gws, gbs) for t in pair])     # (P,), θ's layout
    if grad_clip:
        g = g.clamp(-grad_clip, grad_clip)
    steps.add_(1)                 # Adam in place: torch.optim.Adam's formula, no weight decay or amsgrad
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    n = steps[0].to(torch.float64)        # bias corrections in double, as Adam's float(step) gives
    step_size = lr / (1 - beta1 ** n)
    denom = exp_avg_sq.sqrt() / (1 - beta2 ** n).sqrt() + eps
    theta.sub_(step_size * exp_avg / denom)
    return loss


class FusedMLPStep:
    """MAML's outer step for a ReLU MLP + MSE as one compiled call: meta-gradient, clip, Adam.

    :meth:`step` makes θ and the Adam optimizer's state views into four flat buffers (θ, exp_avg,
    exp_avg_sq, the step counts), once, values kept: the parameters stay the same ``nn.Parameter``
    objects and the optimizer's ``state_dict`` its usual self, so checkpoints, ``load_state_dict`` and
    resume work as before (a state replaced from outside is re-bound). The compiled graph then takes 8
    tensors instead of 4 per parameter (less guard checking and argument handling per call), and Adam is
    one fused loop over all of θ. It returns the meta-loss as a 0-dim tensor, or None when the optimizer
    is not a plain Adam over exactly these tensors (the caller then takes the ordinary route:
    :meth:`__call__` for the meta-gradient, then ``optimizer.step()``).
    """

    path = "fused-mlp"   # what the run record says when this path trains

    def __init__(self, names: list[tuple[str, str]], *, inner_lr: float, inner_steps: int, first_order: bool,
                 grad_clip: float | None = None, compile: bool = True, device: torch.device | None = None):
        self.names = [n for pair in names for n in pair]
        self.settings = dict(inner_lr=inner_lr, inner_steps=inner_steps, first_order=first_order)
        self.grad_clip = grad_clip or None
        self._bound: dict | None = None
        if compile:
            use_cache_dir()
        # On a CPU the graph's wrapper is C++ too (Inductor's cpp_wrapper): less Python per call,
        # and fewer, larger C++ compilations on the first run.
        options = {"cpp_wrapper": True} if device is None or torch.device(device).type == "cpu" else {}
        self._step, self._grad = (torch.compile(f, fullgraph=True, dynamic=False, options=options) if compile
                                  else f for f in (_flat_step, mlp_meta_grad))

    def __call__(self, params: dict, x_s, y_s, x_q, y_q):
        """(meta-gradient by name, loss), as :func:`mamlbook.functional.make_meta_grad` returns them."""
        flat = [params[k] for k in self.names]
        with torch.no_grad():
            gws, gbs, loss = self._grad(flat[0::2], flat[1::2], x_s, y_s, x_q, y_q, **self.settings)
        return dict(zip(self.names, (g for pair in zip(gws, gbs) for g in pair))), loss

    @staticmethod
    def _hyper(optimizer, tensors) -> tuple | None:
        """(lr, β₁, β₂, ε) of a plain Adam over exactly ``tensors``; None for anything else."""
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        if (group["weight_decay"] or group["amsgrad"] or group["maximize"] or group.get("differentiable")
                or len(group["params"]) != len(tensors) or any(a is not b for a, b in zip(group["params"], tensors))):
            return None
        hyper = (group["lr"], *group["betas"], group["eps"])
        return None if any(isinstance(h, torch.Tensor) for h in hyper) else hyper

    def _bind(self, optimizer, tensors, hyper) -> dict:
        """Make θ and ``optimizer``'s state views of flat buffers, values kept (state created as Adam would)."""
        group = optimizer.param_groups[0]
        on_device = group.get("fused") or group.get("capturable")
        states = [optimizer.state[p] for p in tensors]
        for p, s in zip(tensors, states):
            if not s:
                s["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device if on_device else "cpu")
                s["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        with torch.no_grad():
            theta = torch.cat([p.detach().reshape(-1) for p in tensors])
            exp_avg = torch.cat([s["exp_avg"].reshape(-1) for s in states])
            exp_avg_sq = torch.cat([s["exp_avg_sq"].reshape(-1) for s in states])
            steps = torch.stack([s["step"].to(torch.float32) for s in states])
        layout, offset = [], 0
        for i, (p, s) in enumerate(zip(tensors, states)):
            n, shape = p.numel(), tuple(p.shape)
            p.data = theta[offset:offset + n].view(shape)
            s["exp_avg"] = exp_avg[offset:offset + n].view(shape)
            s["exp_avg_sq"] = exp_avg_sq[offset:offset + n].view(shape)
            s["step"] = steps[i]
            layout.append((offset, shape))
            offset += n
        check = [(p, p.data_ptr(), s["exp_avg"], s["exp_avg_sq"], s["step"]) for p, s in zip(tensors, states)]
        return {"optimizer": optimizer, "hyper": hyper, "buffers": (theta, exp_avg, exp_avg_sq, steps),
                "layout": tuple(layout), "check": check}

    def _still_bound(self, optimizer, hyper) -> bool:
        """θ and the optimizer's state are still the views :meth:`_bind` made (not replaced, e.g. by a resume)."""
        b = self._bound
        if b is None or b["optimizer"] is not optimizer or b["hyper"] != hyper:
            return False
        return all(p.data_ptr() == ptr and (s := optimizer.state.get(p)) is not None and s.get("exp_avg") is m
                   and s.get("exp_avg_sq") is v and s.get("step") is st for p, ptr, m, v, st in b["check"])

    def step(self, optimizer, params: dict, x_s, y_s, x_q, y_q) -> torch.Tensor | None:
        """Meta-gradient + clip + Adam in one compiled call; None if ``optimizer`` is not one it can fuse."""
        tensors = [params[k] for k in self.names]
        hyper = self._hyper(optimizer, tensors)
        if hyper is None:
            return None
        if not self._still_bound(optimizer, hyper):
            self._bound = self._bind(optimizer, tensors, hyper)
        b = self._bound
        lr, beta1, beta2, eps = hyper
        with torch.no_grad():
            return self._step(*b["buffers"], x_s, y_s, x_q, y_q, layout=b["layout"], grad_clip=self.grad_clip,
                              lr=lr, beta1=beta1, beta2=beta2, eps=eps, **self.settings)


def fused_mlp_step(model: nn.Module, *, loss_fn, inner_lr: float, inner_steps: int, first_order: bool,
                   grad_clip: float | None = None, amp: bool = False, device: torch.device | None = None,
                   compile: bool = True) -> FusedMLPStep | None:
    """A :class:`FusedMLPStep` if ``model``/``loss_fn`` fit it (ReLU MLP, ``F.mse_loss``, no AMP), else None."""
    names = mlp_layers(model)
    if names is None or loss_fn is not F.mse_loss or amp:
        return None
    device = device or next(model.parameters()).device
    if compile and not can_compile(device):
        return None
    return FusedMLPStep(names, inner_lr=inner_lr, inner_steps=inner_steps, first_order=first_order,
                        grad_clip=grad_clip, compile=compile, device=device)
