"""The GPU checks (rnn_check, precision_check, amp_check, TF32 switch) on the CPU: what runs here runs right."""
import pytest
import torch

from mamlbook.amp import tf32_mode
from mamlbook.measure import amp_accuracy as amp_check
from mamlbook.measure import lstm_kernels as rnn_check
from mamlbook.measure import precision as precision_check
from mamlbook.measure.gpu_speed import run_check


def test_rnn_check_on_cpu_gives_every_path_the_float64_gradient_up_to_float32_rounding():
    result = rnn_check.run("cpu", steps=1)
    rows = {r["row"]: r for r in result["rows"]}
    assert set(rows) == {"mamlbook", "first-order", "hand-vmap", "hand-loop"}  # no cuDNN rows on CPU
    for name in ("mamlbook", "hand-vmap", "hand-loop"):
        assert rows[name]["status"] == "ok" and rows[name]["grad_rel_err"] < 1e-5, rows[name]
    assert "| hand-vmap | HandLSTM |" in rnn_check.format_table(result)


def test_precision_check_float64_paths_agree_and_float32_is_close():
    rows = {r["variant"]: r for r in precision_check.run("cpu", ["W1"])["rows"]}
    assert rows["f64-vmap"]["rel_err"] < 1e-12      # the batched path is the same maths
    assert rows["fp32-loop"]["rel_err"] < 1e-4 and rows["fp32-vmap"]["rel_err"] < 1e-4
    assert rows["bf16-loop"]["status"] == "ok"


def test_amp_check_refuses_without_a_gpu_and_says_why(capsys):
    with pytest.raises(SystemExit):
        amp_check.main(["--device", "cpu"])
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_tf32_mode_sets_both_flags_and_restores_them():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with tf32_mode(False):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    with tf32_mode(True):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_gpu_check_times_tf32_on_and_off_for_float32_rows_only():
    result = run_check("cpu", iterations=1, warmup=0, modes=("fp32",), orders=("first",),
                       end_to_end=False, tf32=(False, True))
    assert [(r["mode"], r["tf32"]) for r in result["rows"]] == [("fp32", False), ("fp32", True)]


def test_agreement_is_the_relative_error_and_cosine_of_the_flat_float64_gradients():
    from mamlbook.measure.gpu_speed import agreement, flat64
    gen = torch.Generator().manual_seed(0)
    ref = [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in ((3, 4), (4,))]
    g = [(t + 1e-3 * torch.randn(t.shape, generator=gen, dtype=torch.float64)).float() for t in ref]
    a, b = flat64(g), flat64(ref)
    assert a.dtype == torch.float64 and a.shape == (16,) and torch.equal(a[:12], g[0].double().flatten())
    rel_err, cosine = agreement(a, b)
    assert rel_err == ((a - b).norm() / b.norm()).item() and 0 < rel_err < 1e-2
    assert cosine == torch.nn.functional.cosine_similarity(a, b, dim=0).item() and cosine > 0.9999
    assert agreement(b, b) == (0.0, pytest.approx(1.0))
