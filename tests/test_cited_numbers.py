"""The results files the book cites exist, and the recorded numbers it states are the files' numbers.

- Citations: every ``results/...`` path in a notebook (its .py twin), README.md or docs/*.md names a
  file or folder that exists; a glob (``results/sinusoid/*/metrics.json``) must match a file.
- Recorded numbers: each place where a notebook or the README states a number recorded in a results
  file is rebuilt below from that file, and must appear word for word in the text (bold marks,
  line breaks and the notebooks' ``# `` prefixes ignored). A rerun that changes a file, or an edit
  that changes a stated number, fails here with the sentence the file now implies.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import math
import re
import statistics
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("notebooks/*.py"), ROOT / "README.md", *ROOT.glob("docs/*.md")])
CITATION = re.compile(r"(?<![\w./-])(?:\.\./)?(results/[\w.*/-]*[\w*/])")


def cited_paths():
    for source in SOURCES:
        for path in sorted(set(CITATION.findall(source.read_text(encoding="utf-8")))):
            yield pytest.param(source.relative_to(ROOT).as_posix(), path, id=f"{source.name}:{path}")


@pytest.mark.parametrize("source, path", list(cited_paths()))
def test_every_cited_results_file_exists(source, path):
    if "*" in path:
        assert any(p.is_file() for p in ROOT.glob(path)), f"{source} cites {path}, which matches no file"
    elif path.endswith("/"):
        assert (ROOT / path).is_dir(), f"{source} cites the folder {path}, which does not exist"
    else:
        assert (ROOT / path).exists(), f"{source} cites {path}, which does not exist"


def test_the_citation_scan_finds_the_known_citations():
    found = {p.values[1] for p in cited_paths()}
    assert {"results/compare/omniglot_full.md", "results/gpu/rnn_check.json",
            "results/sinusoid/*/metrics.json"} <= found


# --- reading the files ---------------------------------------------------------------------------

def load_json(path):
    return json.loads((ROOT / path).read_text(encoding="utf-8"))


def md_table(path, first_header):
    """{first cell: [other cells]} of the Markdown table whose first header cell is ``first_header``."""
    rows, inside = {}, False
    for line in (ROOT / path).read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            inside = True
        elif inside and line.startswith("|") and not set(cells[0]) <= set("-:"):
            rows[cells[0]] = cells[1:]
        elif inside and not line.startswith("|"):
            break
    assert rows, f"no table starting with {first_header!r} in {path}"
    return rows


def half_up(decimal_text, places, thousands=False):
    """Round a number written with more decimals (a table cell) as a person would: 2504.5 → 2505."""
    q = Decimal(decimal_text.replace(",", "")).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{q:,}" if thousands else str(q)


def sci(x, digits):
    """1.6e-4 rather than Python's 1.6e-04."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{x:.{digits}e}")


def stated_text(source):
    """The source's prose as one line: notebook comment prefixes, bold and line breaks removed."""
    lines = (ROOT / source).read_text(encoding="utf-8").splitlines()
    if source.endswith(".py"):
        lines = [re.sub(r"^#\s?", "", line) for line in lines]
    return re.sub(r"\s+", " ", " ".join(lines).replace("**", ""))


# --- the recorded numbers, rebuilt from their files ----------------------------------------------

def sinusoid_row(run):
    """README's row for results/sinusoid/<run>/metrics.json (`python -m mamlbook.report` layout)."""
    m = load_json(f"results/sinusoid/{run}/metrics.json")
    e, c = m["eval"], m["config"]
    diverged = e["mse"][10] is None or not math.isfinite(e["mse"][10]) or e["mse"][10] > 1e3

    def cell(step, median):
        text = f"{e['mse'][step]:.3f} ± {e['ci95'][step]:.3f}"
        return text + (f" (median {e['median'][step]:.3f})" if median else "")

    ten = f"diverged¹ (median {e['median'][10]:.3f})" if diverged else cell(10, False)
    return [f"| {c['k_shot']} | {c.get('init') or 'pytorch'} | {c['iterations']:,} | {cell(1, diverged)} | {ten} | "
            f"{m['wall_time_s']:.0f} s | {m['machine']['cpu_threads']} | {'yes' if m['compiled'] else 'no'} | "
            f"{m['date'][:10]} |"]


