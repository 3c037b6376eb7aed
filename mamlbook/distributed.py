"""Past one machine: the meta-batch split across processes with ``torch.distributed`` (chapter 7; docs/distributed.md).

    torchrun --standalone --nproc_per_node=2 -m mamlbook train --preset omniglot-5w1s --out runs/omni2

What happens, why an explicit all-reduce rather than DistributedDataParallel, resuming and what to
expect: docs/distributed.md. Here, where each part lives: the CLI joins torchrun's ranks
(:func:`init_from_environment`: ``gloo`` on the CPU, ``nccl`` on CUDA) and hands them to the learner
(:func:`distribute`, ``Algorithm.ranks``), whose outer step averages the gradients of its
:meth:`~mamlbook.algorithms.Algorithm.meta_parameters` in one flat all-reduce per meta-step
(:meth:`Ranks.average_gradients`; Reptile's direction: :meth:`Ranks.average`). The one training loop
(:func:`mamlbook.train.fit`) keeps this rank's T/N tasks of every whole meta-batch (:meth:`Ranks.shard`)
and reads (:meth:`Ranks.from_main`) and writes checkpoints on rank 0 only, after checking that the ranks
agree (:meth:`Ranks.checkpoint_extras`); the meta-test scores its tasks split across ranks
(:meth:`Ranks.score_split`). Beyond the doc's reasons against DDP: ProtoNet trains a headless copy of
the module, and for networks this small one flat all-reduce costs what DDP's buckets would, while
keeping the meta-gradient visible where the book checks it. A rank that dies ends the job with one
line from each survivor (:class:`RankLostError`); :func:`elastic_resume` lets a torchrun restart
continue its own job's checkpoint.
"""
from __future__ import annotations

import hashlib
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from .errors import MamlbookError, OptionError
from .runs import load_checkpoint

__all__ = ["RankLostError", "Ranks", "launched_by_torchrun", "check_divisible", "init_from_environment",
           "distribute", "on_main", "elastic_resume", "describe", "close"]


class RankLostError(MamlbookError):
    """Another rank died or the launcher stopped this one: the job ends; the last checkpoint stays."""


RESUME_HINT = ("the last checkpoint in --out is kept: rerun the same command with --resume (any number of "
               "ranks), or launch with torchrun --max-restarts=K to resume by itself")


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting RANK and WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def check_divisible(meta_batch_size: int, world_size: int) -> None:
    """Refuse a meta-batch that does not split into equal shares (each rank adapts T/N tasks)."""
    if meta_batch_size % world_size:
        down = meta_batch_size - meta_batch_size % world_size
        raise OptionError(f"--meta-batch-size {meta_batch_size} does not divide among {world_size} ranks: each "
                          f"rank adapts an equal share of the tasks; use a meta-batch size divisible by "
                          f"{world_size} (e.g. {down or world_size} or {down + world_size}) or another number "
                          "of ranks (torchrun --nproc_per_node)")


