"""Chapter 9's pieces: sinusoid-walk tasks, the LSTM written out, and MAML through an LSTM."""
import pytest
import torch
from torch import nn

from mamlbook.maml import meta_loss, resolve_batched
from mamlbook.rnn import cudnn_disabled, has_rnn, inner_loop_rnn_context, needs_native_rnn
from mamlbook.sequence import HandLSTM, LSTMRegressor, sample_walk_tasks, walk_end, walks_ending_at
from mamlbook.tasks import INPUT_RANGE


def walks(seed=0, **kw):
    return sample_walk_tasks(3, 4, generator=torch.Generator().manual_seed(seed), **kw)


def test_walk_tasks_have_sequence_inputs_and_scalar_targets():
    b = walks(seq_len=6)
    assert b.x_support.shape == (3, 4, 6, 1) and b.y_support.shape == (3, 4, 1)
    assert b.x_query.shape == (3, 4, 6, 1) and b.y_query.shape == (3, 4, 1)


def test_walk_target_is_the_tasks_sine_at_the_end_of_the_walk():
    b = walks()
    end = walk_end(b.x_support)                                        # (T, K, 1)
    expected = b.amplitude[:, None, None] * torch.sin(end - b.phase[:, None, None])
    torch.testing.assert_close(b.y_support, expected, rtol=0, atol=1e-5)


def test_walks_end_in_the_papers_input_range_and_move_by_at_most_half():
    b = sample_walk_tasks(50, 10, generator=torch.Generator().manual_seed(1))
    end = walk_end(b.x_support)
    assert end.min() >= INPUT_RANGE[0] - 1e-5 and end.max() <= INPUT_RANGE[1] + 1e-5
    assert b.x_support[..., 1:, 0].abs().max() <= 0.5


def test_walk_tasks_are_reproducible_from_the_seed():
    assert torch.equal(walks(7).x_query, walks(7).x_query)
    assert not torch.equal(walks(7).x_query, walks(8).x_query)


@pytest.mark.parametrize("bad", [dict(seq_len=0), dict(k_query=0)])
def test_walk_tasks_reject_empty_sizes(bad):
    with pytest.raises(ValueError):
        walks(**bad)


def test_hand_written_lstm_equals_torchs_lstm_with_the_same_weights():
    torch.manual_seed(0)
    ours, theirs = HandLSTM(1, 8).double(), nn.LSTM(1, 8, batch_first=True).double()
    theirs.load_state_dict(ours.state_dict())          # same names, shapes and gate order
    x = torch.randn(5, 7, 1, dtype=torch.float64)
    (out_a, (h_a, c_a)), (out_b, (h_b, c_b)) = ours(x), theirs(x)
    for a, b in ((out_a, out_b), (h_a, h_b), (c_a, c_b)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_lstm_regressor_rejects_an_unknown_lstm():
    with pytest.raises(ValueError, match="'torch' or 'hand'"):
        LSTMRegressor(lstm="cudnn")


def test_auto_loops_over_tasks_for_torch_lstm_and_batches_the_hand_written_one():
    assert has_rnn(LSTMRegressor(lstm="torch")) and not has_rnn(LSTMRegressor(lstm="hand"))
    assert resolve_batched(LSTMRegressor(lstm="torch"), "auto") is False   # vmap can't batch aten::lstm
    assert resolve_batched(LSTMRegressor(lstm="hand"), "auto") is True


def _lstm_problem():
    torch.manual_seed(0)
    model = LSTMRegressor(hidden=6).double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    b = sample_walk_tasks(2, 3, generator=torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    return model, params, (b.x_support, b.y_support, b.x_query, b.y_query)


def test_second_order_meta_gradient_through_an_lstm_matches_finite_differences():
    model, params, data = _lstm_problem()
    kw = dict(inner_lr=0.5, inner_steps=2, batched=False)
    grads = torch.autograd.grad(meta_loss(model, params, *data, **kw), list(params.values()))
    g = torch.Generator().manual_seed(3)
    for (name, p), gp in zip(params.items(), grads):
        direction = torch.randn(p.shape, generator=g, dtype=torch.float64)
        eps = 1e-6

        def loss_at(shift):
            with torch.no_grad():
                p.add_(shift * direction)
            value = meta_loss(model, params, *data, **kw).item()
            with torch.no_grad():
                p.sub_(shift * direction)
            return value

        fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
        assert abs(fd - (gp * direction).sum().item()) <= 1e-7 * max(1.0, abs(fd)), name


def test_hand_lstm_batched_with_vmap_gives_the_same_meta_gradient_as_the_torch_lstm_loop():
    model, params, data = _lstm_problem()
    hand = LSTMRegressor(hidden=6, lstm="hand").double()
    loop = torch.autograd.grad(meta_loss(model, params, *data, inner_lr=0.5, batched=False),
                               list(params.values()))
    vmapped = torch.autograd.grad(meta_loss(hand, params, *data, inner_lr=0.5, batched=True),
                                  list(params.values()))
    for a, b in zip(loop, vmapped):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device, first_order, lstm, expected", [
    ("cuda", False, "torch", True),      # the one case cuDNN cannot do
    ("cuda", True, "torch", False),      # first-order: no derivative of cuDNN's backward needed
    ("cuda", False, "hand", False),      # no cuDNN RNN kernel in the model
    ("cpu", False, "torch", False),      # PyTorch's CPU RNN is the native one
])
def test_native_rnn_kernels_are_needed_only_for_second_order_rnn_on_cuda(device, first_order, lstm,
                                                                         expected):
    assert needs_native_rnn(LSTMRegressor(lstm=lstm), device, first_order) is expected


