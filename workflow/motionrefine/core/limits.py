"""Sizes the models need, known without importing them (the config checks them at parse time)."""

# RAFT's correlation pyramid pools the 1/8-scale map three times, so each padded side needs at
# least 8 cells of it: 64 px after padding to a multiple of 8, i.e. 57 px or more.
RAFT_MIN_SIDE = 57

# Directions refined in one batch hold at most this much all-pairs correlation (volumes and
# pyramids). It bounds memory, and on a CPU a batch of large volumes is slower than refining them
# one at a time (RAFT-small at 540×960: 2.8 s a direction in fours, 2.25 s alone; docs/performance.md).
CORR_CHUNK_BYTES = 256 << 20
