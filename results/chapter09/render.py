"""Render chapter 9's full-run record: ``full_run.json`` (written by the notebook) → ``full_run.md``.

    python results/chapter09/render.py            # writes results/chapter09/full_run.md
    python results/chapter09/render.py --readme   # also prints the README's chapter-9 section and table cell

Every number below is read from the JSON; nothing is typed in by hand. ``tests/test_cited_numbers.py``
checks that the README and this Markdown state the JSON's numbers.
"""
from __future__ import annotations

import re
from pathlib import Path

from mamlbook.runs import full_run_table_cell, full_run_when, render_full_run, shared_machine

HERE = Path(__file__).resolve().parent
COMMAND = ("cd notebooks && OMP_NUM_THREADS=1 MAMLBOOK_FAST=0 jupyter nbconvert --to notebook --execute "
           "09_any_model.ipynb --output /tmp/ch9_full.ipynb --ExecutePreprocessor.timeout=3600")
BASELINES = ("seed article's loop", "pretrained", "random init")


def ci(mean, ci95, digits=2):
    return f"{mean:.{digits}f} ± {ci95:.{digits}f}"


def sci(x, digits=1):
    """1.6e-4 rather than Python's 1.6e-04."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{x:.{digits}e}")


def cell(res, step):
    """'mean ± ci95 (median)' after ``step`` steps, as the notebook's table prints it."""
    return f"{ci(res['mean'][step], res['ci95'][step])} ({res['median'][step]:.2f})"


def verdict(d):
    low, high = d["mean"] - d["ci95"], d["mean"] + d["ci95"]
    return "MAML better" if high < 0 else "baseline better" if low > 0 else "no significant difference"



def markdown(run) -> str:
    c, w, ms, m = run["config"], run["wall_time_s"], run["ms_per_iteration"], run["machine"]
    s3, res, paired, load = run["section3"], run["results"], run["paired_maml_minus"], run["load_average_1min"]
    span, at = full_run_when(run)
    steps = c["max_steps"]
    lines = [
        "# Chapter 9, full mode (`MAMLBOOK_FAST` unset): MAML on an LSTM",
        "",
        "`results/chapter09/full_run.json` was written by the notebook itself (its cell \"The run's record\", "
        "which writes only in full mode) during",
        "",
        f"    {COMMAND}",
        "",
        "and this file was generated from it by `python results/chapter09/render.py`.",
        "",
        f"- Run: settings cell to record cell {span} "
        f"({w['settings_to_record']:.0f} s); {at}.",
        f"- Machine: {m['cpu_count']}-core {m['cpu']}, no GPU, {m['cpu_threads']} thread "
        f"(`OMP_NUM_THREADS={run['env']['OMP_NUM_THREADS']}`), torch {m['torch']}, Python {m['python']}, "
        f"{m['platform']}.",
        f"- Load: one-minute load average {load['start']:.1f} at the start, {load['end']:.1f} at the end"
        + (" — **the machine was shared** with other engineers' jobs, so the wall times are upper bounds."
           if shared_machine(run) else "."),
        "",
        f"## Training (LSTM(1→{c['hidden']}) + linear, sinusoid walks of L = {c['seq_len']}, K = {c['k_shot']})",
        "",
        f"- MAML: meta-batch {c['meta_batch_size']}, {c['inner_steps']} inner step at α = {c['inner_lr']}, "
        f"Adam {c['meta_lr']}: {c['iterations']:,} iterations in {w['maml']:.0f} s ({ms['maml']:.1f} ms per "
        "iteration, `HandLSTM` batched with `vmap`).",
        f"- Pretrained (all tasks jointly, meta-batch {c['meta_batch_size']}): {c['pretrain_iterations']:,} "
        f"Adam steps in {w['pretrained']:.0f} s ({ms['pretrained']:.1f} ms per step).",
        f"- The seed article's loop (one Adam step per task): {c['seed_article_steps']:,} tasks in "
        f"{w['seed_article']:.0f} s ({ms['seed_article']:.1f} ms per step).",
        "",
        f"## Section 3: one second-order meta-step, {c['meta_batch_size']} tasks, median of {c['timed_steps']}",
        "",
        "| LSTM | ms per meta-step |",
        "|---|---|",
        *(f"| {name} | {v:.1f} |" for name, v in s3["ms_per_meta_step"].items()),
        "",
        f"`HandLSTM` + `vmap` is {s3['speedup_vmap_vs_nn_lstm']:.1f}× faster than `nn.LSTM` looped "
        f"(writing the LSTM out: {s3['written_out']:.2f}×; batching it: {s3['batching']:.1f}×). In float64 the "
        f"looped `nn.LSTM` and vmapped `HandLSTM` meta-gradients agree to {sci(s3['loop_vs_vmap_rel'])} "
        f"(relative), finite differences agree with autograd to {sci(s3['finite_difference_rel_err'])}, and the "
        f"second-order minus first-order meta-gradient is {sci(s3['hessian_share'])} of its norm (the Hessian term).",
        "",
        f"## Meta-test: query MSE, mean ± 95% CI (median), {c['num_eval_tasks']} test tasks (seed {c['eval_seed']})",
        "",
        f"MAML adapts at its α; each baseline at the step size tuned for each step count on "
        f"{c['num_tuning_tasks']} separate tasks (seed {c['step_size_seed']}).",
        "",
        f"| model | step size (for 1 / {steps} steps) | 0 steps | 1 step | {steps} steps |",
        "|---|---|---|---|---|",
        *(f"| {name} | {r['step_sizes']['1']} / {r['step_sizes'][str(steps)]} | {cell(r, 0)} | {cell(r, 1)} | "
          f"{cell(r, steps)} |" for name, r in res.items()),
        "",
        f"MAML − baseline, per-task differences on the same {c['num_eval_tasks']} tasks (paired), mean ± 95% CI:",
        "",
        f"| baseline | 0 steps | 1 step | {steps} steps | verdict, 1 step | verdict, {steps} steps |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | " + " | ".join(ci(d[s]["mean"], d[s]["ci95"], 3) for s in ("0", "1", str(steps)))
          + f" | {verdict(d['1'])} | {verdict(d[str(steps)])} |" for name, d in paired.items()),
        "",
        "The README's chapter-9 section reads this run; `tests/test_cited_numbers.py` checks it against the JSON.",
    ]
    return "\n".join(lines) + "\n"


