"""The one training loop shared by RAFT fine-tuning, tracker pre-training and tracker fine-tuning.

- ``loop``: the optimiser step and the resumable step loop (``Training``) with its final save.
- ``state``: seeding, RNG states, checkpoints (save, rotation, resume with an identity check).
- ``curve``: the loss-curve TSV.
- ``prefetch``: batches loaded ahead in a background thread.
- ``workdir``: the fingerprinted folder a training's resumable state lives in.
"""
