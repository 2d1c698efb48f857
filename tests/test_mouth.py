"""The mouth's inside drawn by the warp renderer where the lips part (`cmm_jax.mouth`)."""

import jax
import numpy as np
import pytest
from skimage import data, draw

from cmm_jax import alignment, face, landmarks, mouth, warp

# Compiled once per shape (these run on many small arrays).
_signed_distance = jax.jit(mouth.signed_distance)
_palette = jax.jit(mouth.mouth_palette)
_mask = jax.jit(mouth.mouth_mask, static_argnums=2)

SKIN, LIPS, LIP_LINE, EYE_WHITE, BROWS, BACKGROUND = (
    (205, 160, 135), (175, 85, 85), (95, 40, 40), (235, 232, 225), (70, 50, 40), (90, 110, 140)
)


def _fill(image: np.ndarray, polygon: np.ndarray, colour) -> np.ndarray:
    """image with `polygon` (pixel coordinates) painted in `colour`, anti-aliased (4 x 4 samples a pixel)."""
    size = image.shape[0]
    samples = 4
    coverage = np.zeros((size * samples, size * samples))
    corners = (polygon + 0.5) * samples - 0.5
    rows, cols = draw.polygon(corners[:, 1], corners[:, 0], coverage.shape)
    coverage[rows, cols] = 1.0
    alpha = coverage.reshape(size, samples, size, samples).mean((1, 3))[..., None]
    return image + alpha * (np.asarray(colour, np.float32) - image)


def _synthetic_face(size: int, colour_scale=(1.0, 1.0, 1.0)):
    """A drawn neutral face (skin, eye whites, brows, closed lips with a dark lip
    line), uint8 (S, S, 3) times colour_scale per channel, and its points (68, 2)."""
    points = np.array(alignment.mean_neutral_shape(size))
    image = np.full((size, size, 3), BACKGROUND, np.float32)
    outline = list(landmarks.JAW) + list(landmarks.LEFT_BROW[::-1]) + list(landmarks.RIGHT_BROW[::-1])
    image = _fill(image, points[outline], SKIN)
    for eye in (landmarks.RIGHT_EYE, landmarks.LEFT_EYE):
        image = _fill(image, points[list(eye)], EYE_WHITE)
    for brow in (landmarks.RIGHT_BROW, landmarks.LEFT_BROW):
        line = points[list(brow)]
        image = _fill(image, np.concatenate([line, line[::-1] + [0.0, 0.03 * size]]), BROWS)
    image = _fill(image, points[list(landmarks.OUTER_LIPS)], LIPS)
    apart = np.array([0, -0.5, -0.5, -0.5, 0, 0.5, 0.5, 0.5]) * size / 64.0  # the line between the lips, 1 px per 64
    image = _fill(image, points[list(landmarks.INNER_LIPS)] + np.stack([np.zeros(8), apart], -1), LIP_LINE)
    return np.round(image * np.asarray(colour_scale, np.float32)).astype(np.uint8), points


def _opened(points: np.ndarray, fraction: float) -> np.ndarray:
    """The lower lip (outer and inner) and the chin moved down by fraction * mouth width. (68, 2)."""
    width = float(mouth.mouth_width(points))
    out = np.array(points, np.float32)
    out[[55, 56, 57, 58, 59, 65, 66, 67], 1] += fraction * width
    out[5:12, 1] += 0.7 * fraction * width
    return out


def _inside(points: np.ndarray, indices, size: int, margin: float = 0.0) -> np.ndarray:
    """bool (S, S): pixels more than `margin` px inside the polygon of points[indices]."""
    return np.asarray(_signed_distance(mouth.pixel_grid(size), points[list(indices)])) > margin


def _luma(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float64) @ np.array([0.299, 0.587, 0.114])


def _render(image, source, target, mouth_interior: bool = True, smile_folds: bool = False) -> np.ndarray:
    """One frame, (S, S, 3) uint8, from target (68, 2), by default without the
    smile's folds (tests/test_folds.py). (The tests render one frame at a time, with the
    options always given, so that the renderer is compiled for few keys.)"""
    target = np.asarray(target, np.float32)[None]
    return np.asarray(warp.warp_sequence(image, source, target, mouth_interior=mouth_interior,
                                         smile_folds=smile_folds))[0]


@pytest.fixture(scope="module")
def astronaut():
    """The astronaut's aligned 128 x 128 crop and its 68 points in crop pixels."""
    image = data.astronaut()
    points = face.find_face(image).points
    matrix = alignment.alignment_matrix(points, 128)
    return alignment.warp_to_crop(image, matrix, 128), landmarks.apply_affine(matrix, points).astype(np.float32)


