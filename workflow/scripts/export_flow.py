"""Snakemake script of rule export_flow: a flow store -> one .flo, .npy or KITTI .png file per pair and direction."""

from motionrefine.config.schema import job_log
from motionrefine.io.flow_formats import export_flow_store

with job_log(snakemake.log[0]):
    export_flow_store(snakemake.input[0], snakemake.output[0], snakemake.wildcards.fmt)
