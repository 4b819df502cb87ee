"""One exception type for every user-facing input problem.

Workflow scripts raise them inside ``config.schema.job_log``, which ends the job with the
message alone (no traceback): it already names the file or key at fault.
"""


class MotionRefineError(Exception):
    """Bad input: a missing/corrupt file, a wrong checkpoint, an invalid config value."""


class AssetMissingError(MotionRefineError, FileNotFoundError):
    """A configured asset (weights, video, data) does not exist where it was looked for."""


class CheckpointError(MotionRefineError):
    """A checkpoint that cannot be loaded into the requested model."""


class VideoError(MotionRefineError):
    """A video or frame folder that cannot be decoded into a consistent frame stack."""


class StoreWriteError(MotionRefineError, OSError):
    """Writing an output store failed (full disk, quota, file-size limit): names the store."""
