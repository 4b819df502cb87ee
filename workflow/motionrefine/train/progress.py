"""Progress a person can watch: a log line every N steps, and a tqdm bar on a terminal."""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

log = logging.getLogger("motionrefine")


def format_eta(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Steps ``start``..``stop`` of a ``total``-step training. Every ``every`` steps (and at the
    last one) logs step, loss, lr, seconds per step over those steps and the ETA of this call;
    a tqdm bar is shown only when stderr is a terminal (rule logs get the lines alone)."""

    def __init__(self, name: str, start: int, stop: int, total: int, every: int = 10, enabled: bool = True):
        self.name, self.stop, self.total = name, stop, total
        self.every = max(1, int(every))
        self.enabled = enabled
        self._window: list[float] = []
        self.bar = tqdm(total=stop, initial=start, desc=name, unit="step", dynamic_ncols=True, leave=False,
                        disable=not (enabled and sys.stderr.isatty()))

    def update(self, done: int, fields: dict[str, str], seconds: float) -> None:
        if not self.enabled:
            return
        self._window.append(seconds)
        self.bar.update(1)
        if "loss" in fields:
            self.bar.set_postfix(loss=fields["loss"], refresh=False)
        if done % self.every == 0 or done == self.stop:
            per_step = sum(self._window) / len(self._window)
            self._window.clear()
            log.info("%s step %d/%d loss %s lr %s %.3f s/step ETA %s", self.name, done, self.total,
                     fields.get("loss", "-"), fields.get("lr", "-"), per_step,
                     format_eta(per_step * (self.stop - done)))

    def close(self) -> None:
        self.bar.close()
