"""Input augmentation of a label clip for the tracker's fine-tuning (PIPs sizes): colour
jitter (one draw for the whole clip, or per frame with ``asymmetric_prob``), horizontal and
vertical flips and a crop, with the tracks transformed to match (``flow.augment.AugmentConfig``;
the paper mentions it, the released tracking code has none: ``no_aug`` switches it off)."""

from __future__ import annotations

import numpy as np

from motionrefine.flow.augment import AugmentConfig, apply_jitter, crop_size, jitter_params


def default_augment() -> AugmentConfig:
    # No vertical flips by default: unlike flow pairs, tracked videos are rarely upside down.
    return AugmentConfig(vflip_prob=0.0)


def augment_clip(frames: np.ndarray, tracks: np.ndarray, rng: np.random.Generator,
                 cfg: AugmentConfig | None = None) -> dict:
    """Augment an S-frame clip (S, H, W, 3) uint8 and its tracks (S, N, 2) px.

    Returns frames (S, h, w, 3) float32 0–255, tracks (S, M, 2) in the output frame's pixels,
    ``keep`` (N,) bool (tracks whose first point lies inside the crop, the M returned),
    ``crop_origin`` (y0, x0) and the flips applied."""
    cfg = cfg or default_augment()
    S, H, W = frames.shape[:3]
    tr = np.asarray(tracks, np.float64).copy()
    img = frames.astype(np.float32) / 255.0
    if not cfg.no_aug:
        if rng.random() < cfg.asymmetric_prob:
            img = np.stack([apply_jitter(f, jitter_params(cfg, rng)) for f in img])
        else:
            # One draw for the whole clip, as one image (one contrast mean): appearance stays
            # consistent along the tracks.
            img = apply_jitter(img.reshape(S * H, W, 3), jitter_params(cfg, rng)).reshape(S, H, W, 3)
    img = img * 255.0
    hf = vf = False
    if not cfg.no_aug:
        if rng.random() < cfg.hflip_prob:
            hf = True
            img = img[:, :, ::-1]
            tr[..., 0] = (W - 1) - tr[..., 0]
        if rng.random() < cfg.vflip_prob:
            vf = True
            img = img[:, ::-1]
            tr[..., 1] = (H - 1) - tr[..., 1]
    ch, cw = crop_size(H, W, cfg.crop)
    start = tr[0] if tr.shape[1] else np.zeros((0, 2))
    if cfg.random_crop:
        if len(start):
            # Place the crop so that a random track starts inside it.
            x, y = start[int(rng.integers(len(start)))]
            xlo, xhi = max(0, int(np.ceil(x - cw + 1))), min(int(np.floor(x)), W - cw)
            ylo, yhi = max(0, int(np.ceil(y - ch + 1))), min(int(np.floor(y)), H - ch)
            x0 = int(rng.integers(xlo, xhi + 1)) if xhi >= xlo else int(rng.integers(0, W - cw + 1))
            y0 = int(rng.integers(ylo, yhi + 1)) if yhi >= ylo else int(rng.integers(0, H - ch + 1))
        else:
            x0, y0 = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
    else:
        y0, x0 = (H - ch) // 2, (W - cw) // 2
    img = np.ascontiguousarray(img[:, y0:y0 + ch, x0:x0 + cw], dtype=np.float32)
    tr -= np.array([x0, y0], np.float64)
    keep = (start[:, 0] - x0 >= 0) & (start[:, 0] - x0 <= cw - 1) & (start[:, 1] - y0 >= 0) & (start[:, 1] - y0 <= ch - 1)
    return {"frames": img, "tracks": tr[:, keep].astype(np.float32), "keep": keep, "crop_origin": (y0, x0),
            "hflip": hf, "vflip": vf}
