"""Exercise checks: run a reader's function against the package's reference and explain any mismatch.

Used by the exercises of every chapter.

Each ``check_*`` function calls the reader's function on fresh random inputs (float64, so
that a real mistake is never hidden by rounding), compares the result with the tested
``mamlbook`` code, and then either prints ``PASS ...`` or raises an ``AssertionError``
that says in words what differs (which tensor, which shape, which value) and, where the
result matches a known mistake, its likely cause ("this is the first-order gradient: the
inner ``torch.autograd.grad`` needs ``create_graph=True``").

A ``NotImplementedError`` raised by the reader's function passes through unchanged: in a
student notebook an unsolved exercise fails with exactly that error. The checks never
touch the caller's global random state.

    check_inner_loop(fn)         fn(model, params, x_support, y_support, inner_lr) → θ' dict
    check_meta_gradient(fn)      fn(model, params, x_s, y_s, x_q, y_q, inner_lr) → loss or gradients
    check_ci95(fn)               fn(values) → (mean, 95% CI half-width)
    check_reptile_update(fn)     fn(params, adapted, outer_lr) → new params dict
    check_episode_sampler(fn)    fn(images, n_way, k_shot, k_query, generator) → (x_s, y_s, x_q, y_q)
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .evaluate import mean_ci95
from .maml import adapt, grads_of, meta_loss
from .models import SinusoidMLP
from .tasks import sample_sinusoid_tasks

__all__ = ["INNER_LR", "RTOL", "ATOL", "check_inner_loop", "check_meta_gradient", "check_ci95",
           "check_reptile_update", "check_episode_sampler"]

INNER_LR = 0.01          # α of the paper's sinusoid experiments
RTOL, ATOL = 1e-6, 1e-9  # float64: an honest implementation agrees to ~1e-12

Params = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- helpers
def _keeps_rng(check):
    """Run a check without changing the caller's global random state (seeds, dropout, sampling)."""
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            return check(*args, **kwargs)
    return wrapper


def _call(check: str, fn: Callable, *args):
    """Call the reader's function; explain any error except NotImplementedError (an unsolved exercise)."""
    try:
        return fn(*args)
    except NotImplementedError:
        # An unsolved exercise: keep the exception type (the student-version test relies on it)
        # but say what to do, without the chain through this module.
        name = getattr(fn, "__name__", "your function")
        raise NotImplementedError(
            f"{check}: `{name}` is not written yet. Replace `raise NotImplementedError()` in its "
            "cell with your code, run that cell, then run this check again.") from None
    except Exception as err:  # noqa: BLE001 — every error becomes an explanation
        raise AssertionError(f"{check}: your function raised {type(err).__name__}: {err}"
                             f"{_hint_for_error(err)}") from err


def _hint_for_error(err: Exception) -> str:
    msg = str(err)
    if "appears to not have been used in the graph" in msg:
        return ("\nLikely cause: the loss does not depend on the parameters you differentiate. Run the "
                "network with those parameters, functional_call(model, params, (x,)), not model(x).")
    if "does not require grad and does not have a grad_fn" in msg:
        return ("\nLikely cause: something was detached from θ (torch.no_grad(), .detach(), .data or "
                ".item()) before the gradient was taken.")
    if "in-place operation" in msg:
        return ("\nLikely cause: params were modified in place (p -= ...); build new tensors instead, "
                "{name: p - inner_lr * g ...}, so that θ stays unchanged and differentiable.")
    if "backward through the graph a second time" in msg:
        return "\nLikely cause: a graph was freed; the inner gradient needs create_graph=True."
    return ""


