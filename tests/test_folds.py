"""The folds the warp renderer shades for a smile (`cmm_jax.folds`): nasolabial where the
lip corners move up and out, around the eyes where the lower lids rise."""

import jax
import numpy as np
import pytest

from cmm_jax import alignment, folds, warp

_strengths = jax.jit(folds.fold_strengths)
_draw = jax.jit(folds.draw_smile_folds)
_eye_strengths = jax.jit(folds.eye_fold_strengths)
_draw_eyes = jax.jit(folds.draw_eye_folds)


def _smile(points: np.ndarray, out: float, up: float = 0.0) -> np.ndarray:
    """The lip corners (outer and inner) moved out and up by shares of the mouth width. (68, 2)."""
    width = float(np.linalg.norm(points[54] - points[48]))
    target = np.array(points, np.float32)
    target[[48, 60], 0] -= out * width
    target[[54, 64], 0] += out * width
    target[[48, 54, 60, 64], 1] -= up * width
    return target


def _lids_up(points: np.ndarray, rise: float, upper: float = 0.0) -> np.ndarray:
    """Both lower lids (40, 41, 46, 47) raised by `rise` and the upper lids (37, 38,
    43, 44) lowered by `upper`, in inter-ocular distances. (68, 2)."""
    iod = float(np.linalg.norm(points[36] - points[45]))
    target = np.array(points, np.float32)
    target[[40, 41, 46, 47], 1] -= rise * iod
    target[[37, 38, 43, 44], 1] += upper * iod
    return target


def _grey_face(size: int) -> np.ndarray:
    """A flat mid-grey image with a faint horizontal gradient (a skin-like field). (S, S, 3) float32."""
    ramp = np.linspace(100.0, 160.0, size, dtype=np.float32)
    return np.broadcast_to(ramp[None, :, None], (size, size, 3)).copy()


def test_neutral_frames_and_head_motion_leave_the_frame_alone():
    points = np.array(alignment.mean_neutral_shape(64), np.float32)
    frame = _grey_face(64)
    shifted = points + np.float32([3.0, -2.0])  # the whole head moves: the corners keep their place on the face
    for target in (points, shifted, _smile(points, -0.05)):  # a narrowing mouth has no smile folds either
        assert float(np.asarray(_strengths(points, target)).max()) == 0.0
        np.testing.assert_array_equal(np.asarray(_draw(frame, points, target)), frame)


def test_a_smile_darkens_beside_the_corners_and_nowhere_far():
    size = 128
    points = np.array(alignment.mean_neutral_shape(size), np.float32)
    target = _smile(points, 0.12, 0.05)
    np.testing.assert_array_equal(np.asarray(_strengths(points, target)), [1.0, 1.0])
    frame = _grey_face(size)
    shaded = np.asarray(_draw(frame, points, target))
    change = shaded.mean(-1) - frame.mean(-1)
    assert change.min() < -0.15 * frame.mean()  # a visible crease
    # Where: beside the corners, between the nose wings' height and below the corners,
    # on both sides; the eyes, brows and the middle of the lips are untouched.
    width = float(np.linalg.norm(target[54] - target[48]))
    ys, xs = np.nonzero(change < -2.0)
    assert ys.min() > points[31, 1] - 0.2 * width and ys.max() < target[48, 1] + 0.4 * width
    assert np.any(xs < target[48, 0] + 0.1 * width) and np.any(xs > target[54, 0] - 0.1 * width)
    centre = int(round(float(points[51, 0])))
    assert np.all(np.abs(change[:, centre - 3 : centre + 4]) < 1e-3)
    assert np.all(np.abs(change[: int(points[31, 1] - 0.3 * width)]) < 1e-3)


def test_folds_grow_with_the_smile_and_do_not_depend_on_size():
    darkest = {}
    for size in (64, 128):
        points = np.array(alignment.mean_neutral_shape(size), np.float32)
        frame = _grey_face(size)
        for out in (0.02, 0.04, 0.08):
            shaded = np.asarray(_draw(frame, points, _smile(points, out, 0.3 * out)))
            darkest[size, out] = float((frame - shaded).mean(-1).max() / frame.mean())
    assert darkest[64, 0.02] < darkest[64, 0.04] < darkest[64, 0.08]
    for out in (0.02, 0.04, 0.08):
        assert darkest[64, out] == pytest.approx(darkest[128, out], rel=0.15, abs=0.01)


def test_the_warp_draws_the_folds_by_default():
    size = 64
    points = np.array(alignment.mean_neutral_shape(size), np.float32)
    image = np.round(_grey_face(size)).astype(np.uint8)
    target = _smile(points, 0.1, 0.04)[None]
    with_folds, without = (np.asarray(warp.warp_sequence(image, points, target, smile_folds=flag))[0].astype(int)
                           for flag in (True, False))
    assert (without - with_folds).max() > 10 and (with_folds - without).max() <= 1 + 0.05 * 160


def test_eye_folds_need_the_lower_lids_to_rise():
    points = np.array(alignment.mean_neutral_shape(64), np.float32)
    frame = _grey_face(64)
    # Neutral, the head moved, a smile of the mouth only, a blink of the upper lids: nothing.
    for target in (points, points + np.float32([2.0, 3.0]), _smile(points, 0.1, 0.04), _lids_up(points, 0.0, 0.03)):
        assert float(np.asarray(_eye_strengths(points, target)).max()) == 0.0
        np.testing.assert_array_equal(np.asarray(_draw_eyes(frame, points, target)), frame)
    np.testing.assert_array_equal(np.asarray(_eye_strengths(points, _lids_up(points, 0.04))), [1.0, 1.0])


def test_eye_folds_darken_below_the_eyes_and_beside_their_outer_corners_only():
    size = 128
    points = np.array(alignment.mean_neutral_shape(size), np.float32)
    target = _lids_up(points, 0.04)
    frame = _grey_face(size)
    change = (np.asarray(_draw_eyes(frame, points, target)) - frame).mean(-1)
    assert change.min() < -0.1 * frame.mean()
    iod = float(np.linalg.norm(points[36] - points[45]))
    ys, xs = np.nonzero(change < -2.0)
    eye_line = float(points[[36, 45], 1].mean())
    assert ys.min() > eye_line - 0.15 * iod and ys.max() < eye_line + 0.2 * iod  # no lower than the cheek
    assert xs.min() < points[36, 0] and xs.max() > points[45, 0]  # crow's feet beyond the outer corners
    assert not np.any((xs > points[39, 0] + 0.05 * iod) & (xs < points[42, 0] - 0.05 * iod))  # not over the nose
    # The furrow: below each lower lid, darker than at the lid's height.
    column = int(round(float(points[[40, 41], 0].mean())))
    lid = float(target[[40, 41], 1].mean())
    assert change[int(round(lid + 0.06 * iod)), column] < change[int(round(lid)), column] - 2.0
    # Stronger with the rise, and the same at another size.
    darker = [float(-(np.asarray(_draw_eyes(frame, points, _lids_up(points, r))) - frame).mean(-1).min())
              for r in (0.01, 0.02, 0.04)]
    assert darker[0] < darker[1] < darker[2]
    small = np.array(alignment.mean_neutral_shape(64), np.float32)
    at_64 = -(np.asarray(_draw_eyes(_grey_face(64), small, _lids_up(small, 0.04))) - _grey_face(64)).mean(-1).min()
    assert at_64 / _grey_face(64).mean() == pytest.approx(darker[2] / frame.mean(), rel=0.2)
