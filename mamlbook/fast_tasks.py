"""The per-task meta-gradient on several CPU cores: the tasks of a meta-batch on worker threads.

Why (on a CPU the per-task loop is the conv + BatchNorm models' fastest path, and two intra-op threads
on a shared 2-core machine are a trap) and what it gains: docs/benchmarks.md, "CPU: omniglot-20w1s (W4)".

:class:`TaskThreads` runs whole tasks concurrently: ``workers`` Python threads, each with
one intra-op thread and its own replica of the model (``functional_call`` swaps a module's
parameters while it runs, so two threads must not share one), task i on worker i mod workers. Each
task's gradient is ``torch.autograd.grad`` of its query loss / T, kept, and the main thread adds
them into ``p.grad`` **in task order**, the order in which the plain loop's per-task ``backward``
accumulates them: the same float operations, so the same meta-gradient bit for bit. PyTorch
releases the GIL inside its kernels, so the threads compute in parallel; what they share is only the
Python between kernels (a few percent of a conv model's step).
"""
from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from .conv import has_batchnorm
from .maml import LossFn, Params, resolve_batched, task_query_loss

__all__ = ["usable_cores", "TaskThreads", "task_threads_for"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                     # macOS, Windows
        return os.cpu_count() or 1


class TaskThreads:
    """:func:`mamlbook.maml.meta_backward`'s looped path with the tasks spread over ``workers`` threads.

    Args:
        model: the network (its structure; weights come from ``params``); it must hold no buffers,
            since each worker runs a replica of it.
        workers: threads (default: the usable cores).
    """

    path = "task-threads"   # what the run record says when this path trains

    def __init__(self, model: nn.Module, workers: int | None = None):
        if any(True for _ in model.buffers()):
            raise ValueError("TaskThreads needs a model without buffers (each worker runs a replica of it)")
        self.workers = workers or usable_cores()
        self.replicas = [copy.deepcopy(model) for _ in range(self.workers)]
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mamlbook-task",
                                            initializer=torch.set_num_threads, initargs=(1,))
        return self._pool

    def close(self) -> None:
        """Stop the worker threads (they are also stopped at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __getstate__(self):                                    # deepcopy/pickle: threads are not copied
        return {**self.__dict__, "_pool": None}

    def meta_backward(self, params: Params, x_support: torch.Tensor, y_support: torch.Tensor,
                      x_query: torch.Tensor, y_query: torch.Tensor, *, inner_lr: float, inner_steps: int = 1,
                      loss_fn: LossFn = F.cross_entropy, first_order: bool = False,
                      adapt_bn: bool = True) -> torch.Tensor:
        """Accumulate the meta-gradient into ``p.grad`` exactly as the per-task loop does; return the loss."""
        names = [k for k, v in params.items() if v.requires_grad]
        if not names:
            raise ValueError("meta_backward needs parameters with requires_grad=True")
        leaves = [params[k] for k in names]
        num_tasks = x_support.shape[0]

        def run(worker: int) -> list:
            model, out = self.replicas[worker], []
            for i in range(worker, num_tasks, self.workers):
                loss = task_query_loss(model, params, x_support[i], y_support[i], x_query[i], y_query[i],
                                       inner_lr=inner_lr, inner_steps=inner_steps, loss_fn=loss_fn,
                                       first_order=first_order, adapt_bn=adapt_bn) / num_tasks
                out.append((i, loss.detach(), torch.autograd.grad(loss, leaves, allow_unused=True)))
            return out

        if self.workers == 1:
            results = run(0)
        else:
            futures = [self._executor().submit(run, w) for w in range(min(self.workers, num_tasks))]
            results = sorted((r for f in futures for r in f.result()), key=lambda r: r[0])
        total = None
        with torch.no_grad():
            for _, loss, grads in results:                    # task order: the loop's accumulation order
                for p, g in zip(leaves, grads):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad.add_(g)
                total = loss if total is None else total + loss
        return total


def task_threads_for(model: nn.Module, batched, device: torch.device) -> TaskThreads | None:
    """The learner's default on a CPU for conv + BatchNorm models (the looped path): :class:`TaskThreads`.

    Only where it is the fastest correct choice: ``batched="auto"`` resolved to the per-task loop
    (conv + batch-statistics BN on a CPU), PyTorch left at one intra-op thread (the CLI's default;
    with more, OpenMP already uses the cores) and at least two usable cores; else None.
    """
    if (batched != "auto" or torch.device(device).type != "cpu" or resolve_batched(model, "auto", device)
            or not has_batchnorm(model) or any(True for _ in model.buffers())
            or torch.get_num_threads() != 1 or usable_cores() < 2):
        return None
    return TaskThreads(model)
