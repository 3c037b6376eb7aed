"""The GPU timing script's CPU smoke mode: what it writes, not how fast this machine is."""
import json

import pytest
import torch

from mamlbook.measure import gpu_speed as gpu_check

ROW_FIELDS = {"shape", "order", "mode", "status", "device", "device_name", "torch", "date", "precision",
              "iterations", "warmup", "ms_median", "ms_mean", "ms_all", "e2e_ms_mean", "e2e_iterations",
              "projected_iterations", "projected_hours", "projected_minutes"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One in-process CPU run: 1 warm-up + 2 timed iterations, both orders, fp32 and amp."""
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)           # a busy 2-core machine makes 2 threads up to 20× slower
    try:
        assert gpu_check.main(["--device", "cpu", "--iterations", "2", "--warmup", "1",
                               "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


def test_cpu_run_is_the_smoke_shape_and_says_so(smoke):
    assert smoke["shape"] == "smoke" and smoke["environment"]["device"] == "cpu"
    assert smoke["split_shape"] == [8, 20, 84, 84, 3]            # tiny split, real image size
    assert smoke["markdown"].startswith("**SMOKE run")


def test_one_row_per_order_and_mode(smoke):
    assert [(r["order"], r["mode"]) for r in smoke["rows"]] == [
        ("second", "fp32"), ("second", "amp"), ("first", "fp32"), ("first", "amp")]


def test_fp32_rows_have_every_field_and_positive_timings(smoke):
    for r in (r for r in smoke["rows"] if r["mode"] == "fp32"):
        assert ROW_FIELDS <= r.keys() and r["status"] == "ok" and r["precision"] == "float32"
        assert r["iterations"] == 2 and len(r["ms_all"]) == 2 and r["warmup"] == 1
        assert all(t > 0 for t in r["ms_all"]) and r["e2e_ms_mean"] > 0 and r["e2e_iterations"] == 2
        assert r["ms_median"] == pytest.approx(sorted(r["ms_all"])[0] / 2 + sorted(r["ms_all"])[1] / 2)
        assert r["torch"] == torch.__version__


def test_projection_is_median_ms_times_60000_iterations(smoke):
    for r in (r for r in smoke["rows"] if r["status"] == "ok"):
        assert r["projected_iterations"] == 60_000
        assert r["projected_hours"] == pytest.approx(r["ms_median"] * 60_000 / 1000 / 3600, rel=1e-9)
        assert r["projected_minutes"] == pytest.approx(r["projected_hours"] * 60, rel=1e-9)


def test_amp_rows_are_refused_on_cpu_with_amps_message(smoke):
    amp_rows = [r for r in smoke["rows"] if r["mode"] == "amp"]
    assert len(amp_rows) == 2
    for r in amp_rows:
        assert r["status"] == "refused" and "needs a CUDA GPU" in r["reason"] and "ms_median" not in r
    assert smoke["markdown"].count("refused: --amp (mixed precision) needs a CUDA GPU") == 2


def test_markdown_table_has_a_row_per_configuration(smoke):
    table = [line for line in smoke["markdown"].splitlines() if line.startswith("| CPU")]
    assert len(table) == 4 and all(line.count("|") == 9 for line in table)


def test_synthetic_split_is_uint8_with_a_pattern_per_class():
    split = gpu_check.synthetic_split(3, 4, "cpu", size=16)
    assert split.images.dtype == torch.uint8 and split.images.shape == (3, 4, 16, 16, 3) and split.fake
    means = split.images.float().mean(dim=(1, 2, 3))             # (classes, 3) mean colour per class
    assert torch.cdist(means, means).masked_select(~torch.eye(3, dtype=torch.bool)).min() > 5


def test_bad_mode_is_a_usage_error():
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--modes", "fp16"])


def test_a_failing_row_is_recorded_and_the_exit_code_says_so(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")
    monkeypatch.setattr(gpu_check, "time_loop", broken)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--orders", "second", "--modes", "fp32",
                           "--json", str(out)]) == 1
    [row] = json.loads(out.read_text())["rows"]
    assert row["status"] == "error" and row["reason"] == "RuntimeError: CUDA out of memory (simulated)"


# ------------------------------------------------------------------ the CUDA-graph script's CPU smoke mode
from mamlbook.measure import gpu_graph  # noqa: E402
from mamlbook.presets import get_preset  # noqa: E402


@pytest.fixture(scope="module")
def graph_smoke(tmp_path_factory):
    """One in-process CPU run of `python -m mamlbook.measure.gpu_graph`: the eager paths, graphs skipped."""
    out = tmp_path_factory.mktemp("gpu_graph") / "gpu_graph.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert gpu_graph.main(["--device", "cpu", "--iterations", "1", "--rounds", "1", "--e2e-iterations", "2",
                               "--e2e-test-tasks", "2", "--profile-iterations", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


def test_graph_capture_is_skipped_on_a_cpu_with_a_message(graph_smoke):
    assert graph_smoke["shape"] == "smoke" and graph_smoke["markdown"].startswith("**SMOKE run")
    for name in ("graph-loop", "graph-vmap"):
        row = graph_smoke["paths"][name]
        assert row["status"] == "skipped" and "CUDA graph capture needs a CUDA device" in row["reason"]


def test_eager_paths_are_timed_checked_for_host_syncs_and_against_float64(graph_smoke):
    for name in ("loop", "vmap"):
        row = graph_smoke["paths"][name]
        assert row["status"] == "ok" and row["no_host_sync"] and row["ms_median"] > 0
        # float32 rounding: 1e-6 to 1.4e-3 on this tiny random net, depending on the CPU's conv kernels
        assert row["grad_rel_err_vs_f64"] < 1e-2 and row["grad_cosine_vs_f64"] > 0.9999
    assert graph_smoke["paths"]["loop"]["speedup_vs_loop"] == pytest.approx(1.0)
    assert graph_smoke["tf32"] is False


def test_every_timed_path_is_profiled(graph_smoke):
    assert set(graph_smoke["profile"]) == {"loop", "vmap"}
    for pr in graph_smoke["profile"].values():
        assert pr["iterations"] == 1 and pr["wall_ms_per_iteration"] > 0 and pr["kernel_ms_per_iteration"] > 0
        assert pr["top"] and all(t["ms_per_iteration"] >= 0 for t in pr["top"])


def test_end_to_end_run_trains_and_meta_tests(graph_smoke):
    e = graph_smoke["end_to_end"]
    assert e["iterations_done"] == 2 and e["path"] in ("loop", "vmap") and len(e["loss_curve"]) == 2
    assert e["test"]["tasks"] == 2 and e["test"]["steps"] == [0, 10] and 0 <= e["test"]["accuracy"][-1] <= 100


def smoke_cfg():
    return get_preset(gpu_graph.PRESET).config.replace(**gpu_graph.SHAPES["smoke"]["changes"])


def test_static_episodes_refill_the_same_buffers_from_the_split_on_the_device():
    cfg = smoke_cfg()
    # 8 classes × 20 images, every pixel of class c's image i equal to 20·c + i: the values name their source
    values = (20 * torch.arange(8)[:, None] + torch.arange(20)[None, :]).to(torch.uint8)
    images = values[:, :, None, None, None].expand(8, 20, 84, 84, 3).contiguous()
    split = gpu_check.synthetic_split(8, 20, "cpu")
    split = type(split)(images, split.counts, split.class_names, name="coded", fake=True)
    eps = gpu_graph.StaticEpisodes(split, cfg, torch.device("cpu"), torch.Generator().manual_seed(0))
    buffers = [t.data_ptr() for t in eps.batch()]
    labels = (eps.y_support.clone(), eps.y_query.clone())
    before = eps.x_support.clone()
    eps.sample_()
    assert [t.data_ptr() for t in eps.batch()] == buffers                 # static: the same storage
    assert torch.equal(eps.y_support, labels[0]) and torch.equal(eps.y_query, labels[1])
    assert not torch.equal(eps.x_support, before)                          # a new episode
    n, k, q = cfg.n_way, cfg.k_shot, cfg.k_query
    code_s = (eps.x_support[:, :, 0, 0, 0] * 255).round().long()         # (T, N·K)
    code_q = (eps.x_query[:, :, 0, 0, 0] * 255).round().long()           # (T, N·Q)
    for t in range(cfg.meta_batch_size):
        cls_s, cls_q = code_s[t].view(n, k) // 20, code_q[t].view(n, q) // 20
        assert len(set(cls_s[:, 0].tolist())) == n                       # N distinct classes per task
        assert torch.equal(cls_q, cls_s[:, :1].expand(n, q))              # label j: the same class in S and Q
        for j in range(n):                                                 # K + Q distinct images per class
            assert len(set(code_s[t].view(n, k)[j].tolist() + code_q[t].view(n, q)[j].tolist())) == k + q


def test_no_host_sync_refuses_every_tensor_to_python_conversion():
    t = torch.ones(())
    for convert in (lambda: t.item(), lambda: float(t), lambda: bool(t), lambda: int(t), lambda: t.tolist()):
        with gpu_graph.no_host_sync(), pytest.raises(RuntimeError, match="host synchronisation"):
            convert()
    assert t.item() == 1.0                                                 # restored afterwards


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_a_whole_meta_step_with_sampling_and_adam_never_reads_a_value_back(path):
    # What a CUDA graph needs: sampling, inner loop, meta-gradient, clip and Adam, all device work.
    cfg = smoke_cfg()
    split = gpu_check.synthetic_split(8, 20, "cpu")
    eps = gpu_graph.StaticEpisodes(split, cfg, torch.device("cpu"), torch.Generator().manual_seed(0))
    theta0 = gpu_graph.make_model(cfg).state_dict()
    runner = gpu_graph.Runner(path, cfg, theta0, eps, torch.device("cpu"))
    runner.eager_step()                                                    # creates Adam's state
    before = [p.detach().clone() for p in runner.params.values()]
    with gpu_graph.no_host_sync():
        eps.sample_()
        runner.eager_step()
    assert any(not torch.equal(a, p) for a, p in zip(before, runner.params.values()))   # θ moved
    assert torch.isfinite(runner.loss) and runner.loss > 0


def test_graph_check_projects_60000_iterations_from_the_median_and_the_end_to_end_rate(graph_smoke):
    for name in ("loop", "vmap"):
        row = graph_smoke["paths"][name]                  # ms × 60,000 iterations / 60,000 ms per minute
        assert row["projected_minutes_60k"] == pytest.approx(row["ms_median"], rel=1e-9)
    e = graph_smoke["end_to_end"]
    assert e["projected_minutes_60k"] == pytest.approx(e["ms_per_iteration"], rel=1e-9)
