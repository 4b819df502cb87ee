"""motionrefine: refine pre-trained motion models on real, unlabelled video.

The library is importable and testable without Snakemake; the workflow's rules
call thin scripts in ``workflow/scripts`` that use it.
"""

__version__ = "0.1.0"
