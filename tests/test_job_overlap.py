"""tools/job_overlap.py: jobs running at once, read from a Snakemake log."""
from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from job_overlap import benchmark_sums, job_spans, overlap  # noqa: E402

LOG = """\
[Thu Dec  3 17:42:31 2026]
localrule frames:
    output: results/frames/a.zarr
    jobid: 1
[Thu Dec  3 17:42:31 2026]
localrule frames:
    jobid: 2
[Thu Dec  3 17:42:41 2026]
Finished jobid: 1 (Rule: frames)
[Thu Dec  3 17:42:51 2026]
Finished jobid: 2 (Rule: frames)
[Thu Dec  3 17:42:51 2026]
rule labels:
    jobid: 3
[Thu Dec  3 17:43:01 2026]
Finished jobid: 3 (Rule: labels)
"""


def test_overlap_counts_seconds_per_number_of_running_jobs():
    spans = job_spans(LOG.splitlines())
    assert [(r, (e - s).total_seconds()) for s, e, r in spans] == [("frames", 10), ("frames", 20), ("labels", 10)]
    wall, counts = overlap(spans)
    assert wall == 30 and counts == {2: 10, 1: 20}


def test_benchmark_sums_add_the_last_row_of_each_file(tmp_path):
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.tsv").write_text(head + "10.5\t0:00:10\t1\t1\t1\t1\t0\t0\t1\t8.0\n")
    (tmp_path / "b.tsv").write_text(head + "2.0\t0:00:02\t1\t1\t1\t1\t0\t0\t1\t1.5\n")
    assert benchmark_sums(tmp_path) == (2, 12.5, 9.5)
