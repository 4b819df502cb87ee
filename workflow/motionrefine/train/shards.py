"""One batch's gradient computed in slices on CPU threads (data parallelism inside a process).

On a CPU, the small convolutions of RAFT's update block scale poorly over OpenMP threads,
and on a shared machine an intra-op thread team stalls whenever one of its threads is
descheduled. Giving each thread its own slice of the batch instead (each runs forward and
backward single-threaded, independently) keeps both cores busy. The loss must be a mean
over samples (every trainer here reduces per sample, then averages): then the batch's
gradient is Σ_i (n_i / B)·∇loss_i, summed in slice order, so runs stay deterministic and
agree with the one-thread-team path within float rounding.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import torch

from motionrefine.core.errors import MotionRefineError


def split_batch(batch: dict, shards: int) -> list[dict]:
    """Contiguous slices along dim 0 of every tensor in ``batch`` (sizes differ by at most one)."""
    n = len(next(iter(batch.values())))
    bounds = [round(k * n / shards) for k in range(shards + 1)]
    return [{k: v[a:b] for k, v in batch.items()} for a, b in zip(bounds, bounds[1:]) if b > a]


class ThreadShards:
    """Computes gradients of ``loss_fn`` over ``n`` slices of a batch on ``n`` threads of one
    intra-op thread each; ``n == 1`` runs in the caller's thread with its own thread settings."""

    def __init__(self, n: int):
        self.n = max(1, int(n))
        self._pool = (ThreadPoolExecutor(self.n, thread_name_prefix="shard", initializer=torch.set_num_threads,
                                         initargs=(1,)) if self.n > 1 else None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def backward(self, loss_fn: Callable[[dict], tuple[torch.Tensor, object]], batch: dict,
                 params: Sequence[torch.nn.Parameter], step: int) -> tuple[torch.Tensor, list]:
        """Sets ``p.grad`` of ``params`` to the gradient of the batch's loss; returns that loss
        (detached) and each slice's second output of ``loss_fn``, in slice order. A non-finite
        loss raises before any gradient is stored."""
        params = list(params)
        subs = split_batch(batch, self.n)
        total = len(next(iter(batch.values())))

        def work(sub: dict):
            loss, extra = loss_fn(sub)
            w = len(next(iter(sub.values()))) / total
            grads = torch.autograd.grad(loss * w, params, allow_unused=True)
            return loss.detach() * w, extra, grads

        results = list(self._pool.map(work, subs)) if self._pool is not None else [work(s) for s in subs]
        loss = results[0][0]
        for r in results[1:]:
            loss = loss + r[0]
        if not torch.isfinite(loss):
            raise MotionRefineError(f"non-finite loss at step {step + 1}; training diverged")
        for j, p in enumerate(params):
            g = None
            for r in results:
                if r[2][j] is not None:
                    g = r[2][j] if g is None else g + r[2][j]
            p.grad = g
        return loss, [r[1] for r in results]
