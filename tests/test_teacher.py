"""The teacher's views (scale, mirror) and their inverse, on pairs with known motion."""

import numpy as np
import pytest

from motionrefine.flow.teacher import Teacher, TeacherSettings, from_view, to_view


class ShiftSearch:
    """A stand-in estimator that is exact on a global integer translation: it returns the
    shift (dx, dy) minimising the interior photometric error, as a constant flow field."""

    def __init__(self, radius: int = 8, margin: int = 12):
        self.radius, self.margin = radius, margin
        self.seen_shapes = []

    def _shift(self, a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
        m = self.margin
        best, arg = np.inf, (0, 0)
        for dy in range(-self.radius, self.radius + 1):
            for dx in range(-self.radius, self.radius + 1):
                # b(x + d) = a(x) for content moving by d
                moved = np.roll(b, (-dy, -dx), axis=(0, 1))
                err = np.abs(moved[m:-m, m:-m] - a[m:-m, m:-m]).mean()
                if err < best:
                    best, arg = err, (dx, dy)
        return arg

    def pairs(self, frames, backward=True):
        self.seen_shapes.append(frames.shape)
        n, h, w, _ = frames.shape
        def field(i, j):
            dx, dy = self._shift(frames[i], frames[j])
            f = np.zeros((h, w, 2), np.float32)
            f[..., 0], f[..., 1] = dx, dy
            return f
        fw = np.stack([field(t, t + 1) for t in range(n - 1)])
        bw = np.stack([field(t + 1, t) for t in range(n - 1)]) if backward else None
        return fw, bw


def translating(dx: int, dy: int, n: int = 3, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    # Smooth periodic texture: its upsampled copy is still matched exactly by the search.
    base = rng.uniform(0, 255, (h // 4, w // 4, 3)).astype(np.float32)
    base = np.kron(base, np.ones((4, 4, 1), np.float32))
    return np.stack([np.roll(base, (t * dy, t * dx), axis=(0, 1)) for t in range(n)]).astype(np.uint8)


@pytest.mark.parametrize("scales,flip", [((1.0,), False), ((2.0,), False), ((1.0,), True), ((2.0,), True),
                                         ((1.0, 2.0), True)])
def test_round_trip_is_exact_on_a_translation(scales, flip):
    dx, dy = 3, -2
    frames = translating(dx, dy)
    est = ShiftSearch(radius=8)
    fw, bw = Teacher(est, TeacherSettings(scales=scales, iters=4, flip=flip)).pairs(frames)
    assert fw.shape == (2, 48, 64, 2) and bw.shape == fw.shape
    np.testing.assert_array_equal(fw[..., 0], dx)
    np.testing.assert_array_equal(fw[..., 1], dy)
    np.testing.assert_array_equal(bw[..., 0], -dx)
    np.testing.assert_array_equal(bw[..., 1], -dy)
    # One estimator call per view, at the view's size.
    views = [(s, f) for s in scales for f in ((False, True) if flip else (False,))]
    assert [shape[1:3] for shape in est.seen_shapes] == [(round(48 * s), round(64 * s)) for s, _ in views]


def test_the_view_really_is_scaled_and_mirrored():
    """Inside the x2 mirrored view the motion is (-2 dx, 2 dy): the inverse must undo both."""
    dx, dy = 3, -2
    frames = translating(dx, dy)
    view = to_view(frames, 2.0, True)
    est = ShiftSearch(radius=8)
    fw, _ = est.pairs(view, backward=False)
    assert (fw[0, 0, 0, 0], fw[0, 0, 0, 1]) == (-2 * dx, 2 * dy)
    back = from_view(fw, 48, 64, flip=True)
    assert (back[0, 0, 0, 0], back[0, 0, 0, 1]) == (dx, dy)


def test_from_view_of_a_linear_field_is_the_native_field():
    """A view field u'(x') = s·g(x) sampled at view pixel centres maps back to g at native centres."""
    h, w, s = 12, 16, 2.0
    ys, xs = np.mgrid[0:h * 2, 0:w * 2].astype(np.float32)
    # native coordinates of view pixel centres: x = (x' + 0.5) / s - 0.5
    xn, yn = (xs + 0.5) / s - 0.5, (ys + 0.5) / s - 0.5
    view = np.stack([s * (0.5 * xn + 1.0), s * (-0.25 * yn)], axis=-1)[None]
    back = from_view(view, h, w, flip=False)[0]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    np.testing.assert_allclose(back[..., 0], 0.5 * xx + 1.0, atol=1e-5)
    np.testing.assert_allclose(back[..., 1], -0.25 * yy, atol=1e-5)


def test_self_labelling_and_the_size_cap():
    assert TeacherSettings(scales=(1.0,), iters=12, flip=False).is_student(12)
    assert not TeacherSettings(scales=(2.0,), iters=12, flip=False).is_student(12)
    capped = TeacherSettings(scales=(2.0,), max_pixels=4 * 100 * 100)
    assert capped.scales_for(100, 100) == (2.0,)
    assert capped.scales_for(200, 200) == (1.0,)
    assert capped.scales_for(400, 400) == (1.0,)  # never below native
    with pytest.raises(ValueError, match="scales"):
        TeacherSettings(scales=(0.0,))
