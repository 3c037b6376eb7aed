"""The results files the book cites exist, and the recorded numbers it states are the files' numbers.

- Citations: every ``results/...`` path in a notebook (its .py twin), README.md or docs/*.md names a
  file or folder that exists; a glob (``results/sinusoid/*/metrics.json``) must match a file.
- Recorded numbers: each place where a notebook or the README states a number recorded in a results
  file is rebuilt below from that file, and must appear word for word in the text (bold marks,
  line breaks and the notebooks' ``# `` prefixes ignored). A rerun that changes a file, or an edit
  that changes a stated number, fails here with the sentence the file now implies.
"""
from __future__ import annotations

import json
import math
import re
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
    path = "results/chapter09/full_run.md"
    seconds = re.search(r"20,000 MAML iterations in (\d+) s", (ROOT / path).read_text(encoding="utf-8")).group(1)
    rows = md_table(path, "model")          # step size, 0 steps, 1 step, 10 steps: "m ± c (median)"
    split = {name: [re.fullmatch(r"(.+) \((.+)\)", cell).groups() for cell in cells[1:]]
             for name, cells in rows.items()}
    return [f"took {seconds} s on one CPU thread",
            f"MAML {split['MAML'][1][0]} (median {split['MAML'][1][1]})",
            f"the same LSTM pretrained on all tasks {split['pretrained'][1][0]}",
            f"from random initialisation {split['random init'][1][0]}",
            f"after ten steps MAML reaches {split['MAML'][2][0]}"]


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


def gpu_precision_in_chapter07():
    e = precision_errors()
    group = lambda prefix: [v for (_, variant), v in e.items() if variant.startswith(prefix)]
    magnitudes = {f"1e{math.floor(math.log10(v))}" for v in group("fp32")}
    assert len(magnitudes) == 1, f"the float32 errors span several orders of magnitude: {magnitudes}"
    span = lambda prefix: f"{100 * min(group(prefix)):.0f}–{100 * max(group(prefix)):.0f} %"
    return [f"the batched path in float64 equals the loop to rounding (1e{math.floor(math.log10(max(group('f64'))))}); "
            f"true float32 is {magnitudes.pop()} away; TF32 is {span('tf32')} away",
            f"bf16 autocast {span('bf16')}"]


def lstm_on_gpu_in_readme():
    r = load_json("results/gpu/rnn_check.json")
    ms = {row["row"]: row["ms_median"] for row in r["rows"] if row["status"] == "ok"}
    return [f"keeps cuDNN for the query pass: {ms['mamlbook']:.0f} ms per meta-step ({ms['no-cudnn']:.0f} ms with "
            f"cuDNN off throughout, {ms['first-order']:.0f} ms first-order), and in float64 it equals the CPU "
            f"meta-gradient to {sci(r['float64_rel_err_vs_cpu'], 1)}. The LSTM written out in `torch` operations "
            f"and batched with `vmap` takes {ms['hand-vmap']:.0f} ms, {ms['mamlbook'] / ms['hand-vmap']:.0f}× faster."]


def lstm_on_gpu_in_chapter09():
    x = load_json("results/gpu/rnn_check.json")["float64_rel_err_vs_cpu"]
    return [f"in float64 the GPU and the CPU agree to $10^{{{math.ceil(math.log10(x))}}}$"]


def amp_in_readme():
    a = load_json("results/gpu/amp_check.json")
    acc = {row["mode"]: (row["acc[1 queries/class]"][1], row["ci95[1 queries/class]"]) for row in a["rows"]}
    return [f"float32 {acc['fp32'][0]:.1f} ± {acc['fp32'][1]:.1f} % / bf16 {acc['amp'][0]:.1f} ± {acc['amp'][1]:.1f} % "
            f"with 1 query per class; on the first meta-batch the two meta-gradients had cosine {a['grad_cosine']:.2f}"]


def chapter02_failed_task_count():
    return [f"one of its {load_json('results/sinusoid/k10/metrics.json')['eval']['num_tasks']} test tasks"]


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
    "chapter 2 recorded K=10 run": ("notebooks/02_maml_from_scratch.py", chapter02_failed_task_count),
    "chapter 7 recorded precision": ("notebooks/07_miniimagenet_gpu.py", gpu_precision_in_chapter07),
    "chapter 9 recorded LSTM run": ("notebooks/09_any_model.py", lstm_on_gpu_in_chapter09),
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
