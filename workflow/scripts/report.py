"""Snakemake script of rule report: evaluations, labels, loss curves -> results/report/."""

from motionrefine.config.schema import job_log
from motionrefine.report.page import build_report

with job_log(snakemake.log[0]):
    i, p, o = snakemake.input, snakemake.params, snakemake.output
    # label_quality, teacher_eval and tracking are [] when the config has no benchmark scenes / no tracking.
    lq = i.label_quality if isinstance(i.label_quality, str) else (list(i.label_quality) or [None])[0]
    teacher = i.teacher_eval if isinstance(i.teacher_eval, str) else (list(i.teacher_eval) or [None])[0]
    shown = {"model": p.model, "verify": p.verify, "finetune": p.finetune, "refine": p.refine}
    build_report(evals=list(i.evals), label_quality=lq, label_stores=list(i.labels), frame_stores=list(i.frames),
                 losses=list(i.losses), refined=list(i.refined), runs=list(p.runs), videos=list(p.videos),
                 pretrained=i.pretrained, variant=p.variant, iters=p.iters, config=shown,
                 out_html=o.html, out_summary=o.summary, out_table=o.table, threads=snakemake.threads,
                 tracking=list(i.tracking) or None, ablation=list(p.ablation),
                 guards=list(i.guards), teacher_eval=teacher,
                 out_figures={"change": o.change, "flows": o.flows, "coverage": o.coverage, "quality": o.quality,
                              "losses": o.losses},
                 out_coverage=o.coverage_table, roles=dict(p.roles))
