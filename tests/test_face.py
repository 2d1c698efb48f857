"""dlib detection, the aligned-crop template and alignment, on scikit-image's astronaut."""

import imageio.v3 as iio
import numpy as np
import pytest
from skimage import data

from cmm_jax import alignment, compositing, face, landmarks


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def astronaut_points(astronaut):
    return face.detect_landmarks(astronaut)


def test_model_path_finds_the_shape_predictor():
    assert face.model_path(face.SHAPE_PREDICTOR_FILE).endswith("shape_predictor_68_face_landmarks.dat")
    with pytest.raises(FileNotFoundError):
        face.model_path("no_such_model.dat")


def test_detects_one_face_with_68_points_on_it(astronaut, astronaut_points):
    boxes = face.detect_faces(astronaut)
    assert len(boxes) == 1
    left, top, right, bottom = boxes[0]
    assert astronaut_points.shape == (68, 2) and astronaut_points.dtype == np.float32
    # dlib's box is tight: the chin and jaw ends may stick out a little.
    margin = 0.2 * (right - left)
    assert np.all(astronaut_points[:, 0] >= left - margin) and np.all(astronaut_points[:, 0] <= right + margin)
    assert np.all(astronaut_points[:, 1] >= top - margin) and np.all(astronaut_points[:, 1] <= bottom + margin)
    # Given the box, the same points.
    np.testing.assert_array_equal(face.detect_landmarks(astronaut, boxes[0]), astronaut_points)


def test_a_weak_face_like_pattern_is_not_taken_for_the_face(astronaut, tmp_path):
    # README's first sampling command saves the astronaut as a JPEG. In it dlib
    # also finds the mission patch on her suit, larger than her face and with a
    # score near its threshold; the face chosen must be hers.
    path = tmp_path / "astronaut.jpg"
    iio.imwrite(path, astronaut)
    photo = iio.imread(path)
    rects, scores, _ = face.detector().run(photo, 0, 0.0)
    assert len(rects) == 2 and min(scores) < face.CONFIDENT_SHARE * max(scores)
    left, top, right, bottom = face.detect_faces(photo)[0]
    fit = face.find_face(photo)
    eyes = fit.points[36:48]
    assert fit.num_faces == 1
    assert np.all((eyes >= [left, top]) & (eyes <= [right, bottom]))
    assert top < astronaut.shape[0] // 2  # her face, not the patch on her chest


def test_no_face_raises(astronaut):
    blank = np.full((200, 200, 3), 128, np.uint8)
    assert face.detect_faces(blank) == []
    with pytest.raises(face.NoFaceError):
        face.detect_landmarks(blank)
    with pytest.raises(ValueError):
        face.detect_landmarks(astronaut.astype(np.float32))


def test_template_placement_and_symmetry():
    size = 64
    template = alignment.mean_neutral_shape(size)
    assert template.shape == (68, 2) and template.dtype == np.float32
    assert landmarks.inter_ocular_distance(template) == pytest.approx(0.40 * size, rel=1e-5)
    # Eye line horizontal; box centred horizontally, its centre at 0.55 * size.
    assert template[36, 1] == pytest.approx(template[45, 1], abs=1e-4)
    box_center = 0.5 * (template.min(0) + template.max(0))
    np.testing.assert_allclose(box_center, [0.5 * size, 0.55 * size], atol=1e-4)
    assert template.min() > 0 and template.max() < size
    # Symmetric under a left-right flip.
    mirrored = (template * [-1, 1] + [size, 0])[landmarks.MIRROR]
    np.testing.assert_allclose(mirrored, template, atol=1e-3)
    # Neutral mouth: width as documented, corners not above the lip line.
    mouth_width = template[54, 0] - template[48, 0]
    assert mouth_width / landmarks.inter_ocular_distance(template) == pytest.approx(alignment.NEUTRAL_MOUTH_WIDTH_RATIO)
    assert template[48, 1] >= 0.5 * (template[62, 1] + template[66, 1]) - 1e-3
    # Other sizes are the same shape, scaled.
    np.testing.assert_allclose(alignment.mean_neutral_shape(128), 2 * template, atol=1e-3)


def test_alignment_maps_alignment_points_onto_template(astronaut_points):
    matrix = alignment.alignment_matrix(astronaut_points)
    aligned = landmarks.apply_affine(matrix, astronaut_points)
    index = list(landmarks.ALIGNMENT_POINTS)
    assert np.abs(aligned[index] - alignment.mean_neutral_shape()[index]).max() < 1.0
    # Inverse maps back.
    back = landmarks.apply_affine(landmarks.invert_affine(matrix), aligned)
    np.testing.assert_allclose(back, astronaut_points, atol=1e-3)


def test_warped_crop_shows_the_face_where_the_template_says(astronaut, astronaut_points):
    size = 256  # large enough for dlib to find the face again in the crop
    crop = alignment.warp_to_crop(astronaut, alignment.alignment_matrix(astronaut_points, size), size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    points_in_crop = face.detect_landmarks(crop)
    expected = landmarks.apply_affine(alignment.alignment_matrix(astronaut_points, size), astronaut_points)
    error = landmarks.point_error(points_in_crop, expected).mean()
    assert error < 0.05 * landmarks.inter_ocular_distance(expected)
    small = alignment.warp_to_crop(astronaut, alignment.alignment_matrix(astronaut_points), 64)
    assert small.shape == (64, 64, 3) and small.std() > 10


def test_paste_back_changes_the_face_only(astronaut, astronaut_points):
    size = 128
    matrix = alignment.alignment_matrix(astronaut_points, size)
    crop = alignment.warp_to_crop(astronaut, matrix, size)
    points = landmarks.apply_affine(matrix, astronaut_points).astype(np.float32)
    crops = np.stack([crop, 255 - crop])  # the face as it is, and inverted
    out = compositing.paste_back(astronaut, crops, matrix, np.stack([points, points]), points)
    assert out.shape == (2, *astronaut.shape) and out.dtype == np.uint8
    # Beyond the face's points and the feather (size / 64 * 4 crop pixels, ~3 photo pixels here) nothing moves.
    low, high = astronaut_points.min(0).astype(int) - 12, astronaut_points.max(0).astype(int) + 12
    outside = np.ones(astronaut.shape[:2], bool)
    outside[low[1]:high[1], low[0]:high[0]] = False
    np.testing.assert_array_equal(out[:, outside], np.broadcast_to(astronaut[outside], (2, outside.sum(), 3)))
    # Inside, the face comes back from its own crop nearly as it was, and inverted where the crop is.
    nose_x, nose_y = astronaut_points[30].astype(int)
    patch = (slice(nose_y - 5, nose_y + 5), slice(nose_x - 5, nose_x + 5))
    photo = astronaut[patch].astype(int)
    assert np.abs(out[0][patch].astype(int) - photo).mean() < 6
    assert np.abs(out[1][patch].astype(int) - (255 - photo)).mean() < 6
