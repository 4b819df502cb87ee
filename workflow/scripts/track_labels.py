"""Snakemake script of rule track_labels: frames -> results/labels/tracks/{video}.zarr."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the library, installed or not

import torch

from motionrefine.config import job_log
from motionrefine.track_labels import make_track_labels

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    make_track_labels(snakemake.input.frames, snakemake.input.checkpoint, snakemake.output[0],
                      expected_sha256=snakemake.params.sha256, video=snakemake.wildcards.video,
                      **snakemake.params.labels)