def readme_section(run) -> str:
    """The README's "MAML on an LSTM (chapter 9, full mode)" paragraph."""
    c, w, ms, m = run["config"], run["wall_time_s"], run["ms_per_iteration"], run["machine"]
    res, paired, load = run["results"], run["paired_maml_minus"], run["load_average_1min"]
    r1 = lambda name, s: ci(res[name]["mean"][s], res[name]["ci95"][s])
    d1 = lambda name: ci(paired[name]["1"]["mean"], paired[name]["1"]["ci95"], 3)
    steps = c["max_steps"]
    return (
        f"{c['iterations']:,} MAML iterations of an LSTM({c['hidden']}) + linear layer on sinusoid-walk tasks "
        f"(K = {c['k_shot']}, meta-batch {c['meta_batch_size']}, one inner step at α = {c['inner_lr']}) took "
        f"{w['maml']:.0f} s ({ms['maml']:.1f} ms per iteration) on one CPU thread of the {m['cpu_count']}-core "
        f"development machine ({m['date'][:10]}, torch {m['torch'].split('+')[0]}"
        + (f"; shared with other jobs, load average {load['start']:.1f} → {load['end']:.1f}" if shared_machine(run) else "")
        + f"). Query MSE on {c['num_eval_tasks']} new tasks after one step, each baseline at the step size tuned "
        f"for one step: **MAML {r1('MAML', 1)}** (median {res['MAML']['median'][1]:.2f}), the seed article's loop "
        f"{r1(BASELINES[0], 1)}, the same LSTM pretrained on all tasks {r1('pretrained', 1)}, from random "
        f"initialisation {r1('random init', 1)}; MAML − baseline per task (paired, 95% CI): "
        + ", ".join(f"{name} {d1(name)}" for name in BASELINES)
        + f". After {steps} steps: MAML {r1('MAML', steps)}, the seed article's loop {r1(BASELINES[0], steps)}, "
        f"pretrained {r1('pretrained', steps)}. Details: "
        "[results/chapter09/full_run.md](results/chapter09/full_run.md).")


table_cell = full_run_table_cell

if __name__ == "__main__":
    render_full_run(HERE, markdown, readme_section)