@dataclass
class Ranks:
    """This process's place among the ranks, and the collectives the loop and the learners need.

    Attributes:
        rank, world_size: this process's index and the number of processes.
        backend: "gloo" (CPU) or "nccl" (CUDA).
        device: where collective tensors live: the CPU for gloo, this rank's GPU for nccl.
        run_id: torchrun's rendezvous id (TORCHELASTIC_RUN_ID), written into checkpoints.
        restart: how many times torchrun has restarted the job (TORCHELASTIC_RESTART_COUNT).
    """

    rank: int
    world_size: int
    backend: str
    device: torch.device
    run_id: str | None = None
    restart: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    def _collective(self, what: str, fn: Callable, *args, **kw):
        try:
            return fn(*args, **kw)
        except RuntimeError as err:                     # DistBackendError, gloo "Connection closed by peer", ...
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RankLostError(f"rank {self.rank} of {self.world_size} lost contact with the other ranks during "
                                f"{what} (another rank died or was killed: {detail}); the job stops; "
                                f"{RESUME_HINT}") from err

    # --- the meta-batch -------------------------------------------------------------------------
    def shard(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """This rank's contiguous T/N tasks of a whole meta-batch (x_s, y_s, x_q, y_q), each (T, ...)."""
        tasks = batch[0].shape[0]
        check_divisible(tasks, self.world_size)
        n = tasks // self.world_size
        return tuple(t[self.rank * n:(self.rank + 1) * n] for t in batch)

    def _sum(self, flat: torch.Tensor, what: str) -> torch.Tensor:
        buf = flat.to(self.device)
        self._collective(what, dist.all_reduce, buf, op=dist.ReduceOp.SUM)
        return buf.to(flat.device)

    @torch.no_grad()
    def average_gradients(self, params: list[torch.Tensor], loss: torch.Tensor | float) -> torch.Tensor:
        """Replace every ``p.grad`` by its mean over ranks (the one-process meta-gradient: docs/distributed.md);
        return the mean loss (every rank: the same bits).

        A parameter without a gradient on any rank keeps ``grad=None`` (Adam then skips it, as it would
        in one process); one with a gradient on some ranks only gets the others' zeros. One all-reduce
        per dtype (one in practice).
        """
        loss = torch.as_tensor(loss).detach()
        groups: dict[torch.dtype, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p.dtype, []).append(i)
        mean_loss = None
        for dtype, idx in groups.items():
            parts = [params[i].grad.reshape(-1) if params[i].grad is not None
                     else torch.zeros(params[i].numel(), dtype=dtype, device=params[i].device) for i in idx]
            has = torch.tensor([params[i].grad is not None for i in idx], dtype=dtype, device=params[0].device)
            extras = [has] + ([loss.to(dtype=dtype, device=params[0].device).reshape(1)] if mean_loss is None else [])
            total = self._sum(torch.cat(parts + extras), "the meta-gradient all-reduce")
            n = sum(params[i].numel() for i in idx)
            grads, counts = total[:n] / self.world_size, total[n:n + len(idx)]
            if mean_loss is None:
                mean_loss = total[-1] / self.world_size
            for i, count, grad in zip(idx, counts.tolist(), grads.split([params[i].numel() for i in idx])):
                if count > 0:
                    params[i].grad = grad.view_as(params[i]).clone()
        if mean_loss is None:                                   # a learner with no meta-parameters
            mean_loss = self._sum(loss.double().reshape(1), "the loss all-reduce")[0] / self.world_size
        return mean_loss

    @torch.no_grad()
    def average(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The mean over ranks of each tensor (Reptile's direction θ − mean_i φ_i), as new tensors."""
        if not tensors:
            return []
        dtype = tensors[0].dtype
        flat = self._sum(torch.cat([t.reshape(-1).to(dtype) for t in tensors]), "the Reptile all-reduce")
        return [(part / self.world_size).view_as(t).to(t.dtype)
                for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any (e.g. one rank's clock passed the time budget)."""
        return bool(self._sum(torch.tensor([float(flag)]), "a stop decision")[0] > 0)

    # --- objects, files and checkpoints ----------------------------------------------------------
    def gather(self, obj) -> list:
        """``obj`` from every rank, in rank order (on every rank)."""
        out = [None] * self.world_size
        self._collective("a gather", dist.all_gather_object, out, obj)
        return out

    def from_main(self, fn: Callable[[], object]):
        """Run ``fn`` on rank 0 and hand every rank its result, or raise its :class:`MamlbookError` on every rank.

        Used for reading files (a checkpoint, ``best.pt``) and for decisions about the out folder:
        one reader, so the ranks cannot disagree and only rank 0 needs to see the files.
        """
        box = [None]
        if self.is_main:
            try:
                box[0] = (fn(), None)
            except MamlbookError as err:
                self._collective("a broadcast from rank 0", dist.broadcast_object_list, [(None, str(err))], src=0)
                raise
        self._collective("a broadcast from rank 0", dist.broadcast_object_list, box, src=0)
        value, err = box[0]
        if err is not None:
            raise MamlbookError(str(err))
        return value

    def checkpoint_extras(self, learner, generator: torch.Generator, iteration: int) -> dict:
        """Every rank's torch RNG state for the checkpoint, after checking (a fingerprint) that the ranks
        agree on the learner's state (θ, learned extras) and the task generator; a difference is refused."""
        digest = hashlib.sha256(str(iteration).encode())
        for tensors in [learner.state_dict()["model"], *learner.extra_state().values()]:
            for name, t in sorted(tensors.items()):
                digest.update(name.encode())
                digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        digest.update(generator.get_state().numpy().tobytes())
        rows = self.gather((digest.hexdigest(), torch.get_rng_state()))
        differ = [r for r, (d, _) in enumerate(rows) if d != rows[0][0]]
        if differ:
            raise MamlbookError(f"ranks {differ} disagree with rank 0 on the learner or the task stream at iteration "
                                f"{iteration} (a rank-dependent setting or a nondeterministic kernel); no checkpoint "
                                "was written")
        extras = {"torch_rng_ranks": torch.stack([rng for _, rng in rows])}
        if self.run_id is not None:
            extras["elastic_run_id"] = self.run_id
        return extras

    def restore_rng(self, state: dict) -> None:
        """This rank's saved RNG state if the checkpoint has one per rank of as many ranks, else rank 0's."""
        rngs = state.get("torch_rng_ranks")
        same = rngs is not None and rngs.shape[0] == self.world_size
        # clone: set_rng_state needs a tensor with its own storage (a row of the stacked (N, ·) one crashes it)
        torch.set_rng_state((rngs[self.rank] if same else state["torch_rng"]).clone())

    # --- evaluation ------------------------------------------------------------------------------
    def score_split(self, batches: Iterable[tuple], score: Callable[[tuple], torch.Tensor], columns: int,
                    num_batches: int) -> torch.Tensor:
        """The (tasks, columns) score table of ``num_batches`` ``batches``, scored split across ranks.

        Every rank draws every batch (the one-process task sequence) and scores a contiguous block of
        whole batches (bit for bit as one process), or, with fewer batches than ranks, a contiguous part of
        every batch (equal up to the rounding of a smaller vmap): docs/distributed.md. The rows go to their
        places in a zero table summed over ranks (exact: x + 0 = x), so every rank holds the table.
        """
        whole = num_batches >= self.world_size
        rows, start = [], 0
        for i, b in enumerate(batches):
            t = b[0].shape[0]
            if whole:
                lo, hi = (0, t) if i * self.world_size // num_batches == self.rank else (0, 0)
            else:
                lo, hi = t * self.rank // self.world_size, t * (self.rank + 1) // self.world_size
            if hi > lo:
                rows.append((start + lo, score(b if hi - lo == t else tuple(x[lo:hi] for x in b)).double().cpu()))
            start += t
        table = torch.zeros(start, columns, dtype=torch.float64)
        for at, part in rows:
            table[at:at + part.shape[0]] = part
        return self._sum(table, "the evaluation gather")


def init_from_environment(device: torch.device, meta_batch_size: int | None = None,
                          timeout_s: float = 1800.0) -> tuple[Ranks | None, torch.device]:
    """Join torchrun's process group if launched by it: (Ranks, this rank's device), else (None, device).

    The backend follows the device: ``nccl`` for CUDA (rank r uses GPU LOCAL_RANK), ``gloo`` on the CPU.
    A ``meta_batch_size`` that does not divide among the ranks is refused before joining.
    """
    if not launched_by_torchrun():
        return None, device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if meta_batch_size is not None:
        check_divisible(meta_batch_size, world)
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise OptionError(f"--device cuda: local rank {local} needs GPU {local}, but this machine has "
                              f"{torch.cuda.device_count()}; launch at most {torch.cuda.device_count()} ranks per "
                              "machine (torchrun --nproc_per_node), or use --device cpu")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if not dist.is_initialized():
        try:
            store, rank, world = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout_s)))
            # One key space per torchrun attempt: after a restart, the store still holds the dead
            # attempt's addresses, and gloo would try to connect to them (seen with torch 2.14).
            store = dist.PrefixStore(f"mamlbook/attempt_{restart}/", store)
            dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                    timeout=timedelta(seconds=timeout_s),
                                    **({"device_id": device} if backend == "nccl" else {}))
        except (RuntimeError, ValueError) as err:
            raise RankLostError(f"rank {rank} of {world} could not join the process group ({backend}) at "
                                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}: "
                                f"{str(err).strip().splitlines()[0] if str(err).strip() else err!r}; check "
                                "torchrun's rendezvous flags (docs/distributed.md)") from err
    ranks = Ranks(rank, world, backend, device if backend == "nccl" else torch.device("cpu"),
                  run_id=os.environ.get("TORCHELASTIC_RUN_ID"), restart=restart)

    def stop(signum, frame):   # torchrun stops the other ranks with SIGTERM when one fails: one line, not a traceback
        raise RankLostError(f"rank {ranks.rank} of {ranks.world_size} was stopped by the launcher (SIGTERM: "
                            f"another rank failed, or the job was cancelled); {RESUME_HINT}")
    signal.signal(signal.SIGTERM, stop)
    if not ranks.is_main:                     # one voice: rank 0 prints; errors (stderr) come from every rank
        sys.stdout = open(os.devnull, "w")    # for the process's lifetime
    return ranks, device


