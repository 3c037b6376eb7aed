"""How far is each precision's meta-gradient from the float64 one? (GPU: TF32, bf16, vmap.)

Chapter 7's precision table.

    python -m mamlbook.precision_check [--device cuda] [--workloads W2,W3] [--json PATH]

The benchmark (``mamlbook.bench``) compares every implementation's float32 meta-gradient with the
plain loop's, also float32; when those disagree it cannot say which is closer to the true value.
This check computes, for the benchmark's workloads and data, the second-order meta-gradient in
**float64** on the same device (the reference; cuDNN does not use TF32 for float64), then each
variant's (:data:`VARIANTS`; ``tf32-*``: PyTorch's CUDA default ``cudnn.allow_tf32=True``) relative
error ‖g − g64‖/‖g64‖ and cosine with it, all from the same θ (float64 weights rounded once) and the
same data. Results: docs/benchmarks.md, "How far from float64?".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..maml import meta_backward
from ..runs import write_json
from .bench import WORKLOADS
from .gpu_speed import agreement, environment, flat64

__all__ = ["VARIANTS", "meta_gradient", "run", "main"]

VARIANTS = {  # name: (dtype, batched, allow_tf32, autocast bf16)
    "f64-vmap": (torch.float64, True, False, False),
    "fp32-loop": (torch.float32, False, False, False),
    "fp32-vmap": (torch.float32, True, False, False),
    "tf32-loop": (torch.float32, False, True, False),
    "tf32-vmap": (torch.float32, True, True, False),
    "bf16-loop": (torch.float32, False, False, True),
}


def meta_gradient(w, state, data, device, dtype, batched, tf32, bf16) -> torch.Tensor:
    model = w.model().to(device=device, dtype=dtype)
    model.load_state_dict(state)
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            meta_backward(model, dict(model.named_parameters()),
                          *(t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
                            for t in data),
                          inner_lr=w.inner_lr, inner_steps=w.inner_steps, loss_fn=w.loss_fn(),
                          batched=batched)
    finally:
        torch.backends.cudnn.allow_tf32 = old
    return flat64(p.grad for p in model.parameters())


def run(device="cuda", workloads=("W2", "W3")) -> dict:
    device = torch.device(device)
    result = {"environment": environment(device), "rows": []}
    for name in workloads:
        w = WORKLOADS[name]
        torch.manual_seed(0)
        state = {k: v.double() for k, v in w.model().state_dict().items()}
        data = w.data()
        ref = meta_gradient(w, state, data, device, torch.float64, False, False, False)
        for variant, (dtype, batched, tf32, bf16) in VARIANTS.items():
            try:
                g = meta_gradient(w, state, data, device, dtype, batched, tf32, bf16)
                rel_err, cosine = agreement(g, ref)
                row = {"workload": name, "variant": variant, "status": "ok",
                       "rel_err": rel_err, "cosine": cosine}
            except Exception as err:                     # noqa: BLE001 — keep the other rows
                row = {"workload": name, "variant": variant, "status": "error",
                       "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            print(json.dumps(row), flush=True)
            result["rows"].append(row)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mamlbook.precision_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workloads", default="W2,W3")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    result = run(args.device, args.workloads.split(","))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
