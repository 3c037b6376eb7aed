"""mamlbook: the tested code behind the MAML textbook.

Each notebook writes an idea out in full once, then switches to the function here that
does the same thing. What each module does: README.md, section "The package".
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
