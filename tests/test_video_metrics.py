"""Video metrics with dlib on an aligned crop of scikit-image's astronaut, and
the FVD network (I3D) on random weights at a small image size."""

import numpy as np
import pytest
import scipy.linalg
from flax import nnx
from skimage import data

from cmm_jax import alignment, face, landmarks, video_metrics
from cmm_jax import video_features

CROP = 64


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def crop_and_points(astronaut):
    """A 64 x 64 aligned crop of the astronaut and dlib's full-photo points mapped into it."""
    points = face.detect_landmarks(astronaut)
    matrix = alignment.alignment_matrix(points, CROP)
    crop = alignment.warp_to_crop(astronaut, matrix, CROP)
    return crop, landmarks.apply_affine(matrix, points).astype(np.float32)


def _blank():
    return np.full((CROP, CROP, 3), 128, np.uint8)


def test_upsampling_keeps_pixel_centres():
    assert video_metrics.upsampling_factor((64, 80, 3)) == 4
    assert video_metrics.upsampling_factor((100, 100, 3)) == 3
    assert video_metrics.upsampling_factor((512, 300, 3)) == 1
    # A single bright pixel: the centroid of its upsampled blob maps back onto it.
    frame = np.zeros((CROP, CROP, 3), np.uint8)
    frame[20, 10] = 255
    big, factor = video_metrics.upsample(frame)
    assert big.shape == (CROP * factor, CROP * factor, 3) and big.dtype == np.uint8
    weight = big[..., 0].astype(np.float64)
    ys, xs = np.indices(weight.shape)
    centroid = np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()
    np.testing.assert_allclose(video_metrics.to_frame_pixels(centroid, factor), [10, 20], atol=1e-6)
    np.testing.assert_allclose(video_metrics.to_upsampled_pixels(np.array([10.0, 20.0]), factor), centroid, atol=1e-6)


def test_redetect_finds_the_face_in_a_small_crop(crop_and_points):
    crop, points = crop_and_points
    found, detected = video_metrics.redetect(np.stack([crop, _blank()]))
    np.testing.assert_array_equal(found, [True, False])
    assert detected.shape == (2, 68, 2) and detected.dtype == np.float32
    assert np.isnan(detected[1]).all()
    nme = landmarks.point_error(detected[0], points).mean() / landmarks.inter_ocular_distance(points)
    assert nme < 0.05


def test_landmark_fidelity_measures_against_the_claimed_points(crop_and_points):
    crop, points = crop_and_points
    frames = np.stack([crop, _blank(), crop])
    shift = 3.0
    claimed = np.stack([points, points, points + [shift, 0.0]])
    result = video_metrics.landmark_fidelity(frames, claimed)
    assert result["detection_rate"] == pytest.approx(2 / 3)
    per_frame = result["nme_per_frame"]
    assert per_frame[0] < 0.05 and np.isnan(per_frame[1])
    # Claimed points 3 px off: the error is about 3 px over the eye distance.
    assert per_frame[2] == pytest.approx(shift / landmarks.inter_ocular_distance(points), abs=0.03)
    assert result["nme"] == pytest.approx(np.nanmean(per_frame))


def test_identity_distance_same_person_and_missing_faces(astronaut, crop_and_points):
    crop, points = crop_and_points
    result = video_metrics.identity_distance(np.stack([crop, _blank()]), astronaut)
    distance = result["distance_per_frame"]
    assert distance[0] < video_metrics.SAME_PERSON_DISTANCE and np.isnan(distance[1])
    assert result["identity_distance"] == pytest.approx(distance[0])
    assert result["identity_same_rate"] == 0.5
    # Noise aligned by the astronaut's points is not the astronaut.
    reference = video_metrics.embed(astronaut)
    noise = np.random.default_rng(0).integers(0, 256, (CROP, CROP, 3), dtype=np.uint8)
    assert np.linalg.norm(video_metrics.embed(noise, points) - reference) > video_metrics.SAME_PERSON_DISTANCE
    assert video_metrics.embed(_blank()) is None
    with pytest.raises(face.NoFaceError):
        video_metrics.identity_distance(crop[None], _blank())


def test_smile_strength_is_the_mouth_widening():
    neutral = alignment.mean_neutral_shape(CROP).astype(np.float64)
    sequence = np.repeat(neutral[None], 9, axis=0)
    smiling = sequence.copy()
    half_width = 0.5 * (neutral[landmarks.MOUTH_LEFT, 0] - neutral[landmarks.MOUTH_RIGHT, 0])
    smiling[6:, landmarks.MOUTH_LEFT, 0] += 0.2 * half_width
    smiling[6:, landmarks.MOUTH_RIGHT, 0] -= 0.2 * half_width
    # For the last-third window, widening before the last third does not count.
    wide_early = smiling.copy()
    wide_early[3:6, landmarks.MOUTH_LEFT, 0] += 5.0
    strength = video_metrics.smile_strength(np.stack([wide_early, sequence]), "last_third")
    np.testing.assert_allclose(strength, [1.2, 1.0], rtol=1e-12)
    # The apex window: the widest quarter of frames 1..T-1 (2 of 8 here), wherever they are.
    rises_and_falls = sequence.copy()
    rises_and_falls[2:4] = smiling[-1]
    strength = video_metrics.smile_strength(np.stack([smiling, rises_and_falls, sequence]))
    np.testing.assert_allclose(strength, [1.2, 1.2, 1.0], rtol=1e-12)