def distribute(learner, ranks: Ranks | None):
    """Give ``learner`` its ranks: its outer step then averages the meta-gradient across them; returns it."""
    learner.ranks = ranks
    return learner


def on_main(ranks: Ranks | None, fn: Callable[[], object]):
    """``fn()`` in one process; across ranks, run on rank 0 with its result (or error) on every rank."""
    return fn() if ranks is None else ranks.from_main(fn)


def elastic_resume(ranks: Ranks | None, out: Path) -> bool:
    """Whether this attempt resumes by itself: a torchrun restart, and ``out/checkpoint.pt`` of the same job.

    Same job: the checkpoint's ``elastic_run_id`` is this rendezvous id (torchrun ``--standalone``
    draws a fresh one per launch; give multi-machine jobs a unique ``--rdzv-id``), so a checkpoint
    left by another run in the same folder is never taken over.
    """
    if ranks is None or ranks.restart == 0 or ranks.run_id is None:
        return False

    def same_job() -> bool:
        path = Path(out) / "checkpoint.pt"
        return path.is_file() and load_checkpoint(path).get("elastic_run_id") == ranks.run_id
    resume = bool(ranks.from_main(same_job))
    if resume:
        print(f"torchrun restart {ranks.restart}: resuming {Path(out) / 'checkpoint.pt'}, written by this job",
              flush=True)
    return resume


def describe(ranks: Ranks | None) -> dict:
    """For the run record: {"world_size": N, "backend": "gloo" | "nccl" | None}."""
    return {"world_size": 1 if ranks is None else ranks.world_size, "backend": None if ranks is None else ranks.backend}


def close(ranks: Ranks | None) -> None:
    """Leave the process group (at the end of a run)."""
    if ranks is not None and dist.is_initialized():
        dist.destroy_process_group()