def sinusoid_wall_times():
    k10, no_compile = (load_json(f"results/sinusoid/{r}/metrics.json") for r in ("k10", "k10-no-compile"))
    return [f"Wall time of the preset, K=10: {k10['wall_time_s']:.0f} s",
            f"against {no_compile['wall_time_s']:.0f} s with `--no-compile`"]


NAMES = {"maml": "MAML", "fomaml": "first-order MAML", "reptile": "Reptile", "anil": "ANIL",
         "metasgd": "Meta-SGD", "mamlpp": "MAML++", "protonet": "Prototypical Networks"}


def omniglot_race():
    rows = md_table("results/compare/omniglot_full.md", "algorithm")
    # file: accuracy, median, test steps, meta-steps, train time, ms / meta-step, graph peak
    return [f"| {NAMES[a]} | {acc} | {steps} | {meta_steps} | {half_up(ms, 0, thousands=True)} | {half_up(peak, 1)} |"
            for a, (acc, _, steps, meta_steps, _, ms, peak) in rows.items()]


def sinusoid_race():
    out = []
    for r in load_json("results/compare/sinusoid_full.json")["rows"]:
        mse = (f"{r['mean']:.3f} ± {r['ci95']:.3f} ({r['median']:.3f})" if r["theta_finite"]
               else "training diverged")
        out.append(f"| {NAMES[r['algorithm']]} | {mse} | {r['test_steps']} | {r['iterations']:,} | "
                   f"{r['ms_per_step']:.1f} |")
    return out


def chapter09_full_run():
    """README's chapter-9 section and table row, from results/chapter09/full_run.json (the notebook writes it)."""
    run = load_json("results/chapter09/full_run.json")
    c, w, res, paired = run["config"], run["wall_time_s"], run["results"], run["paired_maml_minus"]
    at = lambda name, s: f"{res[name]['mean'][s]:.2f} ± {res[name]['ci95'][s]:.2f}"
    diff = lambda name: f"{name} {paired[name]['1']['mean']:.3f} ± {paired[name]['1']['ci95']:.3f}"
    seed = "seed article's loop"
    return [f"{c['iterations']:,} MAML iterations of an LSTM({c['hidden']})",
            f"took {w['maml']:.0f} s ({run['ms_per_iteration']['maml']:.1f} ms per iteration) on one CPU thread",
            f"({run['machine']['date'][:10]}, torch {run['machine']['torch'].split('+')[0]}",
            f"Query MSE on {c['num_eval_tasks']} new tasks after one step",
            f"MAML {at('MAML', 1)} (median {res['MAML']['median'][1]:.2f}), the seed article's loop "
            f"{at(seed, 1)}, the same LSTM pretrained on all tasks {at('pretrained', 1)}, "
            f"from random initialisation {at('random init', 1)}",
            "MAML − baseline per task (paired, 95% CI): "
            + ", ".join(diff(n) for n in (seed, "pretrained", "random init")),
            f"After {c['max_steps']} steps: MAML {at('MAML', c['max_steps'])}, the seed article's loop "
            f"{at(seed, c['max_steps'])}, pretrained {at('pretrained', c['max_steps'])}",
            f"≈ {run['section3']['speedup_vmap_vs_nn_lstm']:.0f}× faster here",
            f"| {w['settings_to_record'] / 60:.0f} min² (a shared machine; [results](results/chapter09/full_run.md))"]


def chapter09_full_run_record():
    """What results/chapter09/full_run.md says about its run: wall time, load, commit, the MSE table."""
    run = load_json("results/chapter09/full_run.json")
    w, load, res = run["wall_time_s"], run["load_average_1min"], run["results"]
    cell = lambda r, s: f"{r['mean'][s]:.2f} ± {r['ci95'][s]:.2f} ({r['median'][s]:.2f})"
    ms = run["ms_per_iteration"]["maml"]
    return [f"{run['config']['iterations']:,} iterations in {w['maml']:.0f} s ({ms:.1f} ms per iteration",
            f"one-minute load average {load['start']:.1f} at the start, {load['end']:.1f} at the end",
            f"commit `{run['git']['commit'][:7]}`", f"torch {run['machine']['torch']}",
            *(f"| {name} | {r['step_sizes']['1']} / {r['step_sizes']['10']} | {cell(r, 0)} | {cell(r, 1)} | "
              f"{cell(r, 10)} |" for name, r in res.items())]