def _params_dict(check: str, out, expected: Params, what: str) -> Params:
    """Accept a name → tensor mapping, or a list/tuple in ``expected``'s order; check names and shapes."""
    names = list(expected)
    if out is None:
        raise AssertionError(f"{check}: your function returned None: is its `return` missing?")
    if isinstance(out, Mapping):
        got = dict(out)
    elif isinstance(out, (list, tuple)) and len(out) == len(names):
        got = dict(zip(names, out))
    else:
        raise AssertionError(f"{check}: {what} should be a dict name → tensor with the same names as "
                             f"params ({', '.join(names)}); got {type(out).__name__}")
    missing, extra = [n for n in names if n not in got], [n for n in got if n not in names]
    if missing or extra:
        raise AssertionError(f"{check}: {what} has the wrong names: missing {missing}, unexpected "
                             f"{extra}. Return one tensor per entry of params, under the same name.")
    for name, e in expected.items():
        if not isinstance(got[name], torch.Tensor):
            raise AssertionError(f"{check}: {what}[{name!r}] is a {type(got[name]).__name__}, not a tensor")
        if got[name].shape != e.shape:
            raise AssertionError(f"{check}: {what}[{name!r}] has shape {tuple(got[name].shape)}, "
                                 f"expected {tuple(e.shape)} (the shape of params[{name!r}])")
    return {n: got[n] for n in names}


def _close(a: Params, b: Params) -> bool:
    return all(a[k].shape == b[k].shape and
               torch.allclose(a[k].detach().double(), b[k].detach().double(), rtol=RTOL, atol=ATOL)
               for k in b)


def _largest_difference(got: Params, expected: Params, what: str) -> str:
    name = max(expected, key=lambda k: (got[k].detach().double() - expected[k].double()).abs().max())
    diff = (got[name].detach().double() - expected[name].double()).abs()
    values = f"(difference {diff.max().item():.3g})"
    if diff.dim() == 0:                                     # a scalar, named by its key (or not)
        label = f"{what}, {name}" if name else what
        return f"{label}: got {got[name].item():.6g}, expected {expected[name].item():.6g} {values}"
    idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    return (f"{what}[{name!r}] differs most at index {idx}: got {got[name][idx].item():.6g}, "
            f"expected {expected[name][idx].item():.6g} {values}")


def _explain(check: str, got: Params, expected: Params, candidates, what: str) -> AssertionError:
    """An AssertionError naming the largest difference and, if one matches, the likely mistake."""
    msg = f"{check}: {_largest_difference(got, expected, what)}."
    for cause, make in candidates:
        if _close(got, make()):
            return AssertionError(f"{msg}\nYour result equals {cause}.")
    return AssertionError(msg + "\nIt matches none of the usual mistakes; compare your code line by "
                          "line with the equations in the text.")