def test_signed_distance_against_a_rasterised_polygon():
    size = 64
    polygon = _opened(np.array(alignment.mean_neutral_shape(size)), 0.3)[list(landmarks.INNER_LIPS)]
    depth = np.asarray(_signed_distance(mouth.pixel_grid(size), polygon))
    rows, cols = draw.polygon(polygon[:, 1], polygon[:, 0], (size, size))
    expected = np.zeros((size, size), bool)
    expected[rows, cols] = True
    assert np.mean((depth > 0) != expected) < 0.002  # pixels exactly on an edge may go either way
    # Far from the polygon: the distance to its nearest vertex or edge.
    corner = polygon[0]  # the right inner corner 60, the polygon's leftmost point
    assert depth[int(corner[1]), int(corner[0]) - 10] == pytest.approx(-(corner[0] - int(corner[0]) + 10), abs=0.6)


def test_closed_lips_give_exactly_the_bare_warp(astronaut):
    image, points = _synthetic_face(64)
    width = float(mouth.mouth_width(points))
    smile = points.copy()  # corners out and up, lips kept together
    smile[[48, 60], 0] -= 0.1 * width
    smile[[54, 64], 0] += 0.1 * width
    smile[[48, 54, 60, 64], 1] -= 0.05 * width
    parted = _opened(points, 0.015)  # lips apart by less than the threshold
    for target in (points, smile, parted):
        bare = _render(image, points, target, mouth_interior=False)
        np.testing.assert_array_equal(_render(image, points, target), bare)
    # The astronaut smiles with her teeth showing: unmoved or closing lips keep them.
    crop, crop_points = astronaut
    closing = crop_points.copy()
    closing[[65, 66, 67], 1] = closing[[63, 62, 61], 1]
    for target in (crop_points, closing):
        bare = _render(crop, crop_points, target, mouth_interior=False)
        np.testing.assert_array_equal(_render(crop, crop_points, target), bare)


def _teeth_band(points: np.ndarray, size: int) -> np.ndarray:
    """bool (S, S): the middle of the mouth, within 0.12 mouth widths below the upper inner lip 62."""
    width = float(mouth.mouth_width(points))
    xs, ys = mouth.pixel_grid(size)[..., 0], mouth.pixel_grid(size)[..., 1]
    below = np.asarray(ys) - points[62, 1]
    near_centre = np.abs(np.asarray(xs) - points[62, 0]) < 0.15 * width
    return near_centre & (below > 0.5 * size / 64.0) & (below < 0.12 * width)


