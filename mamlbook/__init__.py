"""mamlbook: the tested code behind the MAML textbook.

Each notebook writes an idea out in full once, then switches to the function here that
does the same thing. Modules, one job each:

- ``config``      the fast-mode switch (``MAMLBOOK_FAST=1``) and seeding
- ``tasks``       the sinusoid task family (support/query meta-batches)
- ``models``      the paper's networks
- ``maml``        functional MAML: inner loop, meta-loss, looped or batched over tasks
- ``functional``  the meta-gradient as one ``torch.func`` function, optionally compiled
- ``train``       the meta-training loop and the joint-training baseline
- ``evaluate``    meta-test adaptation curves and 95% confidence intervals
- ``sinusoid``    the paper's sinusoid experiment and its baselines
- ``reptile``     Reptile's update (what "averaging the adapted parameters" really is)
- ``anil``        ANIL: adapt only the head; the body is meta-learned in the outer loop
- ``metasgd``     Meta-SGD: a learned inner learning rate for every parameter coordinate
- ``mamlpp``      MAML++'s multi-step loss, per-layer per-step learning rates, derivative-order annealing
- ``mamlpp_bn``   MAML++'s per-step BatchNorm parameters
- ``protonet``    Prototypical Networks, the metric-learning baseline
- ``algorithms``  one interface for all seven meta-learners (``make_algorithm``)
- ``compare``     the learners side by side at an equal wall-clock budget
- ``sequence``    chapter 9: sinusoid-walk sequence tasks and an LSTM + linear model
- ``rnn``         second-order MAML through cuDNN RNNs (the inner loop on native kernels)
- ``conv``        the paper's Conv4 models with a batch-statistics BatchNorm that is safe under vmap
- ``fewshot``     MAML for N-way K-shot classification: training, validation, 600-task tests
- ``presets``     the paper's classification settings, each with its source
- ``data``        episodes, Omniglot, mini-ImageNet, checked downloads
- ``checks``      exercise checks that explain a mismatch in words
- ``student``     generates the student versions of the notebooks
- ``bench``       ``python -m mamlbook bench``: ms per meta-step against the baselines
- ``report``      results tables from ``metrics.json`` files
- ``runinfo``     machine facts and strict, atomically written JSON for every run
- ``checkpoint``  atomic checkpoints that load with ``weights_only=True``
- ``plotting``    the book's figures
- ``gpu_check``, ``rnn_check``, ``amp_check``, ``precision_check``  the GPU measurements
- ``cli``         ``python -m mamlbook train|evaluate|bench`` (``cli_fewshot``, ``cli_algorithms``)
"""
from .algorithms import ALGORITHMS, make_algorithm
from .config import banner, fast_mode, pick, seed_everything
from .evaluate import EvalResult, adaptation_curve, mean_ci95, summarize
from .maml import adapt, batched_adapt, meta_backward, meta_loss
from .models import SinusoidMLP, params_of
from .tasks import SinusoidBatch, sample_sinusoid_tasks
from .train import History, fit, meta_train, pretrain

__all__ = ["banner", "fast_mode", "pick", "seed_everything", "EvalResult", "adaptation_curve", "mean_ci95",
           "summarize", "adapt", "batched_adapt", "meta_backward", "meta_loss", "SinusoidMLP", "params_of",
           "SinusoidBatch", "sample_sinusoid_tasks", "History", "meta_train", "pretrain", "fit", "make_algorithm",
           "ALGORITHMS"]

__version__ = "0.2.0"