def _sinusoid_setup(seed: int, num_tasks: int, k_shot: int):
    """A float64 paper MLP, parameters θ near (but *not*) the model's own, and sinusoid tasks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SinusoidMLP().double()                                   # the paper's init
    params = {k: (v.detach() + 0.1 * torch.randn(v.shape, generator=gen, dtype=torch.float64))
              .requires_grad_() for k, v in model.named_parameters()}
    b = sample_sinusoid_tasks(num_tasks, k_shot, generator=gen).to(dtype=torch.float64)
    return model, params, (b.x_support, b.y_support, b.x_query, b.y_query)


def _grads(loss: torch.Tensor, params: Params) -> Params:
    return dict(zip(params, grads_of(loss, params, create_graph=False)))


def _plain_steps(model, params, x, y, lr, steps, *, reduction="mean", frozen_grad=False) -> Params:
    """Plain SGD steps (no graph) with any sign of lr: the reference for the usual mistakes."""
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    first = None
    for _ in range(steps):
        g = _grads(F.mse_loss(functional_call(model, p, (x,)), y, reduction=reduction), p)
        first = g if first is None else first                   # frozen_grad: every step uses θ's gradient
        p = {k: (v - lr * (first if frozen_grad else g)[k]).detach().requires_grad_() for k, v in p.items()}
    return p


# ----------------------------------------------------------------------------- inner loop
@_keeps_rng
def check_inner_loop(fn: Callable, *, inner_steps: int = 1, first_order: bool = False, seed: int = 0) -> None:
    """Check ``fn(model, params, x_support, y_support, inner_lr) → θ'`` against :func:`mamlbook.maml.adapt`.

    Args:
        inner_steps: how many SGD steps ``fn`` is meant to take.
        first_order: True if ``fn`` is meant to drop the second-order term (FOMAML).
    """
    check = "check_inner_loop"
    for trial, k_shot in enumerate((5, 10)):
        model, params, (xs, ys, xq, yq) = _sinusoid_setup(seed + trial, 1, k_shot)
        xs, ys, xq, yq = xs[0], ys[0], xq[0], yq[0]                         # (K, 1) each
        out = _call(check, fn, model, params, xs, ys, INNER_LR)
        expected = adapt(model, params, xs, ys, inner_lr=INNER_LR, inner_steps=inner_steps,
                         first_order=first_order)
        got = _params_dict(check, out, expected, "the returned θ'")
        if not _close(got, expected):
            def steps(lr, n=inner_steps, **kw):
                return lambda: _plain_steps(model, params, xs, ys, lr, n, **kw)
            candidates = [("θ itself: no inner step was applied, or the updated parameters were "
                           "not returned", lambda: params)]
            candidates += [(f"{n} inner step(s), but {inner_steps} were expected", steps(INNER_LR, n))
                           for n in range(1, 5) if n != inner_steps]
            candidates += [
                ("θ + α∇L: a step *up* the gradient; gradient descent subtracts, θ − α∇L",
                 steps(-INNER_LR)),
                ("θ − ∇L: the gradient was not multiplied by inner_lr (α)", steps(1.0)),
                ("a step on the *summed* squared error; the loss is the mean over the K support "
                 "points (F.mse_loss)", steps(INNER_LR, reduction="sum")),
                ("the adaptation of the network's own weights, not of the `params` argument: run "
                 "the network as functional_call(model, params, (x,))", lambda: _plain_steps(
                     model, dict(model.named_parameters()), xs, ys, INNER_LR, inner_steps)),
            ]
            if inner_steps > 1:
                candidates.append(("steps that all use the gradient at the starting θ; compute "
                                   "each step's loss with the parameters updated so far",
                                   steps(INNER_LR, frozen_grad=True)))
            raise _explain(check, got, expected, candidates, "θ'")
        _check_meta_gradient_through(check, model, params, got, expected, (xs, ys, xq, yq), inner_steps,
                                     first_order)
    order = "first-order" if first_order else "second-order"
    print(f"PASS {check}: θ' after {inner_steps} step(s) and its {order} gradient w.r.t. θ match "
          "mamlbook.maml.adapt on 2 random sinusoid tasks (float64)")


def _check_meta_gradient_through(check, model, params, got, expected, task, inner_steps, first_order):
    """θ' has the right values; is its dependence on θ the right one (second vs first order)?"""
    xs, ys, xq, yq = task
    if not any(t.requires_grad for t in got.values()):
        raise AssertionError(f"{check}: θ' has the right values but is detached from θ (no "
                             "gradient can flow back). Likely cause: torch.no_grad(), .detach() or "
                             ".data in the inner step. MAML differentiates the query loss through θ'.")

    def query_grad(adapted):
        return _grads(F.mse_loss(functional_call(model, adapted, (xq,)), yq), params)

    got_g, want = query_grad(got), query_grad(expected)
    if _close(got_g, want):
        return
    other = query_grad(adapt(model, params, xs, ys, inner_lr=INNER_LR, inner_steps=inner_steps,
                             first_order=not first_order))
    where = _largest_difference(got_g, want, "∇θ L_query(θ')")
    if _close(got_g, other):
        raise AssertionError(f"{check}: θ' has the right values, but its gradient w.r.t. θ is the " + (
            f"FIRST-ORDER one: {where}.\nLikely cause: the inner torch.autograd.grad(...) is missing "
            "create_graph=True (or the inner gradient was detached), so the Hessian term of MAML is dropped."
            if not first_order else f"SECOND-ORDER one: {where}.\nFirst-order MAML treats the inner "
            "gradient as a constant: take it with create_graph=False, or .detach() it."))
    raise AssertionError(f"{check}: θ' has the right values but the wrong gradient w.r.t. θ: {where}. "
                         "Is part of θ' built from detached tensors?")


