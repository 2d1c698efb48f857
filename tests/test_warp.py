"""The JAX piecewise-affine renderer against scikit-image, and on a real face."""

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
    for target in targets:
        fast = np.asarray(warp.source_coordinates(neutral, target, size))
        exact = np.asarray(warp.source_coordinates(neutral, target, size, grid=size))
        error = np.linalg.norm(fast - exact, axis=-1)
        assert error.mean() < 0.02 and np.percentile(error, 99) < 0.3  # source pixels
