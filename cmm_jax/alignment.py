"""The aligned-crop template and the geometry around it: alignment, crops, paste-back.

Images are uint8 RGB arrays (H, W, 3); points are (68, 2) pixel coordinates
(x right, y down), the dlib layout of `cmm_jax.landmarks`.

The template (`mean_neutral_shape`) is derived from dlib's own points on a
real photo (scikit-image's astronaut), not typed in, so that the template and
the points dlib produces on real faces share one geometry.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull
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


def paste_back(photo: np.ndarray, crops: np.ndarray, matrix: np.ndarray, crop_points: np.ndarray,
               neutral_points: np.ndarray) -> np.ndarray:
    """Animated crops put back into the photo they were cut from.

    photo: uint8 (H, W, 3); crops: uint8 (T, S, S, 3); matrix: (2, 3) from
    photo pixels to crop pixels; crop_points: (T, 68, 2) and neutral_points
    (68, 2) in crop pixels. Only the face moves: each frame takes the crop
    inside the hull of its own and the neutral points (feathered) and keeps
    the sharp photo elsewhere. Returns uint8 (T, H, W, 3).

    Every frame at once: the photo region's pixels read the crop at the same
    places in every frame (one bilinear table, zero outside the crop), the
    hulls are drawn by Pillow and feathered together, and the pixels that
    some frame's hull reaches are blended in one compiled pass (`_blend`).
    """
    size = crops.shape[1]
    corners = landmarks.apply_affine(landmarks.invert_affine(matrix), np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
    height, width = photo.shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [width, height])
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, [width, height])
    frames = np.repeat(photo[None], len(crops), axis=0)
    if x1 <= x0 or y1 <= y0:
        return frames
    masks = np.stack([_hull_mask(np.concatenate([points, neutral_points]), size) for points in crop_points])
    # Feathered; the blur reaches `radius` pixels, so it runs on the hulls' box and that margin only.
    sigma, truncate = size / 64.0, 4.0
    radius = int(truncate * sigma + 0.5) + 2
    low = np.clip(np.floor(np.minimum(crop_points.min((0, 1)), neutral_points.min(0))).astype(int) - radius, 0, size)
    high = np.clip(np.ceil(np.maximum(crop_points.max((0, 1)), neutral_points.max(0))).astype(int) + radius + 1, 0, size)
    box = (slice(None), slice(low[1], high[1]), slice(low[0], high[0]))
    if (high > low).all():
        masks[box] = ndimage.gaussian_filter(masks[box], sigma=(0, sigma, sigma), mode="nearest", truncate=truncate)
    # Zero beyond the crop's edge, as a warp with a constant border reads it.
    crops = np.pad(crops, ((0, 0), (1, 1), (1, 1), (0, 0)))
    masks = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    ys, xs = np.mgrid[y0:y1, x0:x1]
    source = landmarks.apply_affine(matrix, np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)) + 1.0
    source = np.clip(source, 0.0, size + 1.0)
    left = np.minimum(np.floor(source).astype(np.int64), size)  # (P, 2): x, y of the corner below
    fraction = (source - left).astype(np.float32)
    row = size + 2
    corner = left[:, 1] * row + left[:, 0]

    # A pixel some frame's feathered hull reaches is one the hulls' union reaches
    # (masks >= 0); elsewhere the photo stays as it is.
    union = _read_flat(masks.max(0).reshape(1, -1), corner, fraction[:, 0], fraction[:, 1], row)[0]  # (P,)
    inside = np.nonzero(union > 0)[0]
    count = len(inside)
    if not count:
        return frames
    # Padded with copies of the last pixel to a size from a short list, so that few programs are compiled.
    inside = np.pad(inside, (0, _padded_size(count) - count), mode="edge")
    pixels = (ys.ravel()[inside], xs.ravel()[inside])
    blended = _blend(frames[:, pixels[0], pixels[1]], crops.reshape(len(crops), -1, 3),
                     masks.reshape(len(crops), -1, 1), corner[inside].astype(np.int32), fraction[inside], row)
    frames[:, pixels[0][:count], pixels[1][:count]] = np.asarray(blended)[:, :count]
    return frames


def _padded_size(count: int) -> int:
    """count rounded up to a multiple of an eighth of the power of two above it (at least 4096): at most 1/8 more."""
    step = max(4096, 1 << max(0, (count - 1).bit_length() - 3))
    return -(-count // step) * step


def _read_flat(flat, corner, wx, wy, row: int):
    """Bilinear reads of flat images (T, R, ...) (numpy or JAX), each `row`
    pixels wide: at the flat index corner (P,) of the pixel below and left,
    wx, wy past it (broadcasting against (P, ...)). -> float32 (T, P, ...);
    gathered, then made float (uint8 images: a fraction of them)."""
    def at(offset):
        return flat[:, corner + offset].astype(np.float32)
    return (at(0) * (1 - wx) + at(1) * wx) * (1 - wy) + (at(row) * (1 - wx) + at(row + 1) * wx) * wy


@functools.partial(jax.jit, static_argnames="row")
def _blend(region, crops, masks, corner, fraction, row: int):
    """The crops put over the photo's pixels, through the feathered masks, in
    one fused pass (numpy made a temporary array per operation: `paste_back`
    of 32 frames at 256 px took 74 ms of CPU, now 54 ms). The same numbers
    as numpy's to within one grey level (XLA may fuse a multiply and an add).

    region: uint8 (T, P, 3), the photo at the pixels; crops uint8 (T, R, 3) and
    masks float32 (T, R, 1): flat (S + 2) x (S + 2) images (`row` a side);
    corner int32 (P,): the flat index of the crop pixel below and left of
    where each pixel reads the crop; fraction float32 (P, 2): how far past
    it, as x, y. -> uint8 (T, P, 3)."""
    wx, wy = fraction[:, :1], fraction[:, 1:]
    alpha, placed = (_read_flat(flat, corner, wx, wy, row) for flat in (masks, crops))
    return jnp.clip(jnp.round(alpha * placed + (1 - alpha) * region.astype(jnp.float32)), 0, 255).astype(jnp.uint8)


def _hull_mask(points: np.ndarray, size: int) -> np.ndarray:
    """float32 (size, size): 1 inside the convex hull of the points (pixels), else 0."""
    hull = points[ConvexHull(points).vertices]
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in hull.tolist()], fill=1)
    return np.asarray(image, np.float32)
