"""Reusing a pretrained classifier on a new task: a linear probe, and whole-network fine-tuning (chapter 10).

Both pretrain exactly like :class:`~.baseline.Baseline` (an ordinary classifier over all meta-train
classes, flat batches, Adam), so a ``baseline`` checkpoint loads into either; they differ at meta-test.

``probe`` — Tian, Wang, Krishnan, Tenenbaum & Isola, ECCV 2020, "Rethinking Few-Shot Image
Classification: a Good Embedding Is All You Need?" (arXiv:2003.11539): logistic regression on the
L2-normalised features f̂ = f/‖f‖ of the frozen body,

    (W*, b*) = argmin ½‖W‖² + C Σ_s CE(W f̂_s + b, y_s)  =  argmin mean_s CE(...) + ‖W‖²/(2·C·S),   C = 1

(S = N·K support images; the bias is not penalised). Source [R] = WangYueFt/rfs, ``eval/meta_eval.py``:
``normalize`` (row-wise L2) then scikit-learn's ``LogisticRegression(random_state=0, solver='lbfgs',
max_iter=1000, multi_class='multinomial')``, i.e. C = 1.0, an L2 penalty on W only. Solved here to its
optimum by Newton's method (:func:`~.baseline.fit_linear_heads`); scikit-learn stops at ``tol`` = 1e-4.
[R] uses the penultimate features (``use_logit=False``) as here, besides the pretraining head's logits;
its support-set augmentation (``n_aug_support_samples``), ResNet-12 and self-distillation are not used.

``finetune`` — fine-tune the WHOLE network on the support set: the new head starts as the Baseline's
(the optimum of Chen et al.'s weight-decayed logistic regression on the frozen features: "linear
probing, then fine-tuning", Kumar et al., ICLR 2022), then every parameter takes ``test_steps`` SGD
steps of size α on the mean support cross-entropy, θ' = θ − α ∇L_support(θ), exactly MAML's
meta-test adaptation (:func:`mamlbook.maml.adapt`). Its settings are this book's choices, as no paper
fixes them for a Conv4 (:data:`FINETUNE_STEPS`, :data:`FINETUNE_LR`; ``evaluate --steps/--inner-lr``
change them). The model's own head must have N outputs (it holds the new head); BatchNorm uses batch
statistics, as in MAML.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionError
from ..maml import Params
from ..maml import adapt as maml_adapt
from .base import AdaptedModel, Algorithm
from .baseline import Baseline, fit_linear_heads, normalize

__all__ = ["TIAN_C", "FINETUNE_LR", "FINETUNE_STEPS", "LinearProbe", "FineTune"]

TIAN_C = 1.0                  # [R]: scikit-learn's LogisticRegression default C
FINETUNE_STEPS = 10           # this book's choice: MAML's meta-test count (cbfinn/maml test_num_updates)
FINETUNE_LR = 0.1             # this book's choice: the mean-CE α of iMAML's and MAML++'s Omniglot Conv4 configs


class LinearProbe(Baseline):
    """Tian et al.'s linear probe: ``C``-regularised logistic regression on L2-normalised features."""

    name = "probe"

    def __init__(self, model: nn.Module, params: Params | None = None, *, C: float = TIAN_C,
                 weight_decay: float | None = None, **kw):
        if weight_decay is not None:
            raise OptionError("weight_decay is not available for probe: its penalty is ‖W‖²/(2·C·S); set C")
        if not C > 0:
            raise OptionError(f"probe needs C > 0 (the inverse regularisation strength), got {C}")
        super().__init__(model, params, **kw)
        self.C = C

    def options(self) -> dict:
        return {**super().options(), "weight_decay": None, "C": self.C}

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen body's features, each divided by its L2 norm ([R] ``normalize``)."""
        return normalize(super().features(x))

    def fit_heads(self, f_s, y_s, n_way):
        w, b = fit_linear_heads(f_s, y_s, n_way, weight_decay=1.0 / (self.C * f_s.shape[1]), bias_decay=0.0,
                                max_iter=self.max_iter)
        return {"weight": w, "bias": b}


class FineTune(Baseline):
    """Fine-tune the whole pretrained network per task: the Baseline's head, then ``test_steps`` SGD steps."""

    name = "finetune"

    def __init__(self, model: nn.Module, params: Params | None = None, *, inner_lr: float | None = None,
                 test_steps: int | None = None, **kw):
        super().__init__(model, params, **kw)
        inner_lr = FINETUNE_LR if inner_lr is None else inner_lr
        test_steps = FINETUNE_STEPS if test_steps is None else test_steps
        if not inner_lr > 0 or test_steps < 0:
            raise OptionError(f"finetune needs inner_lr (α) > 0 and test_steps ≥ 0, got {inner_lr}, "
                              f"{test_steps}")
        if not isinstance(model.get_submodule(self.head.rstrip(".")), nn.Linear):
            raise OptionError(f"finetune puts the new linear head in the model's {self.head!r}, which must "
                              "be an nn.Linear")
        self.inner_lr, self.test_steps = inner_lr, test_steps

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, inner_lr={self.inner_lr}, test_steps={self.test_steps})"

    def _check_inner_options(self, kw: dict) -> None:
        if kw.pop("inner_steps", None) is not None:
            raise OptionError("inner_steps is not available for finetune: its training has no inner loop "
                              "(the steps it adapts with at meta-test are test_steps)")

    def adapt(self, x_s: torch.Tensor, y_s: torch.Tensor, steps: int | None = None,
              inner_lr: float | None = None) -> AdaptedModel:
        """θ' after ``steps`` (default ``test_steps``) SGD steps at α (``inner_lr``) from body + new head."""
        steps = self.test_steps if steps is None else steps
        linear = self.model.get_submodule(self.head.rstrip("."))
        n_way = int(y_s.max()) + 1
        if n_way != linear.out_features:
            raise OptionError(f"finetune: the task has {n_way} classes but the model's head {self.head!r} "
                              f"has {linear.out_features} outputs; build the model for {n_way}-way tasks")
        heads = self.fit_heads(self.features(x_s).unsqueeze(0), y_s.unsqueeze(0), n_way)   # the Baseline's
        new_head = {f"{self.head}{k}": v[0] for k, v in heads.items()}
        theta = {k: new_head.get(k, v).detach().requires_grad_() for k, v in self.params.items()}
        if steps > 0:
            with torch.enable_grad():
                theta = maml_adapt(self.model, theta, x_s, y_s, inner_lr=inner_lr or self.inner_lr,
                                   inner_steps=steps, loss_fn=F.cross_entropy, first_order=True)
        return AdaptedModel(self.model, {k: v.detach() for k, v in theta.items()})

    score_tasks = Algorithm.score_tasks                # one task at a time: each fine-tunes its own network
