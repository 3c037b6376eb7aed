"""Second-order MAML through an LSTM: which kernels work, how fast, and is the gradient right.

    python -m mamlbook.rnn_check [--device cuda|cpu] [--steps 30] [--json PATH]

Chapter 9's measurement (on a GPU with the device tool; on a CPU, the rows that make sense there),
with chapter 9's settings (:class:`~mamlbook.sequence.WalkConfig`); results: README.md, "On a GPU",
and chapter 9. Rows (:data:`ROWS`): ``naive-cudnn``, the textbook second-order step
(:func:`~mamlbook.measure.bench.plain_loop`) through ``nn.LSTM`` on cuDNN (expected to fail on CUDA;
the error is recorded); ``mamlbook``, :func:`mamlbook.maml.meta_backward` (inner loop on native RNN
kernels, query pass on cuDNN: :mod:`mamlbook.rnn`); ``no-cudnn``, the same with cuDNN off throughout;
``first-order`` on cuDNN; ``hand-vmap`` / ``hand-loop``, :class:`~mamlbook.sequence.HandLSTM` with
the tasks batched or looped.

Each row's float32 meta-gradient is compared with a float64 CPU reference on the same data and
weights (``grad_rel_err`` = ‖g − g_ref‖/‖g_ref‖; the FOMAML row differs by design: it is a different
gradient). Timing: median ms of ``--steps`` synchronised steps after 3 warm-up steps.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..maml import meta_backward
from ..rnn import cudnn_disabled
from ..runs import write_json
from ..sequence import LSTMRegressor, WalkConfig, sample_walk_tasks
from .bench import plain_loop
from .gpu_speed import agreement, environment, flat64, sync

__all__ = ["CFG", "ROWS", "reference_gradient", "run_row", "float64_exactness", "run", "format_table", "main"]

CFG = WalkConfig()


def _batch(device, dtype, seed=0):
    b = sample_walk_tasks(CFG.meta_batch_size, CFG.k_shot, generator=torch.Generator().manual_seed(seed))
    return [t.to(device=device, dtype=dtype) for t in (b.x_support, b.y_support, b.x_query, b.y_query)]


def _step_fn(row: str):
    if row == "naive-cudnn":
        return lambda m, p, b: plain_loop(m, p, *b, inner_lr=CFG.inner_lr, loss_fn=F.mse_loss)
    # mamlbook and hand-loop loop over the tasks; no-cudnn and first-order leave the choice to "auto"
    batched = {"hand-vmap": True, "no-cudnn": "auto", "first-order": "auto"}.get(row, False)

    def step(m, p, b):
        with cudnn_disabled() if row == "no-cudnn" else contextlib.nullcontext():
            meta_backward(m, p, *b, inner_lr=CFG.inner_lr, inner_steps=CFG.inner_steps,
                          first_order=row == "first-order", batched=batched)
    return step


ROWS = {"naive-cudnn": "torch", "mamlbook": "torch", "no-cudnn": "torch", "first-order": "torch",
        "hand-vmap": "hand", "hand-loop": "hand"}


def _grads(model):
    return flat64(p.grad for p in model.parameters()).cpu()


def reference_gradient(state: dict, lstm: str, first_order: bool = False, device="cpu") -> torch.Tensor:
    """The meta-gradient in float64 on the CPU (native RNN kernels) for the same weights and data;
    ``device`` computes it there instead (returned on the CPU)."""
    model = LSTMRegressor(lstm=lstm).double().to(device)
    model.load_state_dict(state)
    meta_backward(model, dict(model.named_parameters()), *_batch(device, torch.float64),
                  inner_lr=CFG.inner_lr, inner_steps=CFG.inner_steps, first_order=first_order,
                  batched=False)
    return _grads(model)


def run_row(row: str, device: torch.device, steps: int, state: dict) -> dict:
    lstm = ROWS[row]
    model = LSTMRegressor(lstm=lstm).to(device)
    model.load_state_dict(state)
    params = dict(model.named_parameters())
    batch = _batch(device, torch.float32)
    step = _step_fn(row)
    out = {"row": row, "lstm": "nn.LSTM" if lstm == "torch" else "HandLSTM", "device": device.type}
    try:
        model.zero_grad(set_to_none=True)
        step(model, params, batch)
        sync(device)
    except Exception as err:                      # noqa: BLE001 — the failure is the finding
        return {**out, "status": "error", "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
    ref = reference_gradient(state, lstm, first_order=row == "first-order")
    out["grad_rel_err"] = agreement(_grads(model), ref)[0]
    for _ in range(2):
        step(model, params, batch)
    times = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        step(model, params, batch)
        sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return {**out, "status": "ok", "ms_median": statistics.median(times), "steps": steps}


def float64_exactness(device: torch.device) -> float | None:
    """‖g − g_cpu‖/‖g_cpu‖ of :func:`meta_backward` through ``nn.LSTM`` in float64 on ``device``."""
    if device.type == "cpu":
        return None
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in LSTMRegressor(lstm="torch").double().state_dict().items()}
    ref = reference_gradient(state, "torch")
    return agreement(reference_gradient(state, "torch", device=device), ref)[0]


def run(device="cuda", steps: int = 30) -> dict:
    device = torch.device(device)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in LSTMRegressor(lstm="torch").double().state_dict().items()}
    rows = [r for r in ROWS if device.type == "cuda" or r not in ("naive-cudnn", "no-cudnn")]
    result = {"environment": environment(device), "config": vars(CFG), "rows": []}
    for r in rows:
        row = run_row(r, device, steps, {k: v.float() for k, v in state.items()})
        print(json.dumps(row), flush=True)
        result["rows"].append(row)
    result["float64_rel_err_vs_cpu"] = float64_exactness(device)
    print("float64 mamlbook on", device.type, "vs CPU:", result["float64_rel_err_vs_cpu"], flush=True)
    return result


def format_table(result: dict) -> str:
    env = result["environment"]
    lines = [f"{env['device_name']}, torch {env['torch']}, {env['date'][:10]}; `python -m mamlbook.rnn_check`",
             "", "| row | LSTM | ms/meta-step (median) | meta-gradient rel. err vs float64 CPU |",
             "|---|---|---|---|"]
    for r in result["rows"]:
        ok = r["status"] == "ok"
        cells = f"{r['ms_median']:.1f} | {r['grad_rel_err']:.1e}" if ok else f"fails: {r['error']} | —"
        lines.append(f"| {r['row']} | {r['lstm']} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mamlbook.rnn_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=30, help="timed meta-steps per row")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    result = run(args.device, args.steps)
    result["markdown"] = format_table(result)
    print(result["markdown"])
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
