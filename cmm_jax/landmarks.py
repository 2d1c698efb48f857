"""The 68-point dlib landmark layout and the one set of geometry helpers.

Every module that touches landmarks uses these functions: one normaliser, one
inter-ocular distance, one similarity fit. Landmarks are stored in crop pixel
coordinates (x right, y down); models see them normalised to [-1, 1].
"""

from __future__ import annotations

import numpy as np

NUM_POINTS = 68
CROP_SIZE = 64

# Index ranges of the dlib 68-point layout ("right" is the subject's right,
# which appears on the image's left).
JAW = tuple(range(0, 17))
RIGHT_BROW = tuple(range(17, 22))
LEFT_BROW = tuple(range(22, 27))
NOSE_BRIDGE = tuple(range(27, 31))
NOSE_BOTTOM = tuple(range(31, 36))
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))

RIGHT_EYE_OUTER = 36
LEFT_EYE_OUTER = 45
NOSE_TIP = 30
MOUTH_RIGHT = 48
MOUTH_LEFT = 54

# Points the alignment matches to the template (outer eye corners, nose tip).
ALIGNMENT_POINTS = (RIGHT_EYE_OUTER, LEFT_EYE_OUTER, NOSE_TIP)

# Polylines for drawing a face sketch: (indices, closed).
CONTOURS = (
    (JAW, False),
    (RIGHT_BROW, False),
    (LEFT_BROW, False),
    (NOSE_BRIDGE, False),
    (NOSE_BOTTOM, False),
    (RIGHT_EYE, True),
    (LEFT_EYE, True),
    (OUTER_LIPS, True),
    (INNER_LIPS, True),
)

# Index of each point's mirror image under a left-right flip of the face.
MIRROR = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nose bottom
    + [45, 44, 43, 42, 47, 46]  # right eye <- left eye
    + [39, 38, 37, 36, 41, 40]  # left eye <- right eye
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


def mirror(points, width: float | None = None) -> np.ndarray:
    """The left-right mirror image of shapes or displacement fields (..., 68, 2),
    relabelled with MIRROR: x -> -x, or x -> width - 1 - x in an image `width`
    pixels wide."""
    flipped = np.asarray(points) * np.array([-1.0, 1.0])
    if width is not None:
        flipped = flipped + np.array([width - 1.0, 0.0])
    return flipped[..., MIRROR, :]


def normalize(points, size: float = CROP_SIZE):
    """Pixel coordinates in a `size` crop -> [-1, 1]. Works on numpy and jax."""
    return points * (2.0 / size) - 1.0


def denormalize(points, size: float = CROP_SIZE):
    """[-1, 1] -> pixel coordinates in a `size` crop."""
    return (points + 1.0) * (size / 2.0)


def inter_ocular_distance(points):
    """Distance between the outer eye corners. points: (..., 68, 2) -> (...)."""
    delta = points[..., RIGHT_EYE_OUTER, :] - points[..., LEFT_EYE_OUTER, :]
    return (delta**2).sum(-1) ** 0.5


def mouth_width_ratio(points) -> np.ndarray:
    """Mouth width (corners 48-54) over inter-ocular distance: (..., 68, 2) -> (...), float64. NaN points give NaN."""
    points = np.asarray(points, np.float64)
    mouth = points[..., MOUTH_LEFT, :] - points[..., MOUTH_RIGHT, :]
    return np.sqrt((mouth**2).sum(-1)) / inter_ocular_distance(points)


def point_error(pred, target):
    """Euclidean error per point. (..., 68, 2) x2 -> (..., 68)."""
    return ((pred - target) ** 2).sum(-1) ** 0.5


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping src points onto dst.

    src, dst: (N, 2). Returns a (2, 3) matrix A with dst ~= src @ A[:, :2].T + A[:, 2].
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / ((src_c**2).sum() / len(src))
    linear = scale * rotation
    return np.concatenate([linear, (dst_mean - linear @ src_mean)[:, None]], axis=1)


def apply_affine(matrix, points):
    """Apply a (2, 3) affine matrix to points (..., 2)."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]], axis=1)
