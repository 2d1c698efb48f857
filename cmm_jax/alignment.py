"""The aligned-crop template and the geometry around it: alignment and crops.

Images are uint8 RGB arrays (H, W, 3); points are (68, 2) pixel coordinates
(x right, y down), the dlib layout of `cmm_jax.landmarks`.

The template (`mean_neutral_shape`) is derived from dlib's own points on a
real photo (scikit-image's astronaut), not typed in, so that the template and
the points dlib produces on real faces share one geometry.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image
from skimage import filters, transform

from cmm_jax import face, files, landmarks

# Placement of the template in a `size` crop, as fractions of `size`.
TEMPLATE_EYE_DISTANCE = 0.40  # outer eye corners 36-45
TEMPLATE_BOX_CENTER_Y = 0.55  # centre of the 68-point bounding box; room above brows

# Neutral mouth of the template. Mouth width (48-54) over outer-eye-corner
# distance (36-45) is 0.65 in OpenFace's mean dlib shape (an average over many
# real, mostly neutral faces); the astronaut smiles slightly (0.73).
NEUTRAL_MOUTH_WIDTH_RATIO = 0.65
# Inner-lip gap (62-66) of closed lips, in units of the outer-eye-corner distance.
NEUTRAL_INNER_LIP_GAP = 0.02


def _neutralise_mouth(points: np.ndarray) -> np.ndarray:
    """Undo a slight closed-lip smile on an upright, symmetric shape (68, 2).

    A smile pulls the lip corners out and up; we move them (and, with falling
    weights, their neighbours) back in x until the mouth width is
    NEUTRAL_MOUTH_WIDTH_RATIO of the outer-eye-corner distance, and down to the
    level of the lip line (the midpoint of the inner lips). The inner lips are
    then closed to a small gap, so that "lips part" starts from closed lips.
    """
    points = points.astype(np.float64).copy()
    eye_distance = landmarks.inter_ocular_distance(points)
    mouth = np.array(landmarks.OUTER_LIPS + landmarks.INNER_LIPS)
    center_x = points[mouth, 0].mean()
    half_width = 0.5 * (points[54, 0] - points[48, 0])
    target_half_width = 0.5 * NEUTRAL_MOUTH_WIDTH_RATIO * eye_distance
    # Horizontal: a smooth radial squeeze about the mouth centre, strongest at
    # the corners (weight ~ (|dx| / half_width)^2), so the lip centre stays.
    dx = points[mouth, 0] - center_x
    weight = np.clip(np.abs(dx) / half_width, 0.0, 1.0) ** 2
    shrink = target_half_width / half_width - 1.0
    points[mouth, 0] += dx * shrink * weight
    # Vertical: corners (and their neighbours, with the same weights) down to
    # the lip line.
    lip_line_y = 0.5 * (points[62, 1] + points[66, 1])
    corner_drop = lip_line_y - 0.5 * (points[48, 1] + points[54, 1])
    points[mouth, 1] += max(corner_drop, 0.0) * weight
    # Close the inner lips about their midline.
    gap_target = NEUTRAL_INNER_LIP_GAP * eye_distance
    for upper, lower in ((61, 67), (62, 66), (63, 65)):
        mid = 0.5 * (points[upper, 1] + points[lower, 1])
        gap = points[lower, 1] - points[upper, 1]
        if gap > gap_target:
            points[upper, 1] = mid - 0.5 * gap_target
            points[lower, 1] = mid + 0.5 * gap_target
    return points


@functools.cache
def _neutral_shape_unit() -> np.ndarray:
    """Symmetric neutral shape with unit outer-eye-corner distance. (68, 2).

    Eye line horizontal, eye-corner midpoint at the origin.
    """
    photo = files.astronaut()
    points = face.detect_landmarks(photo).astype(np.float64)
    # dlib on the flipped photo, flipped back: its errors are not mirror images
    # of the first fit's, so the average is a better, more symmetric estimate.
    flipped = landmarks.mirror(face.detect_landmarks(photo[:, ::-1]).astype(np.float64), photo.shape[1])
    flipped = landmarks.apply_affine(landmarks.fit_similarity(flipped, points), flipped)
    shape = 0.5 * (points + flipped)

    # Upright: eye line horizontal, eye distance 1, eye midpoint at the origin.
    eye_vector = shape[landmarks.LEFT_EYE_OUTER] - shape[landmarks.RIGHT_EYE_OUTER]
    angle = np.arctan2(eye_vector[1], eye_vector[0])
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    eye_mid = 0.5 * (shape[landmarks.LEFT_EYE_OUTER] + shape[landmarks.RIGHT_EYE_OUTER])
    shape = (shape - eye_mid) @ rotation.T / np.linalg.norm(eye_vector)

    # Exact symmetry: average with the mirror image about the vertical axis
    # through the mean point.
    shape[:, 0] -= shape[:, 0].mean()
    shape = 0.5 * (shape + landmarks.mirror(shape))
    shape = _neutralise_mouth(shape)
    eye_mid = 0.5 * (shape[landmarks.LEFT_EYE_OUTER] + shape[landmarks.RIGHT_EYE_OUTER])
    return shape - eye_mid


@functools.cache
def _mean_neutral_shape_cached(size: int) -> np.ndarray:
    shape = _neutral_shape_unit() * (TEMPLATE_EYE_DISTANCE * size)
    box_center = 0.5 * (shape.min(0) + shape.max(0))
    shape = shape - box_center + np.array([0.5 * size, TEMPLATE_BOX_CENTER_Y * size])
    shape = shape.astype(np.float32)
    shape.setflags(write=False)  # cached and shared: nobody may edit it
    return shape


def mean_neutral_shape(size: int = landmarks.CROP_SIZE) -> np.ndarray:
    """The template of the aligned `size` x `size` crop, float32 (68, 2), read-only.

    dlib's points on scikit-image's astronaut and on its mirror image, averaged,
    made exactly symmetric, mouth neutralised (`_neutralise_mouth`), eye line
    horizontal, outer eye corners TEMPLATE_EYE_DISTANCE * size apart, the
    68-point box centred horizontally with its centre at
    TEMPLATE_BOX_CENTER_Y * size.
    """
    return _mean_neutral_shape_cached(int(size))


def alignment_matrix(points: np.ndarray, size: int = landmarks.CROP_SIZE) -> np.ndarray:
    """Similarity (2, 3) that maps a face's points into the aligned `size` crop.

    points: (68, 2) in image pixels. Fits the outer eye corners and the nose
    tip (ALIGNMENT_POINTS) to the template's.
    """
    index = list(landmarks.ALIGNMENT_POINTS)
    return landmarks.fit_similarity(np.asarray(points)[index], mean_neutral_shape(size)[index])


# Crops that shrink the image this much or more start with block means (see warp_to_crop).
BLOCK_MEAN_FROM = 4.0


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, size: int = landmarks.CROP_SIZE) -> np.ndarray:
    """Aligned crop uint8 (size, size, 3) of image uint8 (H, W, 3).

    matrix: (2, 3) from image pixels to crop pixels (e.g. `alignment_matrix`).
    When the crop shrinks the face, the image region under the crop is
    low-pass filtered first with the blur of skimage's
    `rescale(anti_aliasing=True)`: from BLOCK_MEAN_FROM x on, averaged over
    k x k blocks (k the shrink factor rounded down; PIL's `reduce`, fast on
    large video frames), then a Gaussian for the rest of the blur.
    """
    image = np.asarray(image)
    matrix = np.asarray(matrix, np.float64)
    inverse = landmarks.invert_affine(matrix)
    shrink = 1.0 / np.sqrt(abs(np.linalg.det(matrix[:, :2])))  # image px per crop px
    block = int(np.floor(shrink)) if shrink >= BLOCK_MEAN_FROM else 1
    # The blur of skimage's anti-aliasing (sigma (shrink - 1) / 2 image px) in
    # two steps: k x k block means (variance (k^2 - 1) / 12), then a Gaussian
    # with the variance left, in block pixels.
    wanted = max(0.0, (shrink - 1.0) / 2.0) ** 2
    sigma = np.sqrt(max(0.0, wanted - (block**2 - 1) / 12.0)) / block

    # Work on the image region under the crop (plus a filter margin), cut to whole blocks.
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
    image_corners = landmarks.apply_affine(inverse, corners)
    margin = block * (int(np.ceil(3 * sigma)) + 2)
    height, width = image.shape[:2]
    x0 = int(np.clip(np.floor(image_corners[:, 0].min()) - margin, 0, width - 1))
    y0 = int(np.clip(np.floor(image_corners[:, 1].min()) - margin, 0, height - 1))
    x1 = int(np.clip(np.ceil(image_corners[:, 0].max()) + margin + 1, x0 + 1, width))
    y1 = int(np.clip(np.ceil(image_corners[:, 1].max()) + margin + 1, y0 + 1, height))
    region = image[y0:y1, x0:x1]
    if block > 1:
        region = np.asarray(Image.fromarray(np.ascontiguousarray(region)).reduce(block))
    region = region.astype(np.float64)
    if sigma > 0:
        region = filters.gaussian(region, sigma=sigma, channel_axis=-1, preserve_range=True)

    # Crop pixel -> image pixel -> block pixel (block pixel j covers image
    # pixels [j * block, (j + 1) * block), its centre is j * block + (block - 1) / 2).
    to_block = np.array([[1.0 / block, 0.0, -x0 / block - (block - 1) / (2.0 * block)],
                         [0.0, 1.0 / block, -y0 / block - (block - 1) / (2.0 * block)],
                         [0.0, 0.0, 1.0]])
    crop_to_region = to_block @ np.vstack([inverse, [0.0, 0.0, 1.0]])
    crop = transform.warp(
        region,
        transform.AffineTransform(matrix=crop_to_region),
        output_shape=(size, size),
        order=1,
        mode="edge",
        preserve_range=True,
    )
    return np.clip(np.round(crop), 0, 255).astype(np.uint8)
