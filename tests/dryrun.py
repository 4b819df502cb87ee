"""Parsing helpers for `snakemake --dry-run` output, shared by the workflow tests."""


def dry_run_jobs(output: str) -> set[tuple[str, str]]:
    """(rule, first output) of every job a dry run lists (`all` has no output and is left out)."""
    jobs, rule = set(), None
    for line in output.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.rstrip().endswith(":"):
            rule = line.split()[1].rstrip(":")
        elif rule and line.strip().startswith("output:"):
            jobs.add((rule, line.split("output:", 1)[1].split(",")[0].strip()))
            rule = None
    return jobs
