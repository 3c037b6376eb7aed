"""The paper's 4-layer convolutional networks (Conv4) with a BatchNorm that is safe under ``vmap``.

Finn et al. (2017, Section 5.2) and the official code (cbfinn/maml ``utils.py`` /
``maml.py``, ``conv_block`` and ``forward_conv``) use four blocks of

    3×3 conv (with bias) → BatchNorm (batch statistics) → ReLU [→ 2×2 max-pool]

- **Omniglot** (28×28×1): 64 filters, stride-2 convolutions, no pooling (28→14→7→4→2);
  the 2×2×64 output is averaged over space (``tf.reduce_mean(hidden4, [1, 2])``) → 64 → n_way.
- **mini-ImageNet** (84×84×3): 32 filters, stride-1 convolutions and 2×2 max-pooling
  (84→42→21→10→5); the 5×5×32 output is flattened → 800 → n_way.

Choices, stated once (the data chapters reuse these models):

- **BatchNorm always uses the statistics of the batch it sees**, in training *and* at test
  time, and keeps **no running statistics**: the official code calls
  ``tf.contrib.layers.batch_norm`` with its default ``is_training=True``. With MAML this
  means a task's support set and its query set are each normalised by their own statistics.
- **Learnable shift, no learnable scale** by default (``bn_scale=False``), as
  ``tf.contrib.layers.batch_norm``'s defaults (``center=True, scale=False``); the following
  ReLU/linear layer can absorb a scale. Pass ``bn_scale=True`` for PyTorch's usual affine BN.
- **ε = 1e-3**, ``tf.contrib.layers.batch_norm``'s default (PyTorch's default is 1e-5).
- **The BN shift is adapted in the inner loop**, as most PyTorch ports do; ``adapt_bn=False`` holds the
  entries of :func:`batchnorm_params` at θ, as the official code does (docs/classification.md).
- **Padding**: PyTorch's symmetric ``padding=1`` instead of TensorFlow's ``'SAME'`` (which pads
  stride-2 convolutions on the bottom/right only): same output sizes, pixel grid offset by one.
- **The conv bias is kept** (the official code has it) although batch-statistics BN removes any
  per-channel shift: its gradient is exactly zero, which makes it a free correctness check.

The BatchNorm (:func:`batch_norm`) runs PyTorch's native ``F.batch_norm`` kernel normally,
and a version written from ``mean``/``var``/``rsqrt`` when it runs under ``torch.func.vmap``:
PyTorch's batching rule for the native kernel's double backward gives wrong second-order
meta-gradients (torch 2.14; chapter 4 shows it with the zero conv-bias invariant), while the
native kernel is faster in a plain per-task loop (a whole omniglot-20w1s step took 1.17× as long with the
hand-written formula: docs/benchmarks.md, "CPU: omniglot-20w1s (W4)").
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BN_EPS", "reference_batch_norm", "batch_norm_reference", "batch_norm", "BatchNorm", "ConvBlock",
           "Conv4", "omniglot_conv4", "miniimagenet_conv4", "has_native_batchnorm", "has_batchnorm", "batchnorm_params"]

BN_EPS = 1e-3  # tf.contrib.layers.batch_norm's default epsilon, used by the official MAML code


_REFERENCE_ONLY = False   # set by reference_batch_norm(): skip the vmap probe (torch.compile can't trace it)


@contextlib.contextmanager
def reference_batch_norm():
    """Inside the block :func:`batch_norm` always uses :func:`batch_norm_reference`.

    For code that is under ``vmap`` throughout (:func:`mamlbook.functional.make_meta_grad`): the
    answer of :func:`_under_vmap` is known, and ``torch.compile`` cannot trace the probe.
    """
    global _REFERENCE_ONLY
    previous, _REFERENCE_ONLY = _REFERENCE_ONLY, True
    try:
        yield
    finally:
        _REFERENCE_ONLY = previous


def _under_vmap() -> bool:
    """True while code runs inside ``torch.func.vmap`` (at any depth of the functorch stack)."""
    try:
        stack = torch._C._functorch.get_interpreter_stack() or []
        return any(i.key() == torch._C._functorch.TransformType.Vmap for i in stack)
    except AttributeError:  # a torch without these hooks: always use the safe formula
        return True


def batch_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         eps: float = BN_EPS) -> torch.Tensor:
    """BatchNorm with batch statistics from ``mean``/``var``/``rsqrt``: correct under vmap, any order.

    ``x`` is (N, C, H, W) or (N, C); statistics are per channel over every other dimension,
    with the biased variance (as BatchNorm normalises).
    """
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)                          # broadcast (C,) over x
    mean = x.mean(dim=dims, keepdim=True)                          # (1, C, 1, 1)
    var = x.var(dim=dims, unbiased=False, keepdim=True)            # (1, C, 1, 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def batch_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float = BN_EPS) -> torch.Tensor:
    """Batch-statistics BatchNorm: the native kernel, or :func:`batch_norm_reference` under vmap."""
    if _REFERENCE_ONLY or _under_vmap():
        return batch_norm_reference(x, weight, bias, eps)
    if weight is None:  # the native double backward needs a weight tensor: use a constant 1,
        # in the shift's dtype: under autocast x is bf16/fp16 while the parameters stay fp32.
        weight = torch.ones(x.shape[1], dtype=bias.dtype if bias is not None else x.dtype, device=x.device)
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)


class BatchNorm(nn.Module):
    """BatchNorm over channels with batch statistics only (no running averages), safe under vmap.

    Args:
        channels: number of channels C of the (N, C, ...) input.
        scale: learn a per-channel scale γ (default False, as the official MAML code).
        eps: added to the variance (default 1e-3, as the official MAML code).
    """

    def __init__(self, channels: int, scale: bool = False, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.bias.numel()}, scale={self.weight is not None}, eps={self.eps}, batch statistics"


class ConvBlock(nn.Sequential):
    """3×3 conv (+bias) → batch-statistics BN → ReLU, then a 2×2 max-pool if ``pool``."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, pool: bool,
                 bn_scale: bool = False):
        layers = [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                  BatchNorm(out_channels, scale=bn_scale), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))   # 'VALID' pooling: 21 → 10, as the official code
        super().__init__(*layers)