# ----------------------------------------------------------------------------- meta-gradient
@_keeps_rng
def check_meta_gradient(fn: Callable, *, first_order: bool = False, inner_steps: int = 1,
                        seed: int = 0) -> None:
    """Check ``fn(model, params, x_support, y_support, x_query, y_query, inner_lr)`` for a meta-batch.

    ``fn`` may return the outer loss (a scalar tensor, differentiated here) or the meta-gradient
    (a dict name → tensor, or a list in ``params`` order). Inputs are (T, K, 1) and (T, Q, 1).
    The result is compared with :func:`mamlbook.maml.meta_loss` both ways, second- and
    first-order, so a silently first-order implementation is named as such.
    """
    check = "check_meta_gradient"
    model, params, data = _sinusoid_setup(seed, 4, 5)
    out = _call(check, fn, model, params, *data, INNER_LR)

    def reference(xs, ys, xq, yq, fo=first_order, steps=inner_steps):
        loss = meta_loss(model, params, xs, ys, xq, yq, inner_lr=INNER_LR, inner_steps=steps,
                         first_order=fo, batched=False)
        return loss, _grads(loss, params)

    want_loss, want = reference(*data)
    if isinstance(out, torch.Tensor) and out.numel() == 1:                # the outer loss, not its gradient
        if not torch.allclose(out.detach().double(), want_loss.detach(), rtol=RTOL, atol=ATOL):
            candidates = _meta_candidates(reference, data, first_order, inner_steps, loss=True)
            raise _explain(check, {"": out.reshape(())}, {"": want_loss.detach()},
                           candidates, "the outer loss")
        if not out.requires_grad:
            raise AssertionError(f"{check}: the outer loss has the right value but is detached "
                                 "from params: no meta-gradient can flow. Likely cause: "
                                 "torch.no_grad(), .detach() or .item() somewhere inside.")
        got = _grads(out, params)
    else:
        got = _params_dict(check, out, want, "the returned meta-gradient")
    if not _close(got, want):
        raise _explain(check, got, want,
                       _meta_candidates(reference, data, first_order, inner_steps, loss=False),
                       "the meta-gradient")
    order = "first-order" if first_order else "second-order"
    print(f"PASS {check}: the {order} meta-gradient matches mamlbook.maml.meta_loss on a random "
          "meta-batch of 4 sinusoid tasks (float64)")


def _meta_candidates(reference, data, first_order, inner_steps, *, loss: bool):
    """(cause, value) pairs for the usual meta-gradient mistakes, as losses or as gradients."""
    xs, ys, xq, yq = data
    pick = (lambda r: {"": r[0].detach()}) if loss else (lambda r: r[1])
    scale = (lambda r, c: {"": c * r[0].detach()}) if loss else (
        lambda r, c: {k: c * v for k, v in r[1].items()})
    t = xs.shape[0]
    out = [] if loss else [
        ("the FIRST-ORDER meta-gradient: the inner torch.autograd.grad(...) needs "
         "create_graph=True, otherwise the Hessian term is silently dropped", lambda: pick(
             reference(*data, fo=True))) if not first_order else
        ("the SECOND-ORDER meta-gradient; first-order MAML takes the inner gradient with "
         "create_graph=False (or detaches it)", lambda: pick(reference(*data, fo=False))),
        ("minus the meta-gradient: check the sign", lambda: scale(reference(*data), -1.0))]
    out += [
        ("the gradient of the query loss at θ itself: the query loss must be evaluated at the "
         "adapted parameters θ'_i", lambda: pick(reference(*data, steps=0))),
        ("the result with support and query swapped: adapt on the support set, score on the query "
         "set", lambda: pick(reference(xq, yq, xs, ys))),
        (f"{t} × the expected value: the task losses were summed; MAML's outer loss (as in the "
         "official code and mamlbook) is their mean over the T tasks", lambda: scale(reference(*data), t)),
        ("the value for the first task only: loop over (or vmap) all T tasks of the meta-batch",
         lambda: pick(reference(xs[:1], ys[:1], xq[:1], yq[:1]))),
    ]
    out += [(f"the result after {n} inner step(s), but {inner_steps} were expected",
             lambda n=n: pick(reference(*data, steps=n))) for n in (1, 2, 3) if n != inner_steps]
    return out


