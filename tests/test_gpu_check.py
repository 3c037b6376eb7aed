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
