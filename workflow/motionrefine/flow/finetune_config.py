"""The settings of RAFT fine-tuning (``flow.finetune``), apart from the trainer so that the
data side (``flow.pairs``) can take them without importing the trainer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.mapping import from_mapping
from motionrefine.flow.augment import AugmentConfig
from motionrefine.flow.cycle import DEFAULT_SPEED_EDGES, check_speed_edges
from motionrefine.flow.holdout import HoldOut
from motionrefine.flow.losses import SelfSupWeights

MODES = ("labels", "photometric", "cycle")

_SELFSUP = SelfSupWeights()


@dataclass
class FinetuneConfig:
    mode: str = "labels"
    variant: str = "small"
    steps: int = 1000
    batch_size: int = 12
    lr: float = 1e-4
    weight_decay: float = 1e-4
    adam_eps: float = 1e-8
    # OneCycleLR total_steps = steps + this. 0: the rate anneals to ~0 at the last step. The
    # official code uses 1000 + 100, which at a short budget stops mid-schedule.
    schedule_extra_steps: int = 0
    pct_start: float = 0.1
    clip: float = 5.0
    iters: int | None = None  # refinement iterations in training; None: 12 (small) / 32 (large, official)
    gamma: float = 0.85
    max_flow: float = 400.0
    seed: int = 125
    freeze_bn: bool = True
    # A seeded permutation of all pairs each epoch (official: index order, which trains the
    # last steps on the last videos only).
    shuffle: bool = True
    # Held back from every label for the guard (flow.holdout.HoldOut, in both directions and
    # with a band around each region): one block of `holdout_block` px in `holdout_every`;
    # 0 = train on every verified pixel.
    holdout_every: int = HoldOut.every
    holdout_block: int = HoldOut.block
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    rebalance: bool = False  # per-pixel speed-bin weights (rebalance.speed_bin_weights)
    # Loss weights by the pretrained student's disagreement with each label (flow.focus): 0 = every
    # verified pixel alike (the paper's), 1 = in proportion to the disagreement.
    focus: float = 0.0
    focus_crops: bool = False  # crops drawn by the focus weight they hold (needs focus > 0)
    speed_bins: tuple[float, ...] = DEFAULT_SPEED_EDGES
    # self-supervised baselines: the published values, kept in one place (flow.losses.SelfSupWeights)
    census_weight: float = _SELFSUP.census
    smooth_weight: float = _SELFSUP.smooth
    smooth_order: int = _SELFSUP.smooth_order
    smooth_level: int = _SELFSUP.smooth_level
    edge_scale: float = _SELFSUP.edge_scale
    cycle_weight: float = _SELFSUP.cycle
    occlusion_alpha: float = _SELFSUP.occlusion_alpha  # UnFlow constants, squared norms
    occlusion_beta: float = _SELFSUP.occlusion_beta
    # Steps without the occlusion mask first (UFlow's occ_after_num_steps): from a weak start
    # the forward-backward test marks every pixel occluded, which would leave no loss at all.
    occlusion_after: int = 0
    # runtime
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    num_workers: int = 0
    prefetch: int = 2
    device: str = "auto"
    threads: int | None = None
    # Batch slices trained on that many CPU threads at once (train.shards); None: one per
    # thread of ``threads`` (at most batch_size) on the CPU, 1 on CUDA or with several ranks.
    shards: int | None = None
    log_every: int = 10  # a progress line every this many steps
    amp: str = "auto"  # auto: bf16 autocast of the forward pass on CUDA (loss in float32); off: float32

    def __post_init__(self):
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig.from_dict(self.augment)
        self.speed_bins = tuple(check_speed_edges(self.speed_bins))
        if self.mode not in MODES:
            raise MotionRefineError(f"unknown fine-tuning mode {self.mode!r}; expected one of {MODES}")
        if self.variant not in ("small", "large"):
            raise MotionRefineError(f"unknown RAFT variant {self.variant!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise MotionRefineError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.smooth_order not in (1, 2):
            raise MotionRefineError(f"smooth_order must be 1 or 2, got {self.smooth_order}")
        if self.iters is not None and self.iters < 1:
            raise MotionRefineError(f"iters must be >= 1, got {self.iters}")
        if self.shards is not None and self.shards < 1:
            raise MotionRefineError(f"shards must be >= 1, got {self.shards}")
        if not 0.0 <= self.focus <= 1.0:
            raise MotionRefineError(f"focus must be in [0, 1], got {self.focus}")
        if self.focus_crops and self.focus == 0:
            raise MotionRefineError("focus_crops draws crops by the focus weights: set focus > 0")
        if self.log_every < 1:
            raise MotionRefineError(f"log_every must be >= 1, got {self.log_every}")
        if self.amp not in ("auto", "off"):
            raise MotionRefineError(f"amp must be 'auto' or 'off', got {self.amp!r}")

    @property
    def selfsup(self) -> SelfSupWeights:
        return SelfSupWeights(self.census_weight, self.smooth_weight, self.smooth_order, self.smooth_level,
                              self.edge_scale, self.cycle_weight, self.occlusion_alpha, self.occlusion_beta)

    @property
    def train_iters(self) -> int:
        return self.iters if self.iters is not None else (32 if self.variant == "large" else 12)

    @classmethod
    def from_dict(cls, d: dict | None) -> "FinetuneConfig":
        """Build from a config mapping. A top-level ``crop`` (as in the workflow's config
        schema) is accepted as shorthand for ``augment.crop``."""
        d = dict(d or {})
        if "crop" in d:
            aug = dict(d.get("augment") or {})
            if "crop" in aug:
                raise MotionRefineError("crop given both at the top level and under augment")
            aug["crop"] = d.pop("crop")
            d["augment"] = aug
        return from_mapping(cls, d, "fine-tuning config")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        d["speed_bins"] = list(self.speed_bins)
        return d