# ----------------------------------------------------------------------------- 95% CI
@_keeps_rng
def check_ci95(fn: Callable, *, seed: int = 0) -> None:
    """Check ``fn(values) → (mean, half-width)`` against :func:`mamlbook.evaluate.mean_ci95`.

    The half-width is 1.96·σ/√n with the population σ (NumPy's default, ddof=0), as in the
    official MAML code's evaluation.
    """
    check = "check_ci95"
    gen = torch.Generator().manual_seed(seed)

    def pair(m, c):
        return lambda: {"the mean": torch.tensor(m), "the half-width": torch.tensor(c)}
    for n in (5, 12, 600):          # n = 2 would confuse ddof=1 with a missing √n
        values = 3.0 * torch.rand(n, generator=gen, dtype=torch.float64)   # like per-task MSEs
        out = _call(check, fn, values.clone())
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise AssertionError(f"{check}: return a pair (mean, ci95_half_width); got "
                                 f"{type(out).__name__} {out!r:.80}")
        try:
            got_mean, got_ci = float(out[0]), float(out[1])
        except (TypeError, ValueError, RuntimeError) as err:
            raise AssertionError(f"{check}: the two returned values must be numbers (floats or "
                                 f"one-element tensors): {err}") from err
        mean, ci = mean_ci95(values)
        std, sqrt_n = values.std(unbiased=False).item(), n ** 0.5
        got, want = pair(got_mean, got_ci)(), pair(mean, ci)()
        if _close(got, want):
            continue
        sample_std = values.std(unbiased=True).item()
        candidates = [
            ("(mean − CI, mean + CI), the interval's two ends; return (mean, half-width)",
             pair(mean - ci, mean + ci)),
            ("(half-width, mean): the two values are swapped", pair(ci, mean)),
            ("the sample standard deviation (ddof=1, torch's default unbiased=True); the official "
             "code uses NumPy's np.std, the population std (ddof=0): use unbiased=False",
             pair(mean, 1.96 * sample_std / sqrt_n)),
            ("1.96·σ, without dividing by √n: the CI is of the *mean*, σ/√n is its standard error",
             pair(mean, 1.96 * std)),
            ("σ/√n without the factor 1.96 (the 97.5% normal quantile)", pair(mean, std / sqrt_n)),
            ("2·σ/√n; the official code uses exactly 1.96", pair(mean, 2.0 * std / sqrt_n)),
            ("the full width 2·1.96·σ/√n; return the half-width", pair(mean, 2 * ci)),
            ("1.96·σ²/√n: the variance was used in place of the standard deviation",
             pair(mean, 1.96 * std ** 2 / sqrt_n)),
            ("1.96·σ/n: divide by √n, not n", pair(mean, 1.96 * std / n)),
        ]
        raise _explain(check, got, want, candidates, f"for n = {n} values")
    print(f"PASS {check}: (mean, 1.96·σ/√n) matches mamlbook.evaluate.mean_ci95 for n = 5, 12 and 600")


