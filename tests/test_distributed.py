"""The meta-batch across processes (issue 14): N gloo ranks on the CPU run the one-process run.

Two kinds of launch, both on 127.0.0.1:

- ``torch.multiprocessing`` spawns two ranks (a free TCP port) that run the learners and the
  training loop in float64 on a tiny Conv4 problem; this process computes the one-process run and
  compares: the 2-rank meta-gradient and θ after three meta-steps equal it to 1e-10 for all seven
  learners, MAML's also equals the mean of per-task meta-gradients computed one task at a time (an
  independent check); a 2-rank run resumed on one process ends as the uninterrupted one does; a
  2-rank resume is bit-identical; the split meta-test gives the one-process table.
- ``torchrun --standalone`` runs the real command line: the run record names the world size and
  the backend, a 2-rank run resumes on one process, torchrun's ``--max-restarts`` resumes a job
  whose rank was killed by itself, and a killed rank with no restart left stops the job with a
  message, after which the run resumes from its checkpoint.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cli_fixtures import SINE, cli, learner_tensors, metrics, train

from mamlbook.algorithms import make_algorithm
from mamlbook.conv import omniglot_conv4
from mamlbook.distributed import Ranks, distribute
from mamlbook.maml import meta_loss
from mamlbook.problems import TaskSet, evaluate_learner
from mamlbook.runs import load_checkpoint
from mamlbook.train import fit

pytestmark = pytest.mark.skipif(not dist.is_available() or not sys.platform.startswith("linux"),
                                reason="needs torch.distributed (gloo) and Linux's /proc to find a rank to kill")

N_WAY, K, Q, T, SIZE = 3, 1, 2, 4, 12          # 3-way 1-shot, 2 queries per class, 4 tasks, 12×12 images
OPTIONS = {"maml": {"inner_lr": 0.4, "grad_clip": 0.05}, "fomaml": {"inner_lr": 0.4},
           "reptile": {"inner_lr": 0.1, "inner_steps": 2, "outer_lr": 0.5},
           "anil": {"inner_lr": 0.4}, "metasgd": {"inner_lr": 0.1},
           "mamlpp": {"inner_lr": 0.1, "inner_steps": 2, "iterations_per_epoch": 1, "anneal_epochs": 2},
           "protonet": {}}
STEPS = 3


def sample(gen: torch.Generator, tasks: int = T):
    """``tasks`` random 3-way tasks (float64 images), drawn from ``gen`` alone: the one task stream."""
    xs = torch.randn(tasks, N_WAY * K, 1, SIZE, SIZE, generator=gen, dtype=torch.float64)
    xq = torch.randn(tasks, N_WAY * Q, 1, SIZE, SIZE, generator=gen, dtype=torch.float64)
    ys = torch.arange(N_WAY).repeat_interleave(K).expand(tasks, -1)
    yq = torch.arange(N_WAY).repeat_interleave(Q).expand(tasks, -1)
    return xs + ys[..., None, None, None], ys, xq + yq[..., None, None, None], yq      # learnable: class shifts


def build(name: str):
    """A float64 learner on a 4-filter Conv4, the same θ₀ in every process."""
    torch.manual_seed(0)
    return make_algorithm(name, omniglot_conv4(N_WAY, filters=4).double(), problem="classification",
                          **OPTIONS[name])


def first_gradient(learner, batch) -> list[torch.Tensor]:
    """The meta-gradient of one outer step on ``batch`` (as the learner's optimizer saw it)."""
    learner.outer_step(learner.make_optimizer(1e-3), *batch)
    return [p.grad.clone() for p in learner.meta_parameters()]


def theta(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.meta_parameters()]


def fixed_tasks(num_tasks: int = 10, chunk: int = 4) -> TaskSet:
    return TaskSet(lambda n, gen: sample(gen, n), num_tasks, seed=7, chunk=chunk)


def rank_main(rank: int, world: int, port: int, folder: str) -> None:
    """One rank: every learner's first meta-gradient and θ after STEPS meta-steps; resume; evaluation."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ranks = Ranks(rank, world, "gloo", torch.device("cpu"))
    out, folder = {}, Path(folder)
    for name in OPTIONS:
        learner = distribute(build(name), ranks)
        batch = ranks.shard(sample(torch.Generator().manual_seed(1)))
        out[name, "grad"] = None if name == "reptile" else first_gradient(learner, batch)
        learner = distribute(build(name), ranks)
        fit(learner, sample, generator=torch.Generator().manual_seed(2), iterations=STEPS, progress=False)
        out[name, "theta"] = theta(learner)
    # MAML: 4 steps straight, and 2 steps + a 2-rank resume to 4 (bit-identical); the 2-step run is
    # also resumed on one process by the test.
    for tag, stops in (("whole", [4]), ("resumed", [2, 4])):
        learner = distribute(build("maml"), ranks)
        for i, stop in enumerate(stops):
            fit(learner, sample, generator=torch.Generator().manual_seed(3), iterations=stop, out=folder / tag,
                resume=i > 0, config={"test": "resume"}, progress=False)
        out[tag] = theta(learner)
    learner = distribute(build("maml"), ranks)
    fit(learner, sample, generator=torch.Generator().manual_seed(3), iterations=2, out=folder / "two_ranks",
        config={"test": "resume"}, progress=False)
    for chunk in (4, 10):                          # several chunks (whole ones per rank), and a single chunk
        out["eval", chunk] = evaluate_learner(learner, fixed_tasks(chunk=chunk), "classification")
    if rank == 0:
        torch.save(out, folder / "ranks.pt")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run :func:`rank_main` on two spawned gloo ranks; what rank 0 recorded, and its folder."""
    folder = tmp_path_factory.mktemp("two_ranks")
    mp.spawn(rank_main, args=(2, free_port(), str(folder)), nprocs=2, join=True)
    return torch.load(folder / "ranks.pt"), folder


def assert_close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = 1e-10) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=tol)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_two_ranks_take_the_one_process_meta_gradient_and_steps(two_ranks, name):
    """Float64: the averaged meta-gradient and θ after three meta-steps equal one process's (1e-10)."""
    got, _ = two_ranks
    if name != "reptile":                          # Reptile has no gradient: its averaged direction shows in θ
        one = first_gradient(build(name), sample(torch.Generator().manual_seed(1)))
        assert_close(got[name, "grad"], one)
        assert max(g.abs().max().item() for g in one) > 1e-3     # a real gradient, not zeros on both sides
    learner = build(name)
    start = theta(learner)
    fit(learner, sample, generator=torch.Generator().manual_seed(2), iterations=STEPS, progress=False)
    assert_close(got[name, "theta"], theta(learner))
    assert max((a - b).abs().max().item() for a, b in zip(theta(learner), start)) > 1e-4    # θ moved


