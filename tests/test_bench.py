"""The benchmark command's behaviour on tiny workloads (what it prints and writes, not timings)."""
import argparse
import json

import pytest

from mamlbook.measure import bench

REQUIRED = {"workload", "impl", "order", "device", "ms_median", "speedup_vs_loop", "peak_mem_mb",
            "grad_rel_err_vs_loop"}


def run_bench(*argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(list(argv)))


def test_quick_in_process_run_writes_one_row_per_impl_and_order(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run_bench("--workloads", "W1", "--impls", "mamlbook", "--quick", "--in-process",
                     "--json", str(out)) == 0
    rows = json.loads(out.read_text())
    assert {(r["impl"], r["order"]) for r in rows} == {
        (i, o) for i in ("loop", "mamlbook") for o in ("second", "first")}
    for r in rows:
        assert REQUIRED <= r.keys() and r["workload"] == "W1" and r["device"] == "cpu"
        assert r["ms_median"] > 0 and len(r["ms_all"]) == 1       # --quick: one timed step
        assert r["grad_rel_err_vs_loop"] < 1e-5                    # same gradient as the loop (float32)
        loop = next(x for x in rows if x["impl"] == "loop" and x["order"] == r["order"])
        assert r["speedup_vs_loop"] == pytest.approx(loop["ms_median"] / r["ms_median"])
    printed = capsys.readouterr().out
    assert "QUICK" in printed and "| W1 | second | cpu | mamlbook |" in printed


def test_each_configuration_runs_in_its_own_subprocess_by_default(tmp_path):
    out = tmp_path / "bench.json"
    assert run_bench("--workloads", "w1", "--orders", "first", "--impls", "mamlbook", "--quick",
                     "--json", str(out)) == 0
    rows = json.loads(out.read_text())
    assert [r["impl"] for r in rows] == ["loop", "mamlbook"]
    assert all("own process" in r["memory_measure"] for r in rows)


@pytest.mark.parametrize("impl, available, note", [("higher", "_higher_available", "higher` is not installed"),
                                                  ("jax", "_jax_available", "jax/optax are not installed")],
                         ids=["higher", "jax"])
def test_a_missing_optional_impl_is_skipped_with_a_note(impl, available, note, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, available, lambda: False)
    out = tmp_path / "bench.json"
    assert run_bench("--workloads", "W1", "--orders", "second", "--impls", impl, "--quick",
                     "--in-process", "--json", str(out)) == 0
    assert note in capsys.readouterr().out
    assert [r["impl"] for r in json.loads(out.read_text())] == ["loop"]


@pytest.mark.parametrize("argv, message", [(["--workloads", "W9"], "unknown workload"),
                                           (["--orders", "third"], "--orders")])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert run_bench(*argv, "--quick", "--in-process") == 2
    assert message in capsys.readouterr().err


def test_w3_projection_for_60000_iterations_is_printed(capsys):
    assert run_bench("--workloads", "W3", "--orders", "first", "--impls", "mamlbook", "--quick",
                     "--in-process", "--warmup", "0") == 0
    assert "60,000 iterations" in capsys.readouterr().out


def test_jax_idiom_is_a_w1_peer_with_the_same_meta_gradient(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    out = tmp_path / "bench.json"
    assert run_bench("--workloads", "W1", "--impls", "jax", "--quick", "--in-process", "--json", str(out)) == 0
    rows = json.loads(out.read_text())
    assert {(r["impl"], r["order"]) for r in rows} == {(i, o) for i in ("loop", "jax") for o in ("second", "first")}
    for r in rows:
        assert r["grad_rel_err_vs_loop"] < 1e-5              # same θ, same data: the same meta-gradient
        assert "load_1min_before" in r


def test_w4_is_omniglot_20w1s_and_times_the_task_threads_path(tmp_path):
    w = bench.WORKLOADS["W4"]
    assert (w.tasks, w.support, w.query, w.inner_steps, w.inner_lr, w.n_way) == (16, 20, 20, 5, 2.0, 20)
    out = tmp_path / "bench.json"
    assert run_bench("--workloads", "W4", "--orders", "second", "--impls", "mamlbook-threads", "--quick",
                     "--in-process", "--threads", "1", "--json", str(out)) == 0
    rows = json.loads(out.read_text())
    assert [r["impl"] for r in rows] == ["loop", "mamlbook-threads"]
    assert all(r["threads"] == 1 for r in rows)
    assert rows[1]["grad_rel_err_vs_loop"] < 1e-5


def test_built_objects_are_cached_by_workload_device_and_order_not_by_model_address():
    w = bench.WORKLOADS["W1"].shrunk()
    a, b = w.model(), w.model()                      # two models: the same build (θ is seeded in _setup)
    assert bench._key("jax", a, w, False) == bench._key("jax", b, w, False)
    others = [bench._key("jax", a, w, True), bench._key("jax", a, bench.WORKLOADS["W1"], False),
              bench._key("fused", a, w, False)]
    assert len({bench._key("jax", a, w, False), *others}) == 4


def test_the_jax_scripts_copied_constants_and_defaults_are_mamlbooks():
    import inspect
    import math
    import subprocess
    import sys

    from mamlbook import evaluate, sinusoid, tasks
    from mamlbook.measure import jax_sinusoid as j
    ranges = ("AMP_RANGE", "PHASE_RANGE", "INPUT_RANGE")
    assert [getattr(j, r) for r in ranges] == [getattr(tasks, r) for r in ranges]
    assert j.PHASE_RANGE[1] == math.pi and j.EVAL_SEED == sinusoid.EVAL_SEED
    cfg, run = sinusoid.SinusoidConfig(), inspect.signature(j.run).parameters
    knobs = ("meta_batch_size", "k_shot", "inner_lr", "meta_lr", "iterations")
    assert {k: run[k].default for k in knobs} == {k: getattr(cfg, k) for k in knobs}
    assert inspect.signature(j.evaluate).parameters["num_tasks"].default == evaluate.NUM_TEST_TASKS
    # importing it needs neither jax nor optax (bench finds them lazily; race_jax runs it as a script)
    code = ("import sys; sys.modules['jax'] = sys.modules['optax'] = None; "
            "import mamlbook.measure.jax_sinusoid as j; assert j.EVAL_SEED == 2017")
    subprocess.run([sys.executable, "-c", code], check=True)