# ----------------------------------------------------------------------------- Reptile
@_keeps_rng
def check_reptile_update(fn: Callable, *, batched: bool = False, seed: int = 0) -> None:
    """Check Reptile's outer update ``fn(params, adapted, outer_lr) → new params``.

    Reptile (Nichol, Achiam & Schulman 2018) moves θ towards the task-adapted parameters:
    θ ← θ + ε · (1/T) Σ_i (φ_i − θ). ``adapted`` is a list of T dicts (one per task), or, with
    ``batched=True``, one dict of (T, *shape) tensors as :func:`mamlbook.maml.batched_adapt` returns.
    """
    check = "check_reptile_update"
    gen = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in SinusoidMLP().named_parameters()}
    outer_lr = 0.1
    for num_tasks in (3, 5):
        theta = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
        phis = [{k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=torch.float64)
                 for k, v in theta.items()} for _ in range(num_tasks)]
        stacked = {k: torch.stack([p[k] for p in phis]) for k in theta}    # (T, *shape)
        mean_phi = {k: v.mean(0) for k, v in stacked.items()}
        adapted = ({k: v.clone() for k, v in stacked.items()} if batched
                   else [{k: v.clone() for k, v in p.items()} for p in phis])
        out = _call(check, fn, {k: v.clone() for k, v in theta.items()}, adapted, outer_lr)
        got = _params_dict(check, out, theta, "the returned parameters")

        def step(scale, target=mean_phi, eps=outer_lr, base=1.0):
            return lambda: {k: base * theta[k] + scale * eps * (target[k] - theta[k]) for k in theta}
        want = step(1.0)()
        if not _close(got, want):
            candidates = [
                ("θ − ε·mean(φ_i − θ): a step *away* from the adapted parameters", step(-1.0)),
                ("mean(φ_i), the average of the adapted parameters: ε = 1, the outer step size "
                 "was not applied", lambda: mean_phi),
                (f"θ + ε·Σ(φ_i − θ): summed over the {num_tasks} tasks instead of averaged", step(num_tasks)),
                ("ε·mean(φ_i − θ), the update itself: add it to θ", step(1.0, base=0.0)),
                ("θ unchanged", lambda: theta),
                ("the update towards the LAST task's φ only: average over all tasks",
                 step(1.0, target=phis[-1])),
                ("the update towards the FIRST task's φ only: average over all tasks",
                 step(1.0, target=phis[0])),
            ]
            raise _explain(check, got, want, candidates, "the new θ")
    print(f"PASS {check}: θ + ε·mean(φ_i − θ) is right for meta-batches of 3 and 5 random tasks")


# ----------------------------------------------------------------------------- episodes
@_keeps_rng
def check_episode_sampler(fn: Callable, *, n_way: int = 5, k_shot: int = 2, k_query: int = 3,
                          seed: int = 0) -> None:
    """Check an N-way K-shot task sampler ``fn(images, n_way, k_shot, k_query, generator)``.

    ``images`` is (num_classes, per_class, C, H, W), grouped by class. ``fn`` returns one task
    ``(x_support (N·K, C, H, W), y_support (N·K,), x_query (N·Q, C, H, W), y_query (N·Q,))``
    with labels 0..N−1. Every test image here is filled with its own id, so the check can tell
    exactly which class and drawing each returned image is.
    """
    check = "check_episode_sampler"
    num_classes, per_class, image = 12, k_shot + k_query + 1, (1, 2, 2)
    ids = torch.arange(num_classes * per_class, dtype=torch.float32)
    images = ids.view(num_classes, per_class, 1, 1, 1).expand(num_classes, per_class, *image).clone()

    def task(s: int) -> dict:
        out = _call(check, fn, images.clone(), n_way, k_shot, k_query, torch.Generator().manual_seed(s))
        return _episode_ids(check, out, n_way, k_shot, k_query, image, per_class, num_classes)
    num_tasks = 30
    tasks = [task(seed + t) for t in range(num_tasks)]
    drawn = [cd for t in tasks for cd in t["support"] + t["query"]]           # (class, drawing) pairs
    seen_classes, seen_drawings = {c for c, _ in drawn}, {d for _, d in drawn}
    if task(seed) != tasks[0]:
        raise AssertionError(f"{check}: the same generator seed gave a different task. Draw every "
                             "random number from the `generator` argument (torch.randperm(..., "
                             "generator=generator)), not from Python's random or the global seed.")
    if seen_classes != set(range(num_classes)):
        raise AssertionError(f"{check}: in {num_tasks} tasks, classes {sorted(set(range(num_classes)) - seen_classes)} "
                             f"of {num_classes} were never drawn: sample the N classes among all of them.")
    if seen_drawings != set(range(per_class)):
        raise AssertionError(f"{check}: in {num_tasks} tasks, drawings {sorted(set(range(per_class)) - seen_drawings)} "
                             "of each class were never used: sample the K + Q images among all of a class's images.")
    if all(t["labels_sorted"] for t in tasks):
        raise AssertionError(f"{check}: in all {num_tasks} tasks label 0 went to the smallest class index, "
                             "label 1 to the next, and so on. Give label j to the j-th class *drawn* "
                             "(random order), so that no class→label pattern can be learned across tasks.")
    print(f"PASS {check}: {n_way}-way {k_shot}-shot tasks with {k_query} queries per class: right shapes, one "
          "distinct class per label, distinct support and query images, reproducible from "
          f"the generator, random classes and labels ({num_tasks} tasks checked)")