def test_video_metrics_of_two_videos(astronaut, crop_and_points):
    crop, points = crop_and_points
    # Video 1 loses the face in its last frame; its claimed points are 1 px right.
    frames = np.stack([np.stack([crop, crop, crop]), np.stack([crop, crop, _blank()])])
    claimed = np.stack([np.repeat(points[None], 3, 0), np.repeat(points[None] + [1.0, 0.0], 3, 0)])
    result = video_metrics.video_metrics(frames, claimed, astronaut)
    assert set(result) == {
        "detection_rate", "landmark_nme", "identity_distance", "identity_same_rate",
        "smile_strength_min_redetected", "smile_strength_min_claimed", "apd_claimed",
        "smile_strength_last_third_min_redetected",
    }
    assert all(isinstance(v, float) for v in result.values())
    assert result["detection_rate"] == pytest.approx(5 / 6)
    assert result["identity_same_rate"] == pytest.approx(5 / 6)
    assert result["identity_distance"] < video_metrics.SAME_PERSON_DISTANCE
    assert result["landmark_nme"] < 0.1
    assert np.isnan(result["smile_strength_min_redetected"])
    assert result["smile_strength_min_claimed"] == pytest.approx(1.0)
    assert result["apd_claimed"] == pytest.approx(1.0 / landmarks.inter_ocular_distance(points), rel=1e-5)


# --- I3D / FVD ---

IMAGE_SIZE = 64  # 224 in use; small here to run fast on CPU


def _abstract_i3d():
    return nnx.eval_shape(lambda: video_features.I3D(IMAGE_SIZE, rngs=nnx.Rngs(0)))


def _random_weights(path, seed):
    """A weights file of random values for every variable of the model, batch statistics included.

    Written with numpy: initialising the model with jax.random compiles one
    kernel per shape (about 30 s on CPU).
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, variable in nnx.to_flat_state(nnx.state(_abstract_i3d())):
        name = "/".join(map(str, key))
        shape = tuple(variable.shape)
        if name.endswith("kernel"):  # He initialisation keeps activations O(1)
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif name.endswith(("scale", "var")):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, mean
            value = rng.normal(0.0, 0.1, shape)
        arrays[name] = value.astype(np.float32)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture(scope="module")
def videos():
    return np.random.default_rng(0).integers(0, 256, (3, 9, 32, 32, 3), dtype=np.uint8)


def test_i3d_features_and_weights_round_trip(tmp_path, videos):
    first = str(tmp_path / "first.npz")
    weights = _random_weights(first, seed=0)
    # Three videos in batches of two: the last batch is padded.
    logits = video_features.video_features(videos, first, batch_size=2, image_size=IMAGE_SIZE)
    assert logits.shape == (3, video_features.NUM_CLASSES) and np.isfinite(logits).all()
    assert logits.std() > 1e-3 and not np.allclose(logits[0], logits[1])

    pooled = video_features.video_features(videos, first, batch_size=2, kind="pool", image_size=IMAGE_SIZE)
    assert pooled.shape == (3, video_features.POOL_FEATURES)
    np.testing.assert_allclose(
        logits, pooled @ weights["logits/kernel"] + weights["logits/bias"], rtol=1e-4, atol=1e-4
    )

    model = _abstract_i3d()
    video_features.load_weights(model, first)
    saved = str(tmp_path / "saved.npz")
    video_features.save_weights(model, saved)
    reloaded = video_features.video_features(videos, saved, batch_size=2, image_size=IMAGE_SIZE)
    np.testing.assert_array_equal(reloaded, logits)

    other = str(tmp_path / "other.npz")
    _random_weights(other, seed=1)
    assert not np.allclose(video_features.video_features(videos, other, 2, image_size=IMAGE_SIZE), logits)


def test_i3d_needs_nine_frames(tmp_path, videos):
    path = str(tmp_path / "weights.npz")
    _random_weights(path, seed=0)
    with pytest.raises(ValueError, match="9 frames"):
        video_features.video_features(videos[:, :8], path, image_size=IMAGE_SIZE)


def test_load_weights_names_the_bad_key(tmp_path):
    good = str(tmp_path / "good.npz")
    weights = _random_weights(good, seed=0)
    key = "mixed_4c/branch_1b/conv/kernel"

    missing = dict(weights)
    del missing[key]
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match=f"missing weight '{key}'"):
        video_features.load_weights(_abstract_i3d(), str(tmp_path / "missing.npz"))

    misshapen = dict(weights, **{key: weights[key][..., :-1]})
    np.savez(tmp_path / "misshapen.npz", **misshapen)
    with pytest.raises(ValueError, match=f"'{key}' has shape"):
        video_features.load_weights(_abstract_i3d(), str(tmp_path / "misshapen.npz"))

    extra = dict(weights, **{"mixed_4c/gamma": np.ones(3, np.float32)})
    np.savez(tmp_path / "extra.npz", **extra)
    with pytest.raises(ValueError, match="unexpected weight 'mixed_4c/gamma'"):
        video_features.load_weights(_abstract_i3d(), str(tmp_path / "extra.npz"))


def test_fvd_is_the_frechet_distance():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 6))
    generated = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mean_real, mean_generated = real.mean(0), generated.mean(0)
    cov_real, cov_generated = np.cov(real, rowvar=False), np.cov(generated, rowvar=False)
    expected = ((mean_real - mean_generated) ** 2).sum() + np.trace(
        cov_real + cov_generated - 2.0 * scipy.linalg.sqrtm(cov_real @ cov_generated).real
    )
    assert video_features.fvd(real, generated) == pytest.approx(expected, rel=1e-4)
    assert video_features.fvd(real, real) == pytest.approx(0.0, abs=1e-8)