def test_chapter09_record_comes_from_a_full_run():
    run = load_json("results/chapter09/full_run.json")
    assert run["fast_mode"] is False and run["config"]["iterations"] == 20_000
    assert run["config"]["num_eval_tasks"] == 600 and set(run["results"]) == {
        "MAML", "seed article's loop", "pretrained", "random init"}


def chapter02_full_run_record():
    """What results/chapter02/full_run.md says about its run: wall times and the machine's load."""
    run = load_json("results/chapter02/full_run.json")
    w, load = run["wall_time_s"], run["load_average_1min"]
    return [f"Wall time: {w['total']:.0f} s in all — MAML {w['maml']:.0f} s",
            f"load average {load['start']:.1f} at the start, {load['end']:.1f} at the end",
            f"Finished {run['date']} (UTC)", f"torch {run['machine']['torch']}"]


def precision_errors():
    rows = load_json("results/gpu/precision_check.json")["rows"]
    return {(r["workload"], r["variant"]): r["rel_err"] for r in rows if r["status"] == "ok"}


def gpu_precision_in_readme():
    e = precision_errors()
    pct = lambda w, v, d=1: f"{100 * e[(w, v)]:.{d}f} %"
    return [f"float32 with TF32 off is {sci(e['W2', 'fp32-loop'], 1)} / {sci(e['W3', 'fp32-loop'], 1)} away "
            f"(looped tasks) and {sci(e['W2', 'fp32-vmap'], 1)} / {sci(e['W3', 'fp32-vmap'], 1)} (vmap); with TF32 "
            f"on, {pct('W2', 'tf32-loop')} / {pct('W3', 'tf32-loop')} (loop) and {pct('W2', 'tf32-vmap')} / "
            f"{pct('W3', 'tf32-vmap')} (vmap, which runs the tasks as grouped convolutions); bf16 autocast is "
            f"{pct('W2', 'bf16-loop', 0)} / {pct('W3', 'bf16-loop', 0)} away",
            f"The batched path in float64 equals the loop to {sci(max(e['W2', 'f64-vmap'], e['W3', 'f64-vmap']), 0)}"]


def distributed_scaling_in_chapter07():
    """Chapter 7's two-rank CPU speed-up, from the round lines of scripts/distributed_scaling.py's output."""
    path = "results/distributed/omniglot_scaling_cpu_2026-12-01.txt"
    runs = {}                                   # (round, launch) -> {"steps_s", "load", ...}
    for line in (ROOT / path).read_text(encoding="utf-8").splitlines():
        m = re.match(r"round (\d+), (\w+): (\{.*\})$", line)
        if m:
            runs[int(m[1]), m[2]] = ast.literal_eval(m[3])
    rounds = sorted({r for r, _ in runs})
    ratio = statistics.median(runs[r, "2"]["steps_s"] / runs[r, "plain"]["steps_s"] for r in rounds)
    loads = [run["load"] for run in runs.values()]
    return [f"two CPU ranks ran Omniglot 5-way 1-shot {ratio:.2f}× as many meta-steps per second as one process "
            f"(median over {len(rounds)} rounds)",
            f"(one-minute load average {min(loads):.1f}–{max(loads):.1f} before the runs)",
            f"Recorded on {path.split('_')[-1][:10]} in `{path}`"]


def lstm_on_gpu_in_readme():
    r = load_json("results/gpu/rnn_check.json")
    ms = {row["row"]: row["ms_median"] for row in r["rows"] if row["status"] == "ok"}
    return [f"keeps cuDNN for the query pass: {ms['mamlbook']:.0f} ms per meta-step ({ms['no-cudnn']:.0f} ms with "
            f"cuDNN off throughout, {ms['first-order']:.0f} ms first-order), and in float64 it equals the CPU "
            f"meta-gradient to {sci(r['float64_rel_err_vs_cpu'], 1)}. The LSTM written out in `torch` operations "
            f"and batched with `vmap` takes {ms['hand-vmap']:.0f} ms, {ms['mamlbook'] / ms['hand-vmap']:.0f}× faster."]


def amp_in_readme():
    a = load_json("results/gpu/amp_check.json")
    acc = {row["mode"]: (row["acc[1 queries/class]"][1], row["ci95[1 queries/class]"]) for row in a["rows"]}
    return [f"float32 {acc['fp32'][0]:.1f} ± {acc['fp32'][1]:.1f} % / bf16 {acc['amp'][0]:.1f} ± {acc['amp'][1]:.1f} % "
            f"with 1 query per class; on the first meta-batch the two meta-gradients had cosine {a['grad_cosine']:.2f}"]