def _episode_ids(check, out, n, k, q, image, per_class, num_classes) -> dict:
    """Validate one returned task; return which (class, drawing) each image is, per set."""
    if not (isinstance(out, (tuple, list)) and len(out) == 4
            and all(isinstance(t, torch.Tensor) for t in out)):
        raise AssertionError(f"{check}: return four tensors (x_support, y_support, x_query, y_query); "
                             f"got {type(out).__name__}")
    result, label_class = {}, {}
    for part, x, y, m, letter in (("support", out[0], out[1], k, "K"), ("query", out[2], out[3], q, "Q")):
        if tuple(x.shape) == (n, m, *image):
            raise AssertionError(f"{check}: x_{part} has shape {tuple(x.shape)}, expected "
                                 f"{(n * m, *image)}: flatten the class and image dims, x.reshape({n * m}, ...)")
        if tuple(x.shape) != (n * m, *image) or tuple(y.shape) != (n * m,):
            raise AssertionError(f"{check}: x_{part} {tuple(x.shape)} and y_{part} {tuple(y.shape)} should "
                                 f"be {(n * m, *image)} and {(n * m,)} (N·{letter} = {n * m})")
        if y.dtype != torch.int64:
            raise AssertionError(f"{check}: y_{part} has dtype {y.dtype}; class labels must be int64 "
                                 "(torch.long), as F.cross_entropy expects")
        flat = x.reshape(n * m, -1)
        code = flat[:, 0]
        if not (torch.equal(flat, code[:, None].expand_as(flat)) and torch.equal(code, code.round())
                and code.min() >= 0 and code.max() < num_classes * per_class):
            raise AssertionError(f"{check}: some x_{part} images are not input images, unchanged (were "
                                 "they normalised, transposed, or mixed?); return images[class, drawing]")
        drawn = [(int(c) // per_class, int(c) % per_class) for c in code.tolist()]
        counts = torch.bincount(y.clamp(min=0), minlength=n)
        if y.min() < 0 or y.max() >= n or not torch.all(counts == m):
            raise AssertionError(f"{check}: y_{part} = {y.tolist()}; it should hold each label 0..{n - 1} "
                                 f"exactly {m} times")
        for (cls, _), label in zip(drawn, y.tolist()):
            if label_class.setdefault(label, cls) != cls:
                raise AssertionError(f"{check}: label {label} is given to images of classes "
                                     f"{label_class[label]} and {cls}: one label must stand for one class, "
                                     "in support and query alike")
        result[part] = drawn
    classes = [label_class[j] for j in range(n)]
    if len(set(classes)) < n:
        raise AssertionError(f"{check}: the labels stand for classes {classes}: the N classes of a task "
                             "must be distinct (torch.randperm(num_classes)[:n_way], not torch.randint)")
    everything = result["support"] + result["query"]
    if len(set(everything)) < len(everything):
        twice = sorted({d for d in everything if everything.count(d) > 1})[:3]
        raise AssertionError(f"{check}: images (class, drawing) {twice} are used twice in one task: "
                             "draw K + Q *different* images per class, K for support and Q for query")
    result["labels_sorted"] = classes == sorted(classes)
    return result
