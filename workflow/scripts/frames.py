"""Snakemake script of rule frames: one video (file or image folder) -> results/frames/{video}.zarr."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the library, installed or not

from motionrefine.config import job_log
from motionrefine.video import extract_frames

with job_log(snakemake.log[0]):
    p = snakemake.params
    extract_frames(snakemake.input.source, snakemake.output[0], start=p.start, end=p.end, stride=p.stride, resize=p.resize)
