"""Recurrent networks in MAML's inner loop: the one thing cuDNN cannot do, and the way round it.

The tested copy of chapter 9's cuDNN lesson.

On a CUDA GPU, ``nn.LSTM``/``nn.GRU``/``nn.RNN`` run cuDNN's fused kernels. Their backward
(``_cudnn_rnn_backward``) is not itself differentiable, so second-order MAML, which
differentiates the inner loop's gradient again, fails with "derivative for
_cudnn_rnn_backward is not implemented". PyTorch's own (non-cuDNN) RNN implementation is
built from ordinary differentiable operations and supports double backward.

Only the *inner loop's* forward passes need the non-cuDNN path: the query forward is
differentiated once (w.r.t. the adapted parameters θ′), and that first derivative is what
cuDNN provides; the second derivative flows through the inner-loop gradients, which were
computed on the native path. :func:`inner_loop_rnn_context` switches cuDNN off exactly there,
and :func:`mamlbook.maml.adapt` uses it, so the same MAML code runs an LSTM on CPU and GPU.
On CPU nothing changes (PyTorch's CPU RNN is the native one).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["has_rnn", "needs_native_rnn", "inner_loop_rnn_context", "cudnn_disabled"]

def has_rnn(model: nn.Module) -> bool:
    """True if ``model`` contains a cuDNN-backed recurrent layer (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``)."""
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


def needs_native_rnn(model: nn.Module, device: torch.device | str, first_order: bool) -> bool:
    """Whether the inner loop must avoid cuDNN: second-order, on CUDA, through an RNN layer."""
    return not first_order and torch.device(device).type == "cuda" and has_rnn(model)


def inner_loop_rnn_context(model: nn.Module, device: torch.device | str, first_order: bool):
    """A context that disables cuDNN while the inner loop runs, where second-order needs it.

    cuDNN is off (:func:`cudnn_disabled`) only while second-order MAML runs an RNN's
    inner loop on CUDA; a no-op context everywhere else (CPU, first-order, no RNN).
    """
    return cudnn_disabled() if needs_native_rnn(model, device, first_order) else contextlib.nullcontext()


@contextlib.contextmanager
def cudnn_disabled():
    """Turn cuDNN off inside the block and restore the previous setting after it.

    (Only ``enabled`` is touched: ``torch.backends.cudnn.flags`` would also reset the
    ``benchmark``/``deterministic``/``allow_tf32`` settings a user may have chosen.)
    """
    previous = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = previous
