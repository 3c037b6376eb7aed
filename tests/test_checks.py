"""The exercise checks pass right answers, name the usual mistakes, and let NotImplementedError through."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mamlbook import checks


# ---------------------------------------------------------------- readers' answers, right and wrong
def inner_update(model, params, x, y, inner_lr, *, steps=1, create_graph=True, sign=1.0,
                 reduction="mean"):
    """θ' = θ − α∇L(θ), written out as a reader would (variants make the usual mistakes)."""
    for _ in range(steps):
        loss = F.mse_loss(functional_call(model, params, (x,)), y, reduction=reduction)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        params = {k: p - sign * inner_lr * g for (k, p), g in zip(params.items(), grads)}
    return params


def outer_loss(model, params, xs, ys, xq, yq, inner_lr, *, create_graph=True, adapt_on="support",
               reduce=torch.mean):
    """The MAML outer loss for a meta-batch, one task at a time."""
    losses = []
    for i in range(xs.shape[0]):
        x_in, y_in = (xs[i], ys[i]) if adapt_on == "support" else (xq[i], yq[i])
        x_out, y_out = (xq[i], yq[i]) if adapt_on == "support" else (xs[i], ys[i])
        adapted = inner_update(model, params, x_in, y_in, inner_lr, create_graph=create_graph)
        losses.append(F.mse_loss(functional_call(model, adapted, (x_out,)), y_out))
    return reduce(torch.stack(losses))


def not_implemented(*args):
    raise NotImplementedError()


# ---------------------------------------------------------------- check_inner_loop
def test_inner_loop_passes_a_correct_step_and_says_so(capsys):
    checks.check_inner_loop(inner_update)
    assert capsys.readouterr().out.startswith("PASS check_inner_loop:")


def test_inner_loop_passes_two_correct_steps():
    checks.check_inner_loop(lambda *a: inner_update(*a, steps=2), inner_steps=2)


def test_inner_loop_names_a_missing_create_graph():
    with pytest.raises(AssertionError, match=r"FIRST-ORDER(.|\n)*create_graph=True"):
        checks.check_inner_loop(lambda *a: inner_update(*a, create_graph=False))


def test_inner_loop_accepts_first_order_when_asked_for_it():
    checks.check_inner_loop(lambda *a: inner_update(*a, create_graph=False), first_order=True)


def test_inner_loop_rejects_second_order_when_first_order_is_asked_for():
    with pytest.raises(AssertionError, match="SECOND-ORDER"):
        checks.check_inner_loop(inner_update, first_order=True)


@pytest.mark.parametrize("answer, kwargs, cause", [
    (lambda *a: inner_update(*a, sign=-1.0), {}, "a step \\*up\\* the gradient"),
    (lambda *a: inner_update(*a, reduction="sum"), {}, "summed\\* squared error"),
    (lambda m, p, x, y, lr: inner_update(m, p, x, y, 1.0), {}, "not multiplied by inner_lr"),
    (lambda m, p, x, y, lr: dict(p), {}, "no inner step was applied"),
    (inner_update, {"inner_steps": 2}, "1 inner step\\(s\\), but 2 were expected"),
    (lambda m, p, x, y, lr: inner_update(m, dict(m.named_parameters()), x, y, lr), {},
     "network's own weights"),
], ids=["sign", "summed-loss", "no-alpha", "no-step", "too-few-steps", "model-weights"])
def test_inner_loop_names_the_likely_mistake(answer, kwargs, cause):
    with pytest.raises(AssertionError, match=cause):
        checks.check_inner_loop(answer, **kwargs)


def test_inner_loop_says_which_value_differs():
    with pytest.raises(AssertionError, match=r"θ'\['\d\.(weight|bias)'\] differs most at index \(.*\): got"):
        checks.check_inner_loop(lambda *a: inner_update(*a, sign=-1.0))


def test_inner_loop_names_detached_parameters():
    def detached(*args):
        return {k: v.detach() for k, v in inner_update(*args).items()}
    with pytest.raises(AssertionError, match="detached from θ"):
        checks.check_inner_loop(detached)


def test_inner_loop_names_a_missing_parameter():
    def drops_a_bias(*args):
        out = inner_update(*args)
        del out["4.bias"]
        return out
    with pytest.raises(AssertionError, match=r"missing \['4.bias'\]"):
        checks.check_inner_loop(drops_a_bias)


def test_inner_loop_names_a_wrong_shape():
    def flattens(*args):
        return {k: v.reshape(-1) for k, v in inner_update(*args).items()}
    with pytest.raises(AssertionError, match=r"shape \(40,\), expected \(40, 1\)"):
        checks.check_inner_loop(flattens)


