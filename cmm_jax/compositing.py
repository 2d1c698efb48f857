"""Animated crops put back into the photo they were cut from (`paste_back`):
the face moves inside the photo, the rest of the photo stays sharp.

Apart from `cmm_jax.alignment` because its blend is compiled by JAX, which
alignment's other users (video preprocessing, in worker processes) need not load.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull

from cmm_jax import landmarks


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
    corners = landmarks.apply_affine(landmarks.invert_affine(matrix),
                                     np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
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
    high = np.clip(np.ceil(np.maximum(crop_points.max((0, 1)), neutral_points.max(0))).astype(int) + radius + 1,
                   0, size)
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
