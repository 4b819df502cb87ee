"""What a user takes away: per-video deliverables (flow, tracks, preview, meta.json) and the refined model."""