def test_an_in_place_update_becomes_an_explained_assertion():
    def in_place(model, params, x, y, inner_lr):
        loss = F.mse_loss(functional_call(model, params, (x,)), y)
        for p, g in zip(params.values(), torch.autograd.grad(loss, list(params.values()))):
            p -= inner_lr * g
        return params
    with pytest.raises(AssertionError, match="raised RuntimeError(.|\n)*modified in place"):
        checks.check_inner_loop(in_place)


# ---------------------------------------------------------------- check_meta_gradient
def test_meta_gradient_passes_a_correct_outer_loss(capsys):
    checks.check_meta_gradient(outer_loss)
    assert capsys.readouterr().out.startswith("PASS check_meta_gradient:")


def test_meta_gradient_passes_correct_gradients_returned_as_a_list():
    def gradients(model, params, *data):
        return torch.autograd.grad(outer_loss(model, params, *data), list(params.values()))
    checks.check_meta_gradient(gradients)


def test_meta_gradient_detects_a_silently_first_order_implementation():
    with pytest.raises(AssertionError, match=r"FIRST-ORDER meta-gradient(.|\n)*create_graph=True"):
        checks.check_meta_gradient(lambda *a: outer_loss(*a, create_graph=False))


def test_meta_gradient_accepts_first_order_when_asked_for_it():
    checks.check_meta_gradient(lambda *a: outer_loss(*a, create_graph=False), first_order=True)


@pytest.mark.parametrize("answer, cause", [
    (lambda *a: outer_loss(*a, reduce=torch.sum), "the task losses were summed"),
    (lambda *a: outer_loss(*a, adapt_on="query"), "support and query swapped"),
    (lambda m, p, xs, ys, xq, yq, lr: F.mse_loss(functional_call(m, p, (xq,)), yq),
     "query loss at θ itself"),
], ids=["summed-tasks", "swapped", "no-adaptation"])
def test_meta_gradient_names_the_likely_mistake(answer, cause):
    with pytest.raises(AssertionError, match=cause):
        checks.check_meta_gradient(answer)


def test_meta_gradient_names_a_detached_loss():
    with pytest.raises(AssertionError, match="detached"):
        checks.check_meta_gradient(lambda *a: outer_loss(*a).detach())


# ---------------------------------------------------------------- check_ci95
def population_ci(values):
    n = values.numel()
    mean = values.sum() / n
    std = (((values - mean) ** 2).sum() / n).sqrt()
    return mean.item(), (1.96 * std / n ** 0.5).item()


def test_ci95_passes_the_official_formula(capsys):
    checks.check_ci95(population_ci)
    assert capsys.readouterr().out.startswith("PASS check_ci95:")


@pytest.mark.parametrize("answer, cause", [
    (lambda v: (v.mean(), 1.96 * v.std() / v.numel() ** 0.5), "ddof=1"),
    (lambda v: (v.mean(), 1.96 * v.std(unbiased=False)), "without dividing by √n"),
    (lambda v: (v.mean(), v.std(unbiased=False) / v.numel() ** 0.5), "without the factor 1.96"),
    (lambda v: (v.mean() - population_ci(v)[1], v.mean() + population_ci(v)[1]), "two ends"),
    (lambda v: (v.mean(), 2 * population_ci(v)[1]), "full width"),
    (lambda v: (v.mean(), 2 * v.std(unbiased=False) / v.numel() ** 0.5), "exactly 1.96"),
], ids=["sample-std", "no-sqrt-n", "no-1.96", "interval-ends", "full-width", "factor-2"])
def test_ci95_names_the_likely_mistake(answer, cause):
    with pytest.raises(AssertionError, match=cause):
        checks.check_ci95(answer)


def test_ci95_asks_for_a_pair():
    with pytest.raises(AssertionError, match=r"return a pair \(mean, ci95_half_width\)"):
        checks.check_ci95(lambda v: v.mean())


# ---------------------------------------------------------------- check_reptile_update
def reptile(params, adapted, outer_lr):
    """θ + ε·(1/T)·Σ_i (φ_i − θ), Nichol et al. (2018), written with a plain loop."""
    new = {}
    for name, theta in params.items():
        total = torch.zeros_like(theta)
        for phi in adapted:
            total = total + (phi[name] - theta)
        new[name] = theta + outer_lr * total / len(adapted)
    return new


def test_reptile_update_passes_a_correct_update(capsys):
    checks.check_reptile_update(reptile)
    assert capsys.readouterr().out.startswith("PASS check_reptile_update:")


