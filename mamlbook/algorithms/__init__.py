"""The book's meta-learners, one file each with its equations and its class, behind one registry (chapter 8).

    algo = make_algorithm("anil", model, problem="classification", inner_lr=2.0)
    opt = algo.make_optimizer(meta_lr=1e-3)           # None for Reptile: its outer update is its own
    loss = algo.outer_step(opt, x_s, y_s, x_q, y_q, iteration=it, progress=it / iterations)
    predict = algo.adapt(x_s[0], y_s[0])              # the task's adapted model; predict(x_q[0])

Every algorithm works on θ as a name → tensor dict, on meta-batches (T, K|Q, ...), and on both of
the book's problems: the sinusoid MLP with MSE (``problem="regression"``) and Conv4 with
cross-entropy (``problem="classification"``). The update rules (α: inner step size, β: the
meta-optimizer's, Adam in every paper below except Reptile):

- ``maml``      θ' = θ − α∇L_s(θ) (``inner_steps`` times); θ ← θ − β∇_θ (1/T)Σ_i L_q_i(θ'_i),
                differentiating through the inner steps. Finn, Abbeel & Levine, ICML 2017 (:mod:`.base`).
- ``fomaml``    the same outer loss, with ∇L_s treated as a constant: the meta-gradient is
                ∇L_q(θ') evaluated at θ'. Finn et al. 2017, §5.2.
- ``reptile``   φ_i = k SGD steps from θ on all of task i's data; θ ← θ + ε·(1/T)Σ_i (φ_i − θ).
                No query loss, no meta-optimizer (:mod:`.reptile`). Nichol, Achiam & Schulman, 2018.
- ``anil``      only the head (the last ``nn.Linear``) adapts: θ_h' = θ_h − α∇_{θ_h}L_s; the outer
                loss updates body and head (:mod:`.anil`). Raghu, Raghu, Bengio & Vinyals, ICLR 2020.
- ``metasgd``   θ' = θ − α ⊙ ∇L_s(θ) with a meta-learned α shaped like θ (:mod:`.metasgd`).
                Li, Zhou, Chen & Li, arXiv:1707.09835, 2017.
- ``mamlpp``    a learned rate per layer and step, the multi-step loss with annealed weights,
                derivative-order annealing, per-step BatchNorm (:mod:`.mamlpp`). Antoniou et al., ICLR 2019.
- ``protonet``  no inner loop: logits −‖f_θ(x_q) − c_n‖² to the class means c_n of the support
                embeddings (:mod:`.protonet`). Snell, Swersky & Zemel, NeurIPS 2017. Classification only.
- ``imaml``     φ* = argmin L_s(φ) + (λ/2)‖φ − θ‖²; meta-gradient (I + ∇²L_s(φ*)/λ)⁻¹ ∇L_q(φ*) by
                conjugate gradient, memory independent of the inner steps (:mod:`.imaml`).
                Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019.
- ``truncated`` MAML differentiating through the last k inner steps only (k = n: MAML, k = 0:
                first-order MAML) (:mod:`.truncated`). After Shaban et al., AISTATS 2019.

The transfer baselines (chapter 10) meta-learn nothing: they pretrain an ordinary classifier over
all C meta-train classes on flat (x, global label) batches (``batches = "classes"``: their problem's
:meth:`~mamlbook.problems.Problem.sampler` draws them), then fit a new head per task on the frozen
body's support features. Classification only; they need ``num_classes`` = C.

- ``baseline``   linear head; per task the optimum of a weight-decayed logistic regression
                 (:mod:`.baseline`). Chen, Liu, Kira, Wang & Huang, ICLR 2019.
- ``baselinepp`` Baseline++: scaled-cosine heads, s·cos(w_c, f) (:mod:`.baseline`). Chen et al. 2019.
- ``probe``      logistic regression (C = 1) on L2-normalised features (:mod:`.transfer`).
                 Tian, Wang, Krishnan, Tenenbaum & Isola, ECCV 2020.
- ``finetune``   the Baseline's head, then SGD on the whole network, as MAML's meta-test (:mod:`.transfer`).

The options that cut across learners are :class:`.base.Algorithm`'s; each algorithm's per-problem
settings and their sources are in :mod:`mamlbook.compare`.
"""
from __future__ import annotations

from torch import nn

from ..errors import OptionError
from ..maml import Params
from .anil import ANIL
from .base import (
    FOMAML,
    MAML,
    PROBLEMS,
    AdaptedModel,
    Algorithm,
    Predictor,
    default_head,
    make_meta_optimizer,
)
from .baseline import Baseline, BaselinePlusPlus
from .imaml import IMAML
from .mamlpp import MAMLPlusPlus
from .metasgd import MetaSGD
from .protonet import ProtoNet
from .reptile import Reptile
from .transfer import FineTune, LinearProbe
from .truncated import TruncatedMAML

__all__ = ["ALGORITHMS", "PRETRAINED", "CLASSIFICATION_ONLY", "PROBLEMS", "Predictor", "Algorithm",
           "AdaptedModel", "MAML", "FOMAML", "Reptile", "ANIL", "MetaSGD", "MAMLPlusPlus", "ProtoNet", "IMAML",
           "TruncatedMAML", "Baseline", "BaselinePlusPlus", "LinearProbe", "FineTune", "default_head",
           "make_algorithm", "make_meta_optimizer"]

_CLASSES = {c.name: c for c in (MAML, FOMAML, Reptile, ANIL, MetaSGD, MAMLPlusPlus, ProtoNet, IMAML,
                                TruncatedMAML, Baseline, BaselinePlusPlus, LinearProbe, FineTune)}
ALGORITHMS = tuple(_CLASSES)
# The transfer baselines: they pretrain on flat (x, global label) batches and need num_classes.
PRETRAINED = tuple(name for name, c in _CLASSES.items() if c.batches == "classes")
CLASSIFICATION_ONLY = tuple(name for name, c in _CLASSES.items() if c.classification_only)


def make_algorithm(name: str, model: nn.Module, params: Params | None = None, *, problem: str,
                   inner_lr: float | None = None, **options) -> Algorithm:
    """The algorithm called ``name`` (one of :data:`ALGORITHMS`) on ``model``.

    Args:
        params: θ (default: ``dict(model.named_parameters())``).
        problem: "regression" or "classification".
        inner_lr: α, required by the learners with an inner loop; "protonet" ignores it, the
            :data:`PRETRAINED` ones refuse it but "finetune" (its meta-test SGD step, optional).
        options: ``inner_steps``, ``test_steps``, the cross-cutting options of :class:`Algorithm`
            (``first_order``, ``grad_clip``, ``amp``, ``tf32``, ``compile``, ``batched``, ``adapt_bn``)
            and each algorithm's own (Reptile: ``outer_lr``, ``outer_lr_final``; ANIL/ProtoNet: ``head``;
            MAML++: ``anneal_epochs``, ``iterations_per_epoch``, ``first_order_epochs``, ``per_step_bn``;
            iMAML: ``lam``, ``cg_steps``; truncated: ``backprop_steps``; the :data:`PRETRAINED` ones:
            ``num_classes`` (required), ``batch_size``, ``max_iter``, ``weight_decay`` (baseline,
            finetune), ``C`` (probe), ``inner_lr``/``test_steps`` (finetune's meta-test SGD)).
    Raises:
        OptionError: an unknown name (the message lists the choices), an option the learner
            cannot honour, or a :data:`CLASSIFICATION_ONLY` learner for regression.
    """
    if name not in _CLASSES:
        raise OptionError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return _CLASSES[name](model, params, problem=problem, inner_lr=inner_lr, **options)
