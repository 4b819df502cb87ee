"""RAFT optical flow, one concept per module: extractor, corr, update, model; padder."""

from motionrefine.models.raft.model import RAFT, RAFTConfig
from motionrefine.models.raft.padder import InputPadder

__all__ = ["RAFT", "RAFTConfig", "InputPadder"]