def test_reptile_update_passes_a_correct_batched_update():
    checks.check_reptile_update(lambda p, a, eps: {k: p[k] + eps * (a[k].mean(0) - p[k]) for k in p},
                                batched=True)


@pytest.mark.parametrize("answer, cause", [
    (lambda p, a, eps: {k: p[k] - eps * (reptile(p, a, 1.0)[k] - p[k]) for k in p}, r"\*away\* from"),
    (lambda p, a, eps: reptile(p, a, 1.0), "outer step size was not applied"),
    (lambda p, a, eps: {k: p[k] + eps * sum(phi[k] - p[k] for phi in a) for k in p},
     "summed over the 3 tasks"),
    (lambda p, a, eps: {k: eps * (reptile(p, a, 1.0)[k] - p[k]) for k in p}, "the update itself"),
    (lambda p, a, eps: reptile(p, a[-1:], eps), "LAST task"),
], ids=["sign", "no-epsilon", "sum", "update-only", "last-task"])
def test_reptile_update_names_the_likely_mistake(answer, cause):
    with pytest.raises(AssertionError, match=cause):
        checks.check_reptile_update(answer)


# ---------------------------------------------------------------- check_episode_sampler
def sampler(images, n_way, k_shot, k_query, generator, *, sort_classes=False, overlap=False,
            distinct_classes=True, use_generator=True):
    """One N-way task from images (classes, per_class, C, H, W); variants make the usual mistakes."""
    num_classes, per_class = images.shape[:2]
    gen = generator if use_generator else None
    if distinct_classes:
        classes = torch.randperm(num_classes, generator=gen)[:n_way]
    else:
        classes = torch.randint(num_classes, (n_way,), generator=gen)
    if sort_classes:
        classes = classes.sort().values
    support, query = [], []
    for c in classes:
        order = torch.randperm(per_class, generator=gen)
        support.append(images[c, order[:k_shot]])
        query.append(images[c, order[:k_query]] if overlap else images[c, order[k_shot:k_shot + k_query]])
    labels = torch.arange(n_way)
    return (torch.cat(support), labels.repeat_interleave(k_shot),
            torch.cat(query), labels.repeat_interleave(k_query))


def test_episode_sampler_passes_a_correct_sampler(capsys):
    checks.check_episode_sampler(sampler)
    assert capsys.readouterr().out.startswith("PASS check_episode_sampler:")


@pytest.mark.parametrize("kwargs, cause", [
    ({"sort_classes": True}, "label 0 went to the smallest class index"),
    ({"overlap": True}, "used twice in one task"),
    ({"distinct_classes": False}, "must be distinct"),
    ({"use_generator": False}, "same generator seed gave a different task"),
], ids=["sorted-labels", "support-in-query", "repeated-class", "global-rng"])
def test_episode_sampler_names_the_likely_mistake(kwargs, cause):
    with pytest.raises(AssertionError, match=cause):
        checks.check_episode_sampler(lambda *a: sampler(*a, **kwargs))


def test_episode_sampler_asks_to_flatten_classes_and_shots():
    def unflattened(*args):
        xs, ys, xq, yq = sampler(*args)
        return xs.reshape(5, 2, *xs.shape[1:]), ys, xq, yq
    with pytest.raises(AssertionError, match=r"flatten the class and image dims"):
        checks.check_episode_sampler(unflattened)


def test_episode_sampler_asks_for_int64_labels():
    def float_labels(*args):
        xs, ys, xq, yq = sampler(*args)
        return xs, ys.float(), xq, yq.float()
    with pytest.raises(AssertionError, match="int64"):
        checks.check_episode_sampler(float_labels)


# ---------------------------------------------------------------- every check
EVERY_CHECK = [checks.check_inner_loop, checks.check_meta_gradient, checks.check_ci95,
               checks.check_reptile_update, checks.check_episode_sampler]


@pytest.mark.parametrize("check", EVERY_CHECK, ids=lambda c: c.__name__)
def test_an_unsolved_exercise_fails_with_not_implemented_error(check):
    # In a student notebook the check cell must fail with the exercise's own error.
    with pytest.raises(NotImplementedError, match="`not_implemented` is not written yet"):
        check(not_implemented)


@pytest.mark.parametrize("check, answer", [
    (checks.check_inner_loop, inner_update), (checks.check_meta_gradient, outer_loss),
    (checks.check_ci95, population_ci), (checks.check_reptile_update, reptile),
    (checks.check_episode_sampler, sampler)], ids=lambda x: getattr(x, "__name__", ""))
def test_a_check_leaves_the_global_random_state_alone(check, answer):
    before = torch.random.get_rng_state()
    check(answer)
    assert torch.equal(torch.random.get_rng_state(), before)
