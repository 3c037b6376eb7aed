"""Recurrent networks in MAML's inner loop: the one thing cuDNN cannot do, and the way round it.

The tested copy of chapter 9's cuDNN lesson (its section 5 gives the whole argument).

On a CUDA GPU, cuDNN's RNN backward (``_cudnn_rnn_backward``) has no derivative of its own, so
second-order MAML, which differentiates the inner loop's gradient again, fails through ``nn.LSTM``,
``nn.GRU`` or ``nn.RNN``. Only the inner loop's forward passes need PyTorch's native, twice
differentiable kernels; the query pass may stay on cuDNN. :func:`inner_loop_rnn_context` switches
cuDNN off exactly there, and :func:`mamlbook.maml.adapt` uses it, so the same MAML code runs an LSTM
on CPU and GPU. On CPU nothing changes (PyTorch's CPU RNN is the native one).
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
    """:func:`cudnn_disabled` where :func:`needs_native_rnn`, a no-op context everywhere else."""
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
