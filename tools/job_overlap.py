"""How many jobs ran at once during a Snakemake run, from its log (docs/performance.md).

Reads the timestamps Snakemake prints before each ``rule``/``localrule`` block (the job's
start, with its ``jobid``) and each ``Finished jobid`` line, and prints the run's wall span
and, per number of jobs running, the seconds spent so:

    .venv/bin/python tools/job_overlap.py run.log     # Snakemake's stderr
    .venv/bin/python tools/job_overlap.py run.log --benchmarks results/benchmarks

One-second resolution, as Snakemake stamps its log. ``--benchmarks``: also the sums of the
jobs' wall and CPU seconds from the run's benchmark files (``s`` and ``cpu_time``), the figures
that compare machines.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_summary import read_benchmarks  # noqa: E402  (one reader of the benchmark files)

STAMP = re.compile(r"\[(\w{3} \w{3}\s+\d+ [\d:]+ \d{4})\]")
RULE = re.compile(r"(local)?rule (\w+):")
JOBID = re.compile(r"jobid: (\d+)")
FINISHED = re.compile(r"Finished jobid: (\d+)")


def job_spans(lines: list[str]) -> list[tuple[datetime, datetime, str]]:
    """(start, end, rule) of every job that started and finished in the log."""
    now, started, spans = None, {}, []
    for i, line in enumerate(lines):
        if m := STAMP.match(line):
            now = datetime.strptime(re.sub(" +", " ", m.group(1)), "%a %b %d %H:%M:%S %Y")
        elif (m := RULE.match(line)) and now is not None:
            for nxt in lines[i + 1:i + 12]:  # the block names its jobid a few lines down
                if j := JOBID.search(nxt):
                    started[j.group(1)] = (now, m.group(2))
                    break
        elif (m := FINISHED.match(line)) and m.group(1) in started:
            t0, rule = started.pop(m.group(1))
            spans.append((t0, now, rule))
    return spans


def overlap(spans) -> tuple[float, dict[int, int]]:
    """(wall seconds from the first start to the last end, {jobs running: seconds})."""
    if not spans:
        return 0.0, {}
    t0, t1 = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    counts, t = collections.Counter(), t0
    while t < t1:
        counts[sum(1 for s, e, _ in spans if s <= t < e)] += 1
        t += timedelta(seconds=1)
    return (t1 - t0).total_seconds(), dict(sorted(counts.items()))


def benchmark_sums(folder) -> tuple[int, float, float]:
    """(files, sum of wall ``s``, sum of ``cpu_time``) over the benchmark TSVs under ``folder``."""
    jobs = read_benchmarks(Path(folder))
    return len(jobs), float(jobs["s"].sum()), float(jobs["cpu_time"].sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", help="Snakemake's log (its stderr) of one run")
    ap.add_argument("--benchmarks", help="the run's results/benchmarks folder")
    args = ap.parse_args(argv)
    with open(args.log, encoding="utf-8", errors="replace") as fh:
        spans = job_spans(fh.read().splitlines())
    wall, counts = overlap(spans)
    print(f"{len(spans)} jobs over {wall:.0f} s")
    for n, sec in counts.items():
        print(f"{n} running: {sec} s ({100 * sec / wall:.0f} %)")
    if args.benchmarks:
        files, job_wall, job_cpu = benchmark_sums(args.benchmarks)
        print(f"{files} benchmark files: sum of job wall {job_wall:.0f} s, sum of job CPU {job_cpu:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