def test_cudnn_is_switched_off_inside_and_restored_after_even_on_error():
    before = torch.backends.cudnn.enabled
    with pytest.raises(KeyError):
        with cudnn_disabled():
            assert torch.backends.cudnn.enabled is False
            raise KeyError("boom")
    assert torch.backends.cudnn.enabled is before


def test_inner_loop_context_leaves_cudnn_alone_on_cpu():
    before = torch.backends.cudnn.enabled
    with inner_loop_rnn_context(LSTMRegressor(), "cpu", first_order=False):
        assert torch.backends.cudnn.enabled is before


def test_lstm_meta_training_step_lowers_the_query_loss_of_a_fixed_meta_batch():
    model, params, data = _lstm_problem()
    opt = torch.optim.Adam(params.values(), lr=1e-2)
    first = meta_loss(model, params, *data, inner_lr=0.01).item()
    for _ in range(20):
        opt.zero_grad()
        meta_loss(model, params, *data, inner_lr=0.01).backward()
        opt.step()
    assert meta_loss(model, params, *data, inner_lr=0.01).item() < 0.9 * first


def test_walks_ending_at_end_exactly_where_asked_with_moves_in_range():
    x_end = torch.linspace(-5, 5, 11, dtype=torch.float64).unsqueeze(-1)           # (11, 1)
    w = walks_ending_at(x_end, seq_len=6, generator=torch.Generator().manual_seed(0))
    assert w.shape == (11, 6, 1) and w.dtype == torch.float64
    torch.testing.assert_close(walk_end(w), x_end, rtol=0, atol=1e-12)
    assert w[:, 1:, 0].abs().max() <= 0.5 and w[:, 1:, 0].std() > 0.1                # real moves


def test_walks_ending_at_are_reproducible_and_reject_a_bad_shape():
    x_end = torch.zeros(4, 1)
    assert torch.equal(walks_ending_at(x_end, generator=torch.Generator().manual_seed(3)),
                       walks_ending_at(x_end, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="size 1"):
        walks_ending_at(torch.zeros(4))
    with pytest.raises(ValueError, match="seq_len"):
        walks_ending_at(x_end, seq_len=0)


def test_every_inner_loop_applies_the_cudnn_rule(monkeypatch):
    # MAML, Meta-SGD and ANIL share maml.inner_loop; MAML++ keeps its own loop with the same rule.
    import contextlib

    import mamlbook.algorithms.mamlpp as mamlpp_module
    import mamlbook.maml as maml_module
    from mamlbook.algorithms.anil import adapt_head
    from mamlbook.algorithms.mamlpp import adapt_per_step, init_per_step_lrs
    from mamlbook.algorithms.metasgd import init_inner_lrs, metasgd_adapt
    from mamlbook.maml import adapt
    asked = []

    def recording(model, device, first_order):
        asked.append(type(model).__name__)
        return contextlib.nullcontext()
    monkeypatch.setattr(maml_module, "inner_loop_rnn_context", recording)
    monkeypatch.setattr(mamlpp_module, "inner_loop_rnn_context", recording)
    model, params, (xs, ys, _, _) = _lstm_problem()
    adapt(model, params, xs[0], ys[0], inner_lr=0.1)
    metasgd_adapt(model, params, init_inner_lrs(params, 0.1), xs[0], ys[0])
    adapt_head(model, params, xs[0], ys[0], head="head.", inner_lr=0.1)
    adapt_per_step(model, params, init_per_step_lrs(params, 1, 0.1), xs[0], ys[0], inner_steps=1)
    assert asked == ["LSTMRegressor"] * 4
