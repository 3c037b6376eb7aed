"""Mixed precision for meta-training: bf16 autocast where the GPU supports it, else fp16 + GradScaler.

The tested copy of chapter 7's mixed precision and TF32 lessons.

MAML's second-order meta-gradient differentiates *through* the inner gradient step, so its
graph is about twice as deep as ordinary training's; half precision halves the memory of
that graph and runs the convolutions on tensor cores. bfloat16 keeps float32's exponent
range, so no loss scaling is needed; float16 does need a :class:`torch.amp.GradScaler`
for the outer (meta) gradient. The inner-loop gradients are never scaled (the scaler
only sees the outer loss), which is one more reason to prefer bf16 where it exists.

On a CPU, ``--amp`` is refused with a message: bf16 on a CPU without AMX is slower than
float32, so mixed precision buys nothing there (the batch-statistics BatchNorm itself does
run under CPU bf16 autocast; ``tests/test_conv.py`` checks it).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .errors import OptionError

__all__ = ["AmpNotSupportedError", "Amp", "tf32_mode"]


class AmpNotSupportedError(OptionError):
    """``--amp`` was asked for where mixed precision cannot run."""


@dataclass
class Amp:
    """What mixed precision does on ``device``: its dtype (None = off) and an optional GradScaler."""

    enabled: bool
    device: torch.device
    dtype: torch.dtype | None = None
    scaler: "torch.amp.GradScaler | None" = None

    @classmethod
    def create(cls, enabled: bool, device: torch.device | str) -> "Amp":
        """Pick bf16 (CUDA with bf16 support) or fp16 + GradScaler (older CUDA); refuse on CPU."""
        device = torch.device(device)
        if not enabled:
            return cls(False, device)
        if device.type != "cuda":
            raise AmpNotSupportedError(
                f"--amp (mixed precision) needs a CUDA GPU; this run is on {device.type}. On a CPU, "
                "PyTorch's bf16 autocast fails inside the batch-statistics BatchNorm and would be "
                "slower than float32 anyway: run without --amp (float32).")
        if torch.cuda.is_bf16_supported():
            return cls(True, device, torch.bfloat16)
        return cls(True, device, torch.float16, torch.amp.GradScaler("cuda"))

    def autocast(self):
        """A context manager: autocast to ``dtype`` when enabled, a no-op otherwise."""
        return torch.autocast(self.device.type, dtype=self.dtype) if self.enabled else contextlib.nullcontext()

    def describe(self) -> str:
        if not self.enabled:
            return "float32"
        return f"autocast {str(self.dtype).removeprefix('torch.')}" + (" + GradScaler" if self.scaler else "")


@contextlib.contextmanager
def tf32_mode(enabled: bool):
    """Allow (or forbid) TF32 for float32 convolutions and matmuls inside the block; restore after.

    PyTorch's default, ``torch.backends.cudnn.allow_tf32 = True``, distorts MAML's second-order
    meta-gradient (chapter 7; README.md, "On a GPU"), so the book turns it off unless asked
    (``FewShotConfig.tf32``). On a CPU these flags change nothing.
    """
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
