"""Real-texture benchmark scenes with exact ground-truth motion.

Real photographs supply the appearance; the motion is synthetic and therefore known
exactly. A scene is a stack of layers drawn back to front in a fixed order:

* layer 0, the background: one real frame seen through a smooth camera path (a
  homography per frame, drifting with small smooth random perturbations);
* layers 1..L: blobs with a soft alpha edge cut from other real frames, moving along
  smooth similarity or affine paths and occluding everything behind them.

Every layer ``l`` has a texture with its own pixel grid (centres at integers, like
``motionrefine.core.geometry``) and, per frame ``t``, an analytic forward map texture -> frame

    P_{l,t}(u) = A_{l,t} (u + D_{l,t}(u))        (A applied in homogeneous coordinates)

where ``A`` is the rigid part (homography for the background, affine for the blobs)
and ``D`` the non-rigid displacement, a smooth field defined *in texture space*. The
backward map M_{l,t} = P_{l,t}^{-1} (frame -> texture) inverts ``A`` exactly and
``u + D(u) = v`` by Newton iterations (with a fixed-point fallback). The field's
Lipschitz constant is capped below 1 (``max_strain``), so ``u -> u + D(u)`` is a
fold-free bijection and the solve is unique and converges.

Frames are rendered by backward mapping (sample the texture at M(x) for every frame
pixel x) and all ground truth comes from the same maps:

* owner of a frame point x: the front-most layer whose alpha at M(x) is >= 0.5;
* forward flow at x of frame t: P_{l,t+1}(M_{l,t}(x)) - x for the owner l, backward
  flow likewise from t+1 to t;
* occlusion (pair t -> t+1): the surface at x is not the owner at x + flow in frame
  t+1, i.e. a layer in front of it covers that point (alpha >= 0.5 there), or x + flow
  lies outside [0, W-1] x [0, H-1] (the same test as ``geometry.inside_frame``);
* tracks (TAP-Vid layout): query points at query frames follow their texture point
  through all frames via P; a point is occluded where a front layer covers it or it
  is outside the frame.

Non-rigid amplitude, defined: ``nonrigid_amplitude`` (px) is the peak, over texture
points and consecutive frame pairs, of the magnitude of the frame-to-frame change of
the non-rigid displacement, max |D_{t+1}(u) - D_t(u)|. The field rotates between two
independent Gaussian-smoothed noise fields, D_t = cos(w t + p) F_a + sin(w t + p) F_b
with w = 2 pi / ``nonrigid_period``; at the default period of 6 frames
2 sin(w/2) = 1, so the total deviation from the rest shape has the same peak scale as
the per-frame change. Texture px equal frame px up to the layer's scale (0.8-1.25).
If the requested amplitude at that ``nonrigid_sigma`` would fold the surface (field
Lipschitz constant >= ``max_strain``), the field is scaled down to ``max_strain`` and
the amplitude actually used is reported in ``SynthSequence.info`` (``layers[i]
["nonrigid_amplitude"]``).

Photometric changes (brightness/contrast drift, blur, sensor noise, JPEG) are applied
to the rendered frames only; ``frames_clean`` keeps the frames before them.

Modules: ``config`` (SynthConfig, presets, benchmark mixes), ``sampling`` (bilinear
sampling, homographies, smooth noise fields), ``layers`` (the layer model and its
random construction), ``render`` (SynthSequence and ``render_sequence``), ``check``
(``self_check``), ``store`` (Zarr read/write).
"""

from motionrefine.bench.synth.check import clean_pairs, self_check
from motionrefine.bench.synth.config import DEFAULT_MIX, PRESETS, SynthConfig, benchmark_configs, make_config
from motionrefine.bench.synth.layers import Layer
from motionrefine.bench.synth.render import SYNTH_FORMAT_VERSION, SynthSequence, render_sequence
from motionrefine.bench.synth.store import read_sequence, write_sequence

__all__ = [
    "DEFAULT_MIX", "PRESETS", "SYNTH_FORMAT_VERSION", "Layer", "SynthConfig", "SynthSequence",
    "benchmark_configs", "clean_pairs", "make_config", "read_sequence", "render_sequence",
    "self_check", "write_sequence",
]
