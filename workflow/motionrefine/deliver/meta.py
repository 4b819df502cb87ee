"""meta.json of a deliverable: enough to trace every file back to its source frames and model.

A user who reads a flow file named ``fw_000012.flo`` must be able to tell which source frames
it joins, at what resolution, and which weights made it; a reviewer must be able to check the
guard's reason for handing this video the refined or the pretrained model.
"""

from __future__ import annotations

from typing import Mapping

from motionrefine import __version__


def scale_factors(frames_attrs: Mapping) -> tuple[float, float]:
    """(sx, sy): source pixels per stored pixel, from a frames store's attrs."""
    src, stored = frames_attrs["original_size"], frames_attrs["stored_size"]
    return src["width"] / stored["width"], src["height"] / stored["height"]


def tracks_meta(store_path: str) -> dict:
    """What made a tracking store: the tracker file's and its RAFT's sha256, the queries' origin."""
    from motionrefine.core.store import open_group

    g = open_group(store_path)
    attrs = dict(g.attrs)
    keys = ("checkpoint_sha256", "raft_sha256", "model_size", "iters", "query_source", "grid_spacing",
            "visibility_threshold")
    return {"store": str(store_path), "tracks": int(g["tracks"].shape[0]), **{k: attrs[k] for k in keys if k in attrs}}


def deliverable_meta(video: str, frames_attrs: Mapping, flow_attrs: Mapping, choice: Mapping, resolution: str,
                     files: Mapping[str, str], tracks: Mapping | None, extra: Mapping) -> dict:
    """The meta.json of one video's deliverables (plain JSON types only)."""
    sx, sy = scale_factors(frames_attrs)
    indices = [int(i) for i in frames_attrs["frame_indices"]]
    src, stored = frames_attrs["original_size"], frames_attrs["stored_size"]
    return {
        "video": video,
        "source": {
            "path": frames_attrs.get("source_path"),
            "kind": frames_attrs.get("source_kind"),
            # A folder of images has a hash of its listing (names, sizes, mtimes), a file its content hash.
            "sha256": frames_attrs.get("source_sha256"),
            "listing_sha256": frames_attrs.get("source_listing_sha256"),
            "fps": frames_attrs.get("fps"),
            "selection": {k: frames_attrs.get(k) for k in ("start", "end", "stride", "resize")},
        },
        "frames": {
            "count": len(indices),
            # frame_indices[k]: the source frame index of stored frame k; flow file i joins
            # source frame i to the next stored frame.
            "source_indices": indices,
            "pairs": [[a, b] for a, b in zip(indices[:-1], indices[1:])],
        },
        "resolution": {
            "source": [src["width"], src["height"]],
            "stored": [stored["width"], stored["height"]],
            "scale": [sx, sy],
            "delivered": resolution,
            "convention": "flow vectors and track positions in pixels of the delivered resolution; "
                          "positions at pixel centres (x_source + 0.5 = (x_stored + 0.5) * scale_x)",
        },
        "flow": {
            "model": choice["use"],
            "checkpoint_sha256": flow_attrs.get("checkpoint_sha256"),
            "iters": flow_attrs.get("iters"),
            "verdict": dict(choice),
        },
        "tracks": None if tracks is None else dict(tracks),
        "files": dict(files),
        **{k: v for k, v in extra.items()},
        "code_version": __version__,
    }