def test_maml_meta_gradient_is_the_mean_of_per_task_meta_gradients(two_ranks):
    """Independent of the loop: (1/T) Σ_i ∇θ L_i(θ'_i), one task at a time, second order, clipped at ±0.05."""
    got, _ = two_ranks
    learner = build("maml")
    xs, ys, xq, yq = sample(torch.Generator().manual_seed(1))
    params = list(learner.params.values())
    per_task = [torch.autograd.grad(meta_loss(learner.model, learner.params, xs[i:i + 1], ys[i:i + 1], xq[i:i + 1],
                                              yq[i:i + 1], inner_lr=0.4, loss_fn=learner.loss_fn), params)
                for i in range(T)]
    mean = [torch.stack(g).mean(0).clamp(-0.05, 0.05) for g in zip(*per_task)]
    assert_close(got["maml", "grad"], mean)


def test_a_two_rank_resume_is_bit_identical(two_ranks):
    got, folder = two_ranks
    assert all(torch.equal(a, b) for a, b in zip(got["whole"], got["resumed"]))
    state = load_checkpoint(folder / "resumed" / "checkpoint.pt")
    assert state["iteration"] == 4 and state["torch_rng_ranks"].shape[0] == 2      # every rank's RNG state


def test_a_two_rank_run_resumed_on_one_process_continues_as_the_uninterrupted_run(two_ranks):
    got, folder = two_ranks
    learner = build("maml")
    run = fit(learner, sample, generator=torch.Generator().manual_seed(3), iterations=4,
              out=folder / "two_ranks", resume=True, config={"test": "resume"}, progress=False)
    assert run.resumed_from == 2
    assert_close(theta(learner), got["whole"])
    uninterrupted = build("maml")
    fit(uninterrupted, sample, generator=torch.Generator().manual_seed(3), iterations=4, progress=False)
    assert_close(theta(learner), theta(uninterrupted))


@pytest.mark.parametrize("chunk", [4, 10])
def test_the_split_meta_test_gives_the_one_process_numbers(two_ranks, chunk):
    """10 tasks in chunks of 4 (whole chunks per rank: identical), or one chunk of 10 split in two (1e-12)."""
    got, folder = two_ranks
    learner = build("maml")
    fit(learner, sample, generator=torch.Generator().manual_seed(3), iterations=2, progress=False)
    one = evaluate_learner(learner, fixed_tasks(chunk=chunk), "classification")
    two = got["eval", chunk]
    assert two["num_tasks"] == one["num_tasks"] == 10 and two["steps"] == one["steps"]
    if chunk == 4:
        assert two == one
    else:
        for key in ("mean", "ci95", "median"):
            torch.testing.assert_close(torch.tensor(two[key]), torch.tensor(one[key]), rtol=0, atol=1e-12)