@pytest.mark.parametrize("subject", ["drawn", "astronaut"])
def test_open_mouth_is_dark_with_upper_teeth(subject, astronaut):
    image, points = _synthetic_face(128) if subject == "drawn" else astronaut
    size = image.shape[0]
    target = _opened(points, 0.3)
    frame, bare = (_render(image, points, target, mouth_interior=flag) for flag in (True, False))
    interior = _inside(target, landmarks.INNER_LIPS, size, margin=1.0)
    lips = _inside(target, landmarks.OUTER_LIPS, size, margin=1.0) & ~_inside(target, landmarks.INNER_LIPS, size, -1.0)
    band = _teeth_band(target, size)
    assert band.sum() >= 15 and interior.sum() > 5 * band.sum()
    luma = _luma(frame)
    # Darker than the lips, teeth included; the cavity (away from the upper teeth) much darker.
    rest = interior & ~band & ~np.roll(band, 2 * size // 64, axis=0)
    assert luma[interior].mean() < 0.9 * luma[lips].mean()
    assert luma[rest].mean() < 0.75 * luma[lips].mean()
    # Upper teeth: a bright band under the upper lip, much brighter than the rest of the inside.
    assert luma[band].mean() > 150 and luma[band].mean() > luma[rest].mean() + 60
    # Nothing moves outside the mouth's polygon.
    outside = ~_inside(target, landmarks.INNER_LIPS, size, margin=-2.0 * size / 64.0)
    np.testing.assert_array_equal(frame[outside], bare[outside])


def test_batch_frames_are_rendered_alone():
    """warp_sequence over (K, T), each frame alone, and warp_image under vmap
    (as the translator stage calls it) draw the same frames."""
    image, points = _synthetic_face(64)
    rng = np.random.default_rng(0)
    fractions = np.array([[0.0, 0.05, 0.2], [0.12, 0.3, 0.45]])
    targets = np.stack([[_opened(points, f) + rng.normal(0, 0.3, points.shape) for f in row] for row in fractions])
    batch = np.asarray(warp.warp_sequence(image, points, targets.astype(np.float32)))  # default: interior, folds
    assert batch.shape == (2, 3, 64, 64, 3) and batch.dtype == np.uint8
    for k in range(2):
        for t in range(3):
            alone = _render(image, points, targets[k, t], smile_folds=True)
            assert np.abs(batch[k, t].astype(int) - alone).max() <= 1
    mapped = jax.jit(jax.vmap(warp.warp_image, (None, None, 0)))(
        image.astype(np.float32), points, targets.reshape(-1, 68, 2).astype(np.float32)
    )
    assert np.abs(np.round(np.asarray(mapped)) - batch.reshape(-1, 64, 64, 3)).max() <= 1


def test_window_draws_what_the_whole_frame_would():
    """draw_mouth_interior paints only a window around the inner lips, or the
    whole frame when they do not fit in it; both equal blending the whole frame."""
    image, points = _synthetic_face(64)
    frame = np.asarray(image, np.float32)
    palette = _palette(frame, points)
    whole = jax.jit(lambda f, t: f + _mask(points, t, 64)[..., None] * (mouth.interior_colours(
        mouth.pixel_grid(64), mouth.signed_distance(mouth.pixel_grid(64), t[np.asarray(landmarks.INNER_LIPS)]),
        palette, t, 1.0) - f))
    drawn = jax.jit(lambda f, t: mouth.draw_mouth_interior(f, palette, points, t))
    height, width = mouth.window_shape(64, mouth.WINDOW)
    for fraction in (0.2, 1.0):  # fits the window; taller than it
        target = _opened(points, fraction)
        inner = target[list(landmarks.INNER_LIPS)]
        assert (np.ptp(inner[:, 1]) + 2 < height) == (fraction < 0.5)
        np.testing.assert_allclose(np.asarray(drawn(frame, target)), np.asarray(whole(frame, target)), atol=1e-3)
    assert width < 64


def test_interior_does_not_depend_on_image_size():
    means, areas = [], []
    for size in (64, 128):
        image, points = _synthetic_face(size)
        target = _opened(points, 0.3)
        frame = _render(image, points, target).astype(np.float64)
        mask = np.asarray(_mask(points, target, size))
        means.append((frame * mask[..., None]).sum((0, 1)) / mask.sum())
        areas.append(mask.sum())
    assert areas[1] / areas[0] == pytest.approx(4.0, rel=0.08)
    np.testing.assert_allclose(means[0], means[1], atol=10.0)


def test_the_gate_opens_smoothly():
    points = np.array(alignment.mean_neutral_shape(64))
    fractions = np.linspace(0.0, 0.2, 41)
    area = np.array([float(_mask(points, _opened(points, f), 64).sum()) for f in fractions])
    assert area[0] == 0.0 and np.all(np.diff(area) >= 0.0)
    assert np.diff(area).max() < 0.1 * area[-1]  # no step from one video frame to the next


def test_colours_follow_the_photo():
    size = 64
    neutral, points = _synthetic_face(size)
    dark, _ = _synthetic_face(size, (0.5, 0.5, 0.5))
    blue, _ = _synthetic_face(size, (0.75, 0.9, 1.2))
    palettes = [_palette(image.astype(np.float32), points) for image in (neutral, dark, blue)]
    # The cavity keeps the hue of the photo's dark tone; the teeth, pulled towards
    # a warm white, keep part of the tint (here 1.6 x as blue against red).
    for name, bluer_by in (("cavity", 1.5), ("teeth", 1.1)):
        base, darker, bluer = (np.asarray(getattr(p, name)) for p in palettes)
        assert _luma(darker) == pytest.approx(0.5 * _luma(base), rel=0.05)
        assert bluer[2] / bluer[0] > bluer_by * base[2] / base[0]
    # The teeth: a warm off-white from the face's brightest tone, not a pasted white.
    teeth = np.asarray(palettes[0].teeth)
    assert 0.95 * _luma(SKIN) < _luma(teeth) < 240 and teeth[0] >= teeth[1] >= teeth[2]
    assert teeth[0] - teeth[2] < 0.6 * (SKIN[0] - SKIN[2])
    # And in the rendered frames.
    target = _opened(points, 0.3)
    interior = _inside(target, landmarks.INNER_LIPS, size, margin=1.0)
    frames = [_render(image, points, target)[interior].astype(np.float64).mean(0) for image in (neutral, dark, blue)]
    assert _luma(frames[1]) == pytest.approx(0.5 * _luma(frames[0]), rel=0.1)
    assert frames[2][2] / frames[2][0] > 1.1 * frames[0][2] / frames[0][0]
