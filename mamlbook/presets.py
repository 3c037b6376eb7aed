"""The paper's classification settings as named presets, each with its published result and source.

Sources:
- [P] Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
  Networks", ICML 2017: Table 1 (results) and Appendix A.1 (hyperparameters).
- [C] the official code, github.com/cbfinn/maml: README.md's example commands, ``main.py``,
  ``maml.py`` (Adam meta-optimizer with β = 1e-3; meta-gradient clipped to ±10 on
  mini-ImageNet) and ``utils.py`` (``xent`` = softmax cross-entropy / K per example, whose
  ``tf.gradients`` sums over the N·K support examples).

Unit conversions (α and the mini-ImageNet clip, both into PyTorch's MEAN cross-entropy: 5-way Omniglot
α 0.4 → 2.0, 20-way 0.1 → 2.0, mini-ImageNet 0.01 → 0.05; clip ±10 → ±0.133 / ±0.667) and the 10 test-time
steps: docs/classification.md, "Choices, stated once". Omniglot queries per class = K ([C]:
``update_batch_size`` for both sets); mini-ImageNet trains with 15 queries per class ([P] A.1,
following Ravi & Larochelle).
"""
from __future__ import annotations

from dataclasses import dataclass

from .fewshot import FewShotConfig

__all__ = ["Preset", "OFFICIAL_GRAD_CLIP", "official_clip_in_mean_ce_units", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """A named configuration, the paper's result for it, and where each number comes from."""

    name: str
    config: FewShotConfig
    paper_acc: float              # % on 600 meta-test tasks, [P] Table 1
    paper_ci95: float
    source: str

    def describe(self) -> str:
        c = self.config
        return (f"{self.name}: {c.n_way}-way {c.k_shot}-shot {c.dataset}, meta-batch {c.meta_batch_size}, "
                f"{c.inner_steps} inner step(s) at α={c.inner_lr} (mean CE) in training, "
                f"{c.test_inner_steps} at test, {c.k_query} queries/class, {c.iterations:,} iterations; "
                f"paper {self.paper_acc} ± {self.paper_ci95}% ({self.source})")


def _omniglot(n_way, k_shot, meta_batch, inner_steps, alpha_official):
    return FewShotConfig(dataset="omniglot", split="maml", n_way=n_way, k_shot=k_shot, k_query=k_shot,
                         meta_batch_size=meta_batch, inner_lr=alpha_official * n_way,
                         inner_steps=inner_steps, test_inner_steps=10, iterations=60_000,
                         val_every=1000, val_tasks=200, checkpoint_every=1000)


OFFICIAL_GRAD_CLIP = 10.0    # [C] maml.py, mini-ImageNet: tf.clip_by_value(grad, -10, 10) on the meta-gradient


def official_clip_in_mean_ce_units(n_way: int, k_shot: int, k_query: int,
                                   clip: float = OFFICIAL_GRAD_CLIP) -> float:
    """[C]'s element-wise clip ±``clip``, converted to the gradient of the mean cross-entropy.

    [C]'s outer loss, ``tf.reduce_sum(lossesb) / meta_batch_size`` with ``xent`` = cross-entropy / K
    per query example (``maml.py``, ``utils.py``), is (N·Q/K) × the mean cross-entropy that this
    package's outer loss is; clipping its gradient at ±clip is clipping ours at ±clip·K/(N·Q).
    """
    return clip * k_shot / (n_way * k_query)


def _mini(k_shot, meta_batch, n_way=5, k_query=15):
    return FewShotConfig(dataset="miniimagenet", n_way=n_way, k_shot=k_shot, k_query=k_query,
                         meta_batch_size=meta_batch, inner_lr=0.01 * n_way, inner_steps=5,
                         test_inner_steps=10, iterations=60_000,
                         grad_clip=official_clip_in_mean_ce_units(n_way, k_shot, k_query),
                         val_every=1000, val_tasks=200, checkpoint_every=1000)


PRESETS: dict[str, Preset] = {
    "omniglot-5w1s": Preset("omniglot-5w1s", _omniglot(5, 1, 32, 1, 0.4), 98.7, 0.4,
                            "[P] Table 1; A.1: α=0.4, 1 step, meta-batch 32; 60,000 iterations: main.py usage"),
    "omniglot-5w5s": Preset("omniglot-5w5s", _omniglot(5, 5, 32, 1, 0.4), 99.9, 0.1,
                            "[P] Table 1; A.1: α=0.4, 1 step, meta-batch 32; 60,000 iterations: main.py usage"),
    "omniglot-20w1s": Preset("omniglot-20w1s", _omniglot(20, 1, 16, 5, 0.1), 95.8, 0.3,
                             "[P] Table 1; A.1: α=0.1, 5 steps, meta-batch 16; 60,000 iterations: main.py usage"),
    "omniglot-20w5s": Preset("omniglot-20w5s", _omniglot(20, 5, 16, 5, 0.1), 98.9, 0.2,
                             "[P] Table 1; A.1: α=0.1, 5 steps, meta-batch 16; 60,000 iterations: main.py usage"),
    "miniimagenet-5w1s": Preset("miniimagenet-5w1s", _mini(1, 4), 48.70, 1.84,
                                "[P] Table 1 (first-order: 48.07 ± 1.75); A.1: α=0.01, 5 steps "
                                "(10 at test), meta-batch 4, 15 queries/class, 60,000 iterations"),
    "miniimagenet-5w5s": Preset("miniimagenet-5w5s", _mini(5, 2), 63.11, 0.92,
                                "[P] Table 1 (first-order: 63.15 ± 0.91); A.1: α=0.01, 5 steps "
                                "(10 at test), meta-batch 2, 15 queries/class, 60,000 iterations"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or a ValueError listing the ones there are."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
