"""Sizes the models need, known without importing them (the config checks them at parse time)."""

# RAFT's correlation pyramid pools the 1/8-scale map three times, so each padded side needs at
# least 8 cells of it: 64 px after padding to a multiple of 8, i.e. 57 px or more.
RAFT_MIN_SIDE = 57
