"""The JAX piecewise-affine renderer against scikit-image, and on a real face."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data, transform

from cmm_jax import alignment, face, landmarks, video_metrics, warp
from cmm_jax.data import synth


@pytest.fixture(scope="module")
def astronaut_crop():
    """The astronaut's aligned 64x64 crop and its 68 points in crop pixels."""
    image = data.astronaut()
    points = face.find_face(image).points
    matrix = alignment.alignment_matrix(points)
    return alignment.warp_to_crop(image, matrix), landmarks.apply_affine(matrix, points).astype(np.float32)


def _smiles(neutral: np.ndarray, num_frames: int = 16) -> np.ndarray:
    """One synthetic clip per style, moved onto `neutral`: (S, T, 68, 2)."""
    identity = synth.sample_identity(np.random.default_rng(0))
    clips = []
    for style in range(len(synth.STYLES)):
        clip, _ = synth.sample_clip(np.random.default_rng(style), identity, 0, style, num_frames, noise_std=0.0)
        scale = landmarks.inter_ocular_distance(neutral) / landmarks.inter_ocular_distance(clip[0])
        clips.append(neutral + (clip - clip[:1]) * scale)
    return np.stack(clips).astype(np.float32)


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def test_triangles_cover_the_crop():
    size = landmarks.CROP_SIZE
    points = np.concatenate([alignment.mean_neutral_shape(size), warp.border_points(size)])
    corners = points[warp.triangles()]
    area = 0.5 * np.abs(_cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]))
    assert area.sum() == pytest.approx((size - 1) ** 2, rel=1e-4)


def test_unmoved_points_give_the_image_back(astronaut_crop):
    crop, points = astronaut_crop
    frames = np.asarray(warp.warp_sequence(crop, points, points[None, None]))
    np.testing.assert_array_equal(frames[0, 0], crop)


def test_agrees_with_scikit_image(astronaut_crop):
    crop, points = astronaut_crop
    target = _smiles(points)[2, -1]  # broad laugh, its last frame
    ours = np.asarray(warp.warp_sequence(crop, points, target[None]))[0].astype(np.float64)
    border = warp.border_points(crop.shape[0])
    reference_transform = transform.PiecewiseAffineTransform.from_estimate(
        np.concatenate([target, border]), np.concatenate([points, border])
    )
    reference = transform.warp(crop, reference_transform, order=1, preserve_range=True, mode="edge")
    # The triangulations differ (ours is fixed, scikit-image's follows the
    # points), so pixels near moving edges differ; the images agree overall.
    assert np.abs(ours - reference).mean() < 2.0
    assert np.mean(np.abs(ours - reference) > 20) < 0.01


def test_warped_smiles_pass_the_dlib_checks(astronaut_crop):
    """Real face, known smile paths: what `cmm_jax.sample` must reach, measured by dlib."""
    crop, points = astronaut_crop
    sequences = _smiles(points)
    frames = np.asarray(warp.warp_sequence(crop, points, sequences))
    assert frames.shape == (len(synth.STYLES), 16, 64, 64, 3) and frames.dtype == np.uint8
    metrics = video_metrics.video_metrics(frames, sequences, crop)
    assert metrics["detection_rate"] >= 0.95
    assert metrics["landmark_nme"] <= 0.08
    assert metrics["identity_same_rate"] >= 0.95
    # Every style widens the mouth, and dlib sees it in the rendered frames.
    assert metrics["smile_strength_min_claimed"] > 1.05
    assert metrics["smile_strength_min_redetected"] > 1.05


def test_large_frames_interpolate_the_exact_map():
    """Above COORDINATE_GRID pixels the map comes from a lattice: nearly the
    exact per-pixel map, on smiles of the template face at 256 px."""
    size = 256
    neutral = alignment.mean_neutral_shape(size).astype(np.float32)
    targets = _smiles(neutral)[:, ::5].reshape(-1, 68, 2)
    assert size > warp.COORDINATE_GRID

    def maps(grid):
        frames = jax.jit(lambda t: jax.lax.map(lambda q: warp.source_coordinates(neutral, q, size, grid), t))
        return np.asarray(frames(targets))

    error = np.linalg.norm(maps(warp.COORDINATE_GRID) - maps(size), axis=-1)  # (F, S, S)
    assert error.mean(axis=(1, 2)).max() < 0.02 and np.percentile(error, 99, axis=(1, 2)).max() < 0.3  # source pixels


