"""Snakemake script of rule label_quality: each scene's pseudo-labels against its ground truth,
beside the student's (pretrained, operating settings) EPE on the same kept pixels."""

import pandas as pd

from motionrefine.bench.scenes import label_quality, load_flow_scene
from motionrefine.config.schema import job_log
from motionrefine.core.device import pick_device
from motionrefine.flow.evaluate import predict_scene
from motionrefine.flow.inference import FlowEstimator
from motionrefine.models.checkpoint import load_raft

with job_log(snakemake.log[0]):
    ev = snakemake.params.settings
    dev = pick_device("auto", snakemake.threads)
    model, _ = load_raft(snakemake.input.pretrained, ev.variant, alternate_corr_pixels=ev.alternate_corr_pixels)
    student = FlowEstimator(model.to(dev), iters=ev.iters, device=dev)
    rows = []
    for s, labels in zip(snakemake.params.scenes, snakemake.input.labels):
        scene = load_flow_scene(s.kind, s.name, s.source, s.benchmark, s.reader_options)
        rows.append(label_quality(labels, scene, snakemake.params.speed_bins, student=predict_scene(student, scene)))
    pd.DataFrame(rows).to_csv(snakemake.output[0], index=False)
