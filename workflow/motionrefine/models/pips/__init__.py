"""PIPs (v1) multi-frame point tracker, after Harley, Fang, Li & Guibas, "Particle Video
Revisited: Tracking Through Occlusions Using Point Trajectories" (ECCV 2022).

``model``: the network; ``loss``: its training losses; ``checkpoint``: reading, loading
and saving weights; ``chain``: tracking through long videos by chaining S-frame windows.
"""

from motionrefine.models.pips.chain import reanchor_offset, track_long
from motionrefine.models.pips.checkpoint import PIPS_RELEASE, load_pips, read_pips_state, save_pips
from motionrefine.models.pips.loss import balanced_bce, score_map_loss, sequence_loss
from motionrefine.models.pips.model import (DeltaBlock, Pips, PipsConfig, PipsEncoder, PipsOutput, mlp_mixer,
                                            sincos_embed_3d)

__all__ = [
    "DeltaBlock", "PIPS_RELEASE", "Pips", "PipsConfig", "PipsEncoder", "PipsOutput", "balanced_bce", "load_pips",
    "mlp_mixer", "read_pips_state", "reanchor_offset", "save_pips", "score_map_loss", "sequence_loss",
    "sincos_embed_3d", "track_long",
]