# --- the command line under torchrun ----------------------------------------------------------------

FLAGS = [*SINE, "--meta-batch-size", "4", "--eval-tasks", "20", "--no-progress", "--no-compile", "--device", "cpu"]


def torchrun(nproc: int, out: Path, *flags, max_restarts: int = 0) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node=N -m mamlbook train`` (one thread per rank), started."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={nproc}", f"--max-restarts={max_restarts}",
                             "-m", "mamlbook", "train", "--out", str(out), *FLAGS, *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.terminate()              # torchrun passes SIGTERM on to its ranks
            proc.communicate(timeout=30)


def worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of the process with RANK=``rank`` that torchrun (pid ``launcher``) started, or None yet."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == launcher:
                if f"RANK={rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def kill_rank_after_checkpoint(proc: subprocess.Popen, out: Path, *, newer_than: float = 0.0,
                               not_pid: int | None = None, rank: int = 1, timeout: float = 40) -> int:
    """Wait for a ``checkpoint.pt`` written after ``newer_than`` and for rank ``rank`` (not ``not_pid``), then
    SIGKILL that rank (a crash: no handler runs); return its pid."""
    deadline, path = time.monotonic() + timeout, out / "checkpoint.pt"
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled before a checkpoint"
        pid = worker_pid(proc.pid, rank)
        if path.is_file() and path.stat().st_mtime > newer_than and pid not in (None, not_pid):
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.02)


def test_torchrun_two_ranks_record_the_world_and_resume_on_one_process(tmp_path):
    """metrics.json names world size 2 and gloo; the 2-rank run resumed on one process ends as one process's."""
    two, one = tmp_path / "two", tmp_path / "one"
    text = finish(torchrun(2, two, "--iterations", "4", "--checkpoint-every", "2"))
    assert metrics(two)["world_size"] == 2 and metrics(two)["backend"] == "gloo", text
    assert metrics(two)["eval"]["K=10"]["num_tasks"] == 20
    assert text.count("Wrote ") == 1                       # rank 0 speaks; the other rank is quiet
    assert cli("train", "--out", two, *FLAGS, "--iterations", "8", "--resume").code == 0
    assert cli("train", "--out", one, *FLAGS, "--iterations", "8").code == 0
    assert metrics(two)["resumed_from"] == 4 and metrics(two)["world_size"] == 1 and metrics(two)["backend"] is None
    a, b = learner_tensors(two / "checkpoint.pt"), learner_tensors(one / "checkpoint.pt")
    for k in b:                                            # float32: equal up to the rounding of the reduction
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_a_meta_batch_that_does_not_divide_among_the_ranks_is_refused(tmp_path, monkeypatch):
    """Refused before joining the process group (every rank alike): a one-line message, exit code 2."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    r = train(tmp_path / "run", *SINE, "--meta-batch-size", "5")
    assert r.code == 2 and "--meta-batch-size 5 does not divide among 2 ranks" in r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_killed_ranks_restart_resume_then_stop_the_job_with_a_message(tmp_path):
    """``--max-restarts=1``: the first killed rank makes torchrun restart the job, which resumes its own
    checkpoint by itself; the second leaves no restart: the job stops with a message, and the run then
    resumes from the last checkpoint (here on one process)."""
    out = tmp_path / "run"
    proc = torchrun(2, out, "--iterations", "100000", "--checkpoint-every", "20", max_restarts=1)
    try:
        first = kill_rank_after_checkpoint(proc, out)
        killed_at = time.time()
        kill_rank_after_checkpoint(proc, out, newer_than=killed_at, not_pid=first)   # the restarted attempt's
    finally:
        text = finish(proc)
    assert "torchrun restart 1: resuming" in text and "written by this job" in text, text
    assert proc.returncode != 0
    assert "rank 0 of 2" in text and ("lost contact" in text or "stopped by the launcher" in text), text
    # The surviving rank ends in the one-line message above (torchrun adds its own summary). On a heavily
    # loaded machine the launcher's SIGTERM was once seen to land inside torch's collective code and add a
    # traceback after the message, so only the message and the hint are required here.
    assert "--resume" in text
    saved = load_checkpoint(out / "checkpoint.pt")["iteration"]
    assert saved > 20 and saved % 20 == 0
    r = cli("train", "--out", out, *FLAGS, "--iterations", str(saved + 5), "--resume")    # on one process
    assert r.code == 0, r.err
    assert metrics(out)["resumed_from"] == saved and metrics(out)["iterations_done"] == saved + 5