@functools.partial(jax.jit, static_argnums=(2, 3))
def _dense_maps(source_points, targets, size, grid):
    """The exact map by the dense test of every lattice point against every
    triangle, and what it and the row scan choose, for targets (F, 68, 2):
    (maps (F, G, G, 2), dense triangles (F, G*G), scanned triangles (F, G*G),
    the smallest barycentric weight of each point in its scanned triangle
    (F, G*G), whether the target mesh folds (F,))."""

    def one(target_points):
        source, target = warp._meshes(source_points, target_points, size)
        origin, inverse, area = warp._target_frames(target)
        ticks, xs, ys = warp._lattice(size, grid)
        dense = warp._dense_triangles(origin, inverse, xs, ys)
        scanned = warp._scanned_triangles(target, ticks).reshape(-1)
        dx, dy = xs - origin[scanned, 0], ys - origin[scanned, 1]
        l1 = inverse[scanned, 0, 0] * dx + inverse[scanned, 0, 1] * dy
        l2 = inverse[scanned, 1, 0] * dx + inverse[scanned, 1, 1] * dy
        depth = jnp.minimum(1.0 - l1 - l2, jnp.minimum(l1, l2))
        exact = warp._barycentric_map(dense, origin, inverse, source, xs, ys).reshape(grid, grid, 2)
        return exact, dense, scanned, depth, jnp.any(area < warp.MIN_AREA)

    return jax.lax.map(one, targets)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _maps(source_points, targets, size, grid):
    """The lattice map frame by frame (its `lax.cond` a real branch): (F, G, G, 2)."""
    return jax.lax.map(lambda t: warp._lattice_coordinates(source_points, t, size, grid), targets)


@pytest.mark.parametrize("size, grid", [(64, 64), (256, 128)])
def test_row_scan_finds_the_dense_triangles(size, grid):
    """Without folds, the row scan picks the dense test's triangle at every
    lattice point but ties on shared edges, and the map matches the dense one:
    smiles of the template and random small perturbations of it."""
    neutral = alignment.mean_neutral_shape(size).astype(np.float32)
    rng = np.random.default_rng(1)
    jitter = neutral + rng.normal(0.0, 0.2 * size / 64.0, (12, 68, 2)).astype(np.float32)
    targets = np.concatenate([_smiles(neutral)[:, ::4].reshape(-1, 68, 2), jitter])
    exact, dense, scanned, depth, folded = map(np.asarray, _dense_maps(neutral, targets, size, grid))
    assert (~folded).sum() >= 25
    differ = (dense != scanned) & ~folded[:, None]
    assert np.all(np.abs(depth[differ]) < 1e-5)  # on an edge of both triangles
    assert differ.mean() < 0.01
    fast = np.asarray(_maps(neutral, targets, size, grid))
    assert np.abs(fast - exact).max() < 1e-3  # source pixels, folded frames (dense) included


def test_folded_frames_take_the_dense_test():
    """Eyelids crossed (upper below lower): the mesh folds, the row scan would
    choose other triangles there, and the rows near the fold take the dense
    test; also under vmap beside an unfolded frame, as in the translator's
    training step."""
    size = 64
    neutral = alignment.mean_neutral_shape(size).astype(np.float32)
    closed = neutral.copy()
    closed[[37, 38], 1] = neutral[[41, 40], 1] + 1.0  # left eye: upper lid below the lower
    targets = np.stack([closed, neutral])
    exact, dense, scanned, _, folded = map(np.asarray, _dense_maps(neutral, targets, size, size))
    assert folded.tolist() == [True, False]
    assert np.any(dense[0] != scanned[0])
    np.testing.assert_allclose(np.asarray(_maps(neutral, targets, size, size)), exact, atol=1e-4)
    batched = jax.jit(jax.vmap(lambda t: warp.source_coordinates(jnp.asarray(neutral), t, size)))(targets)
    np.testing.assert_allclose(np.asarray(batched), exact, atol=1e-4)
    # One decision for a batch: a fold anywhere sends every frame to the dense test...
    sources = np.stack([neutral, neutral])
    together = jax.jit(warp.batch_source_coordinates, static_argnums=2)
    np.testing.assert_allclose(np.asarray(together(sources, targets, size)), exact, atol=1e-4)
    # ... and a batch without folds takes the row scan, which agrees with it there.
    unfolded = np.asarray(together(sources, targets[[1, 1]], size))
    np.testing.assert_allclose(unfolded, exact[[1, 1]], atol=1e-4)


def test_a_small_fold_is_tested_densely_near_it_and_a_large_one_everywhere():
    """Inner lips crossed by a third of a pixel, as a thin-lipped face's are in
    many frames: only the rows near the fold take the dense test (at most a
    quarter of the lattice). A face folded all over: every point does. Both
    maps equal the dense test's."""
    size, grid = 256, 128
    neutral = alignment.mean_neutral_shape(size).astype(np.float32)
    crossed = neutral.copy()
    crossed[[67, 66, 65], 1] = neutral[[61, 62, 63], 1] - 0.3  # the lower inner lip above the upper
    scrambled = neutral + np.random.default_rng(0).normal(0.0, 6.0, neutral.shape).astype(np.float32)
    targets = np.stack([crossed, scrambled])
    exact, _, _, _, folded = map(np.asarray, _dense_maps(neutral, targets, size, grid))
    assert folded.tolist() == [True, True]

    def rows_near_folds(target_points):
        _, target = warp._meshes(neutral, target_points, size)
        return warp._rows_near_folds(target, warp._target_frames(target)[2], warp._lattice(size, grid)[0]).sum()

    near = [int(rows_near_folds(t)) for t in targets]
    assert 0 < near[0] <= grid // 4 < near[1], near
    np.testing.assert_allclose(np.asarray(_maps(neutral, targets, size, grid)), exact, atol=1e-3)
