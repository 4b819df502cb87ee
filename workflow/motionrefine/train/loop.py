"""The training loop: resume, one optimiser step per row of the loss curve, checkpoints,
and the final save with its summary.

A trainer supplies what differs: its model, optimiser and scheduler, the identity a resumed
checkpoint must match, its batch source and its step function, and how its model is saved.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from motionrefine import __version__
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import write_text_atomic
from motionrefine.train.curve import prepare_tsv
from motionrefine.train.distributed import DistEnv
from motionrefine.train.prefetch import Prefetcher
from motionrefine.train.progress import Progress
from motionrefine.train.state import resume, save_checkpoint

log = logging.getLogger("motionrefine")


def optimizer_step(model, optimizer, scheduler, losses: Iterable[torch.Tensor], clip: float, step: int) -> None:
    """One update from one or more backward passes (gradient accumulation: the caller scales
    each loss and may compute the next one lazily, after the previous backward): refuse a
    non-finite loss (training diverged), clip the gradient norm, step."""
    optimizer.zero_grad(set_to_none=True)
    for loss in losses:
        if not torch.isfinite(loss):
            raise MotionRefineError(f"non-finite loss at step {step + 1}; training diverged")
        loss.backward()
    clip_and_step(model, optimizer, scheduler, clip)


def clip_and_step(model, optimizer, scheduler, clip: float) -> None:
    """The update once the gradients are in ``p.grad``: clip their norm, step, advance the schedule."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    scheduler.step()


class Training:
    """One resumable training run in ``out``: checkpoints in ``out/checkpoints``, the loss
    curve in ``tsv`` (default ``out/loss.tsv``), final weights in ``out/final.pth``.

    Built after the model, optimiser and scheduler: resumes them from the latest checkpoint
    (refused unless it matches ``identity``) and trims the loss curve to that step.
    ``stop_at``: end this call after that many total steps (checkpoint written); a later
    call continues. ``dist``: this process's rank when several train together (only rank 0
    writes the loss curve, checkpoints and final files, and logs progress)."""

    def __init__(self, name: str, out: str | os.PathLike, model, optimizer, scheduler, identity: dict,
                 columns: Sequence[str], steps: int, device, stop_at: int | None = None,
                 tsv: str | os.PathLike | None = None, dist: DistEnv = DistEnv()):
        self.name, self.out = name, Path(out)
        self.dist = dist
        self.columns = tuple(columns)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.ckpt_dir = self.out / "checkpoints"
        self.tsv = Path(tsv) if tsv is not None else self.out / "loss.tsv"
        self.meta = {**identity, "code_version": __version__}
        self.steps = steps
        self.start = resume(self.ckpt_dir, identity, model, optimizer, scheduler, device)
        if dist.is_main:
            prepare_tsv(self.tsv, columns, self.start)
        self.stop = steps if stop_at is None else max(self.start, min(steps, int(stop_at)))
        self.started = self.seconds = None
        self.step_seconds: list[float] = []

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def completed(self) -> bool:
        return self.stop >= self.steps

    def run(self, step_fn: Callable[[int, object], list[str]],
            batches: Callable[[int, int], Iterable] | None = None, prefetch: int = 0,
            checkpoint_every: int = 100, keep_checkpoints: int = 2, log_every: int = 10) -> None:
        """Steps start..stop−1. ``batches(start, stop)`` gives one batch per step (None: the
        step function gets None), loaded ``prefetch`` batches ahead in a thread if > 0.
        ``step_fn(step, batch)`` does the update and returns the loss-curve values between
        the step number and the seconds column, formatted. Every ``log_every`` steps a
        progress line (step, loss, lr, s/step, ETA) goes to the log."""
        self.started = time.perf_counter()
        source = None
        if self.stop > self.start:
            source = batches(self.start, self.stop) if batches is not None else itertools.repeat(None)
            if prefetch > 0:
                source = Prefetcher(source, prefetch)
            main = self.dist.is_main
            progress = Progress(self.name, self.start, self.stop, self.steps, log_every, enabled=main)
            try:
                with open(self.tsv, "a", newline="") if main else contextlib.nullcontext() as f:
                    writer = csv.writer(f, delimiter="\t", lineterminator="\n") if main else None
                    t_prev = time.perf_counter()
                    for step, batch in zip(range(self.start, self.stop), source):
                        values = step_fn(step, batch)
                        done = step + 1
                        now = time.perf_counter()
                        self.step_seconds.append(now - t_prev)
                        if main:
                            writer.writerow([done, *values, f"{now - t_prev:.4f}"])
                            f.flush()
                            progress.update(done, dict(zip(self.columns[1:], values)), now - t_prev)
                        t_prev = now
                        if main and (done % checkpoint_every == 0 or done == self.stop):
                            save_checkpoint(self.ckpt_dir, done, self.model, self.optimizer, self.scheduler,
                                            self.meta, keep_checkpoints)
            finally:
                progress.close()
                if isinstance(source, Prefetcher):
                    source.close()
        self.seconds = time.perf_counter() - self.started

    def progress(self) -> dict:
        """The leading summary fields (a trainer adds its own after them)."""
        return {"steps_done": self.stop, "steps": self.steps, "resumed_from": self.start, "seconds": self.seconds}

    def finish(self, summary: dict, save_model: Callable[[Path], str], **info) -> dict:
        """Once all steps ran: the final weights (``save_model(path)`` returns their sha256) and
        ``summary.json`` (the summary plus ``info``). Returns the summary."""
        if not self.dist.is_main:
            return summary
        if self.completed:
            final = self.out / "final.pth"
            summary["final"] = str(final)
            summary["final_sha256"] = save_model(final)
            write_text_atomic(self.out / "summary.json", json.dumps({**summary, **info}, indent=1, default=str))
        log.info("%s %s: steps %d→%d of %d in %.1f s", self.name, self.out, self.start, self.stop, self.steps,
                 self.seconds)
        return summary