class Conv4(nn.Module):
    """The paper's few-shot classifier: four conv blocks and a linear layer to ``n_way`` logits.

    Use :func:`omniglot_conv4` or :func:`miniimagenet_conv4` for the paper's two settings.

    Args:
        in_channels: 1 (Omniglot) or 3 (mini-ImageNet).
        n_way: number of classes per task (the output size).
        filters: channels of every conv layer (64 on Omniglot, 32 on mini-ImageNet).
        pool: stride-1 convs and max-pooling (mini-ImageNet) instead of stride-2 convs.
        flatten: flatten the last feature map (mini-ImageNet) instead of averaging it over space.
        feature_size: input size of the linear layer (filters, or filters·5·5 on 84×84 inputs).
        bn_scale: give BatchNorm a learnable scale (default False, as the official code).
    """

    def __init__(self, in_channels: int, n_way: int, *, filters: int, pool: bool, flatten: bool,
                 feature_size: int, bn_scale: bool = False):
        super().__init__()
        self.features = nn.Sequential(*(ConvBlock(filters if i else in_channels, filters, stride=1 if pool else 2,
                                                  pool=pool, bn_scale=bn_scale) for i in range(4)))
        self.flatten = flatten
        self.classifier = nn.Linear(feature_size, n_way)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)                                   # (N, filters, h, w)
        h = h.flatten(1) if self.flatten else h.mean(dim=(2, 3))  # (N, feature_size)
        return self.classifier(h)                              # (N, n_way)


def omniglot_conv4(n_way: int = 5, filters: int = 64, bn_scale: bool = False) -> Conv4:
    """Conv4 for 28×28×1 Omniglot: 64 filters, stride-2 convs, spatial mean → linear."""
    return Conv4(1, n_way, filters=filters, pool=False, flatten=False, feature_size=filters,
                 bn_scale=bn_scale)


def miniimagenet_conv4(n_way: int = 5, filters: int = 32, bn_scale: bool = False) -> Conv4:
    """Conv4 for 84×84×3 mini-ImageNet: 32 filters, max-pooling, flattened 5×5×32 → linear."""
    return Conv4(3, n_way, filters=filters, pool=True, flatten=True, feature_size=filters * 5 * 5,
                 bn_scale=bn_scale)


def has_native_batchnorm(model: nn.Module) -> bool:
    """True if ``model`` contains one of PyTorch's ``nn.BatchNorm*d`` layers (unsafe under vmap)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def has_batchnorm(model: nn.Module) -> bool:
    """True if ``model`` normalises with batch statistics (PyTorch's BN or :class:`BatchNorm`)."""
    return has_native_batchnorm(model) or any(isinstance(m, BatchNorm) for m in model.modules())


def batchnorm_params(model: nn.Module) -> set[str]:
    """Names of ``model``'s BatchNorm parameters: shifts β (and scales γ, if any), e.g. ``features.0.1.bias``."""
    norms = (BatchNorm, nn.modules.batchnorm._BatchNorm)
    return {f"{prefix}.{name}".lstrip(".") for prefix, m in model.named_modules() if isinstance(m, norms)
            for name, _ in m.named_parameters(recurse=False)}
