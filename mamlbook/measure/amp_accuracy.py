"""Does mixed precision change what MAML learns? fp32 against AMP, same seed, same episodes.

    python -m mamlbook.amp_check [--device cuda] [--iterations 300] [--tasks 200] [--json PATH]

Chapter 7's accuracy side of ``--amp`` (the speed side is :mod:`mamlbook.gpu_check`); results:
README.md, "On a GPU". Needs a CUDA GPU. On SYNTHETIC mini-ImageNet-shaped images with heavy pixel
noise (:data:`NOISE`, so the tasks are not trivially easy; 64 training classes, 20 disjoint test
classes), it compares fp32 and AMP on (1) the second-order meta-gradient of one meta-batch at the same
initial θ, and (2) the miniimagenet-5w1s preset meta-trained for ``--iterations`` iterations from the
same θ on the same episode stream, then tested on the same ``--tasks`` tasks. These are short runs
on synthetic data: they show whether AMP changes the numbers, not what accuracy mini-ImageNet reaches.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..amp import Amp
from ..fewshot import make_model, make_sampler, meta_test, train_fewshot
from ..maml import meta_backward
from ..presets import get_preset
from ..runs import write_json
from .gpu_speed import PRESET, agreement, environment, flat64, synthetic_split

__all__ = ["NOISE", "gradient_agreement", "run", "main"]

NOISE = 70.0  # pixel-noise std of the synthetic images (0–255 scale)


def gradient_agreement(cfg, split, device) -> dict:
    """Meta-gradient of one meta-batch at the initial θ: AMP against fp32."""
    grads = {}
    for mode in ("fp32", "amp"):
        torch.manual_seed(cfg.seed)
        model = make_model(cfg).to(device)
        ep = make_sampler(split, cfg, device=device).sample(cfg.meta_batch_size,
                                                            torch.Generator().manual_seed(1))
        with Amp.create(mode == "amp", device).autocast():
            meta_backward(model, dict(model.named_parameters()), ep.x_support, ep.y_support,
                          ep.x_query, ep.y_query, inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                          loss_fn=F.cross_entropy)
        grads[mode] = flat64(p.grad for p in model.parameters())
    rel_err, cosine = agreement(grads["amp"], grads["fp32"])
    return {"grad_rel_err": rel_err, "grad_cosine": cosine, "precision": Amp.create(True, device).describe()}


def run(device="cuda", iterations: int = 300, tasks: int = 200) -> dict:
    device = torch.device(device)
    cfg = get_preset(PRESET).config.replace(iterations=iterations)
    train = synthetic_split(64, 100, device, seed=0, noise=NOISE)
    test = synthetic_split(20, 100, device, seed=1, noise=NOISE)
    result = {"environment": environment(device), "preset": PRESET, "iterations": iterations,
              "tasks": tasks, "noise": NOISE, **gradient_agreement(cfg, train, device), "rows": []}
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}), flush=True)
    for mode in ("fp32", "amp"):
        run_cfg = cfg.replace(amp=mode == "amp")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            trained = train_fewshot(run_cfg, {"train": train}, out=tmp, device=device, progress=False,
                                    validate=False)
            wall = time.perf_counter() - t0
        evals = meta_test(trained.model, run_cfg, test, num_tasks=tasks, device=device)
        row = {"mode": mode, "precision": Amp.create(run_cfg.amp, device).describe(),
               "train_s": wall, "ms_per_iteration": trained.train_time_s * 1000 / iterations,
               "final_loss_mean_last50": sum(trained.losses[-50:]) / len(trained.losses[-50:]),
               **{f"acc[{k}]": [v.mean[0], v.mean[-1]] for k, v in evals.items()},
               **{f"ci95[{k}]": v.ci95[-1] for k, v in evals.items()}}
        print(json.dumps(row), flush=True)
        result["rows"].append(row)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mamlbook.amp_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if torch.device(args.device).type != "cuda" or not torch.cuda.is_available():
        p.error("amp_check needs a CUDA GPU (mixed precision is refused on CPU: see mamlbook.amp)")
    result = run(args.device, args.iterations, args.tasks)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
