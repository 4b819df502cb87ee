"""Snakemake script of rule export_flow: a flow store -> one .flo or .npy file per pair and direction."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the library, installed or not

from motionrefine.config import job_log
from motionrefine.flowio import export_flow_store

with job_log(snakemake.log[0]):
    export_flow_store(snakemake.input[0], snakemake.output[0], snakemake.wildcards.fmt)
