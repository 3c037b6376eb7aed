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
