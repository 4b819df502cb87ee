"""RAFT optical flow, one concept per module: extractor, corr, update, model; padder."""

from .model import RAFT, RAFTConfig
from .padder import InputPadder

__all__ = ["RAFT", "RAFTConfig", "InputPadder"]