def chapter02_full_run():
    """README's rows for results/chapter02/full_run.json: one K=10 MAML model tested at K = 5, 10, 20."""
    run = load_json("results/chapter02/full_run.json")

    def cell(res, step):
        mean, ci, median = res["mean"][step], res["ci95"][step], res["median"][step]
        if mean is None or ci is None or mean > 1e3:
            return f"diverged¹ (median {median:.3f})"
        return f"{mean:.3f} ± {ci:.3f} (median {median:.3f})"

    rows = []
    for key, res in run["results"].items():
        m, p, o, d = res["maml"], res["pretrained"], res["oracle"], res["maml_minus_pretrained"]
        rows.append(f"| {key[2:]} | {cell(m, 1)} | {cell(m, 10)} | {cell(p, 1)} | {cell(p, 10)} | "
                    f"{o['mean']:.4f} ± {o['ci95']:.4f} | {d['mean'][1]:.3f} ± {d['ci95'][1]:.3f} | "
                    f"{m['tasks_worse_after_max_steps']} |")
    five = run["results"]["K=5"]
    rows.append("| MAML, this run | " + " | ".join(cell(five["maml"], s) for s in (1, 5, 10)) + " |")
    rows.append("| pretrained, this run | " + " | ".join(cell(five["pretrained"], s) for s in (1, 5, 10)) + " |")
    wall, machine = run["wall_time_s"], run["machine"]
    rows.append(f"{run['date'][:10]}, {machine['cpu_threads']} thread, torch {machine['torch'].split('+')[0]}: "
                f"{wall['total']:.0f} s in all, of which MAML's {run['config']['iterations']:,} compiled "
                f"iterations {wall['maml']:.0f} s")
    return rows


CLAIMS = {   # id: (where the number is stated, how the sentence follows from the results file)
    "README sinusoid K=5": ("README.md", lambda: sinusoid_row("k5")),
    "README sinusoid K=10": ("README.md", lambda: sinusoid_row("k10")),
    "README sinusoid K=10 no compile": ("README.md", lambda: sinusoid_row("k10-no-compile")),
    "README sinusoid K=10 official init": ("README.md", lambda: sinusoid_row("k10-official-init")),
    "README sinusoid K=20": ("README.md", lambda: sinusoid_row("k20")),
    "README sinusoid wall times": ("README.md", sinusoid_wall_times),
    "README Omniglot race": ("README.md", omniglot_race),
    "README sinusoid race": ("README.md", sinusoid_race),
    "README chapter 9 full run": ("README.md", chapter09_full_run),
    "README GPU precision": ("README.md", gpu_precision_in_readme),
    "README GPU LSTM": ("README.md", lstm_on_gpu_in_readme),
    "README GPU AMP": ("README.md", amp_in_readme),
    "README chapter 2 full run": ("README.md", chapter02_full_run),
    "chapter 2 full run record": ("results/chapter02/full_run.md", chapter02_full_run_record),
    "chapter 9 full run record": ("results/chapter09/full_run.md", chapter09_full_run_record),
    "chapter 7 two-rank speed-up": ("notebooks/07_miniimagenet_gpu.py", distributed_scaling_in_chapter07),
}


@pytest.mark.parametrize("claim", list(CLAIMS))
def test_stated_recorded_numbers_are_the_results_files_numbers(claim):
    source, sentences_from_file = CLAIMS[claim]
    text = stated_text(source)
    missing = [s for s in sentences_from_file() if s not in text]
    assert not missing, (f"{source} no longer states what its results file holds; the file implies:\n  "
                         + "\n  ".join(missing))


def test_a_changed_number_is_caught():
    text = stated_text("README.md")
    row = sinusoid_row("k5")[0]
    assert row in text and row.replace("0.601", "0.602") not in text


def _chapter10_render():
    spec = importlib.util.spec_from_file_location("chapter10_render", ROOT / "results/chapter10/render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, json.loads((ROOT / "results/chapter10/full_run.json").read_text(encoding="utf-8"))


def test_chapter10_readme_section_and_record_are_what_the_full_run_says():
    render, run = _chapter10_render()
    assert not run.get("fast_mode")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render.readme_section(run) in readme
    assert render.table_cell(run) in readme
    assert (ROOT / "results/chapter10/full_run.md").read_text(encoding="utf-8") == render.markdown(run)
